"""What every policy's planning round shares: capacities as moves accumulate, candidates,
targets and shedding for opted-in events. Pure and vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.feasibility import BoolArray, FloatArray
from gateway.planner.arrays import FleetArrays, IntArray, headroom_kw, prefix_min, windows_s
from gateway.planner.params import PolicyParams, move_cost

Row = tuple[int, int, float, float, float, bool]
"""(candidate, target site, migration_s, energy_kwh, window_s, shed): one chosen move."""
EPS = 1e-9


@dataclass
class RoundState:
    """Capacities while a round's moves accumulate."""

    gpus_free: IntArray
    it_power_kw: FloatArray
    prefix: FloatArray
    moved: BoolArray

    @classmethod
    def of(cls, fleet: FleetArrays) -> RoundState:
        it = fleet.it_power_kw.astype(np.float64, copy=True)
        return cls(
            gpus_free=fleet.gpus_free.astype(np.int64, copy=True),
            it_power_kw=it,
            prefix=prefix_min(headroom_kw(fleet.supply_kw, fleet.pue, it)),
            moved=np.zeros(fleet.n_jobs, dtype=np.bool_),
        )

    def move(self, fleet: FleetArrays, job: int, target: int) -> None:
        source = int(fleet.job_site[job])
        power = float(fleet.job_power_kw[job])
        gpus = int(fleet.job_gpus[job])
        self.gpus_free[target] -= gpus
        self.gpus_free[source] += gpus
        self.it_power_kw[target] += power
        self.it_power_kw[source] -= power
        for site in (source, target):
            row = fleet.supply_kw[site] / fleet.pue[site] - self.it_power_kw[site]
            self.prefix[site] = np.minimum.accumulate(row)
        self.moved[job] = True

    def fits(self, fleet: FleetArrays, jobs: IntArray, targets: IntArray) -> BoolArray:
        """(len(jobs), len(targets)): room for each job at each target."""
        room_kw = fleet.it_power_max_kw[targets] - self.it_power_kw[targets]
        result: BoolArray = (fleet.job_gpus[jobs][:, None] <= self.gpus_free[targets][None, :]) & (
            fleet.job_power_kw[jobs][:, None] <= room_kw[None, :] + EPS
        )
        return result


def deficit(fleet: FleetArrays, it_power_kw: FloatArray) -> BoolArray:
    result: BoolArray = fleet.online & (it_power_kw * fleet.pue > fleet.supply_kw[:, 0] + EPS)
    return result


def top_per_site(fleet: FleetArrays, mask: BoolArray, k: int) -> IntArray:
    """Indices of the jobs in ``mask``, at most ``k`` per site, largest power first."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return idx.astype(np.int64)
    order = np.lexsort((-fleet.job_power_kw[idx], fleet.job_site[idx]))
    idx = idx[order]
    sites = fleet.job_site[idx]
    rank = np.arange(idx.size) - np.searchsorted(sites, sites, side="left")
    result: IntArray = idx[rank < k].astype(np.int64)
    return result


def targets_now(fleet: FleetArrays, state: RoundState, k: int) -> IntArray:
    """Sites that may take jobs now, the ``k`` with the most green headroom first."""
    now = state.prefix[:, 0]
    ok = fleet.online & ~fleet.blocked & (state.gpus_free > 0) & (now > EPS)
    idx = np.flatnonzero(ok)
    if idx.size > k:
        idx = idx[np.argsort(-now[idx], kind="stable")[:k]]
    return idx.astype(np.int64)


def bandwidth(fleet: FleetArrays, jobs: IntArray, targets: IntArray) -> FloatArray:
    result: FloatArray = np.minimum(
        fleet.bandwidth_gbps[fleet.job_site[jobs]][:, None],
        fleet.bandwidth_gbps[targets][None, :],
    )
    return result


def window_matrix(
    fleet: FleetArrays, state: RoundState, jobs: IntArray, targets: IntArray
) -> FloatArray:
    out = np.empty((jobs.size, targets.size), dtype=np.float64)
    power = fleet.job_power_kw[jobs]
    for j, t in enumerate(targets):
        out[:, j] = windows_s(state.prefix[t], power, fleet.step_s)
    return out


def choose_shed_jobs(
    fleet: FleetArrays, jobs: IntArray, shed_it_kw: float, params: PolicyParams, budget: int
) -> IntArray:
    """The jobs to move so that ``shed_it_kw`` of IT load leaves, cheapest in migration time.

    Two candidates: the quickest single job that covers the shed alone, and the quickest-first
    set (in order of migration time until covered, at most ``budget``). The one with the smaller
    total migration time wins; when neither covers, the largest jobs go first.
    """
    if shed_it_kw <= 0 or budget <= 0 or jobs.size == 0:
        return np.zeros(0, dtype=np.int64)
    times = move_cost(
        fleet.job_checkpoint_gb[jobs],
        fleet.job_gpus[jobs],
        fleet.bandwidth_gbps[fleet.job_site[jobs]],
        params,
    ).migration_s
    power = fleet.net_it_kw(jobs)
    order = np.argsort(times, kind="stable")
    covering = order[power[order] >= shed_it_kw]
    cumulative = np.cumsum(power[order][:budget])
    options: list[IntArray] = []
    if covering.size:
        options.append(covering[:1])
    if cumulative.size and cumulative[-1] >= shed_it_kw:
        options.append(order[: int(np.searchsorted(cumulative, shed_it_kw)) + 1])
    if not options:
        largest: IntArray = jobs[np.argsort(-power, kind="stable")[:budget]]
        return largest
    best = min(options, key=lambda chosen: (float(times[chosen].sum()), chosen.size))
    result: IntArray = jobs[best]
    return result


def event_moves(fleet: FleetArrays, params: PolicyParams, state: RoundState) -> list[Row]:
    """The moves opted-in events need now: sheds, then absorbs whose jobs must leave now to
    run at their site by the absorb's start."""
    rows = shed(fleet, params, state)
    for job, target, cost_s, energy_kwh, depart_in_s in plan_absorbs(fleet, params, state):
        if len(rows) >= params.max_event_migrations:
            break
        if depart_in_s > params.absorb_early_s:
            continue  # a later round, timed to this instant, moves it
        state.move(fleet, job, target)
        window = windows_s(state.prefix[target], fleet.job_power_kw[job : job + 1], fleet.step_s)
        rows.append((job, target, cost_s, energy_kwh, float(window[0]), True))
    return rows


