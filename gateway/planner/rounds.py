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
    power = fleet.job_power_kw[jobs]
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


def shed(fleet: FleetArrays, params: PolicyParams, state: RoundState) -> list[Row]:
    rows: list[Row] = []
    for site in np.flatnonzero(fleet.shed_kw > EPS):
        budget = params.max_migrations - len(rows)
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
    """Jobs that may move: not moved this round, at their site long enough."""
    result: BoolArray = ~state.moved & (fleet.at_s - fleet.job_arrived_s >= params.min_residence_s)
    return result