Absorb = tuple[int, int, float, float, float]
"""(candidate, target site, migration_s, energy_kwh, depart_in_s): a move an absorb needs;
it must leave within ``depart_in_s`` [s] to run at the target by the absorb's start (its
migration: the dispatcher takes each step when the site's operation is due)."""


def plan_absorbs(fleet: FleetArrays, params: PolicyParams, state: RoundState) -> list[Absorb]:
    """For each site asked to absorb, the quickest jobs from unguarded sites whose IT power
    (less the idle draw they leave behind) covers ``absorb_kw``, each with the time
    by which it must leave. Does not change ``state``: the caller moves those due now."""
    if fleet.absorb_kw is None or fleet.absorb_in_s is None:
        return []
    out: list[Absorb] = []
    taken = state.moved.copy()
    gpus_free = state.gpus_free.copy()
    it_power_kw = state.it_power_kw.copy()
    for site in np.flatnonzero(fleet.absorb_kw > EPS):
        if not fleet.online[site]:
            continue
        need_it_kw = float(fleet.absorb_kw[site] / fleet.pue[site])
        jobs = np.flatnonzero(
            (fleet.job_site != site) & ~taken & ~fleet.pinned & fleet.online[fleet.job_site]
        )
        if jobs.size == 0:
            continue
        cost = move_cost(
            fleet.job_checkpoint_gb[jobs],
            fleet.job_gpus[jobs],
            np.minimum(fleet.bandwidth_gbps[fleet.job_site[jobs]], fleet.bandwidth_gbps[site]),
            params,
        )
        net_kw = fleet.net_it_kw(jobs)
        for i in _absorb_order(fleet, int(site), jobs, cost.migration_s):
            if need_it_kw <= EPS:
                break
            job = int(jobs[i])
            power_kw = float(fleet.job_power_kw[job])
            if fleet.job_gpus[job] > gpus_free[site] or (
                it_power_kw[site] + power_kw > fleet.it_power_max_kw[site] + EPS
            ):
                continue
            gpus_free[site] -= fleet.job_gpus[job]
            it_power_kw[site] += power_kw
            taken[job] = True
            need_it_kw -= float(net_kw[i])
            depart_in_s = float(fleet.absorb_in_s[site] - cost.migration_s[i])
            out.append(
                (job, int(site), float(cost.migration_s[i]), float(cost.energy_kwh[i]), depart_in_s)
            )
    return out


def _absorb_order(
    fleet: FleetArrays, site: int, jobs: IntArray, migration_s: FloatArray
) -> IntArray:
    """Candidates for an absorb at ``site``: those that run to its end first (a job that
    finishes during the absorb takes its load with it), each group quickest first."""
    until_s = np.inf if fleet.absorb_until_s is None else float(fleet.absorb_until_s[site])
    # A job makes no progress while it moves: it ends after its migration plus its work.
    ends_early = migration_s + fleet.job_runs_s(jobs) < until_s
    result: IntArray = np.lexsort((migration_s, ends_early)).astype(np.int64)
    return result


def shed(fleet: FleetArrays, params: PolicyParams, state: RoundState) -> list[Row]:
    rows: list[Row] = []
    for site in np.flatnonzero(fleet.shed_kw > EPS):
        budget = params.max_event_migrations - len(rows)
        mine = np.flatnonzero((fleet.job_site == site) & ~state.moved)
        chosen = choose_shed_jobs(
            fleet, mine, float(fleet.shed_kw[site] / fleet.pue[site]), params, budget
        )
        for job in chosen:
            targets = np.flatnonzero(fleet.online & ~fleet.blocked)
            targets = targets[targets != site]
            if targets.size == 0:
                break
            fits = state.fits(fleet, np.asarray([job]), targets)[0]
            targets = targets[fits]
            if targets.size == 0:
                continue
            windows = window_matrix(fleet, state, np.asarray([job]), targets)[0]
            cost = move_cost(
                fleet.job_checkpoint_gb[job],
                fleet.job_gpus[job],
                np.minimum(fleet.bandwidth_gbps[site], fleet.bandwidth_gbps[targets]),
                params,
            )
            # The longest green window wins; then the quickest move.
            best = int(np.lexsort((cost.migration_s, -windows))[0])
            target = int(targets[best])
            state.move(fleet, int(job), target)
            rows.append(
                (
                    int(job),
                    target,
                    float(cost.migration_s[best]),
                    float(cost.energy_kwh[best]),
                    float(windows[best]),
                    True,
                )
            )
    return rows


def settled(fleet: FleetArrays, params: PolicyParams, state: RoundState) -> BoolArray:
    """Jobs that may move: not moved this round, at their site long enough, not at a site an
    event guards."""
    result: BoolArray = (
        ~state.moved & ~fleet.pinned & (fleet.at_s - fleet.job_arrived_s >= params.min_residence_s)
    )
    return result
