"""The policies (design section 4): fleet arrays in, moves out. Pure and vectorised.

- ``static``: jobs never move (the baseline).
- ``energy-greedy``: jobs leave sites in deficit for the site with the most surplus now, with
  no time check (the paper's energy-driven strategy).
- ``feasibility-aware``: the paper's policy: only moves inside the feasibility domain of the
  target's forecast window (migration within ``alpha`` of it, energy repaid inside it); the
  target that gives the most green running time after the move wins.
- ``forecast-global``: ours. It looks at the whole forecast horizon, not only the first
  contiguous window: a move's value is the grid energy it saves over the horizon (green steps at
  the target against green steps at the source, PUE of both) less the move's own energy and the
  work it delays; sites about to fall short are relieved before they do (``preempt_s``); all
  (job, target) pairs compete for one budget, best first; moves stay inside the feasibility
  domain, with hysteresis (``min_residence_s``, ``min_benefit_kwh``).

Every policy but ``static`` first sheds what opted-in events ask (``shed_kw``), with the
quickest set of jobs that covers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.feasibility import BoolArray, FloatArray
from gateway.planner.arrays import (
    FleetArrays,
    IntArray,
    Moves,
    headroom_kw,
    prefix_min,
    windows_s,
)
from gateway.planner.params import PolicyParams, in_domain, move_cost

Policy = Callable[[FleetArrays, PolicyParams], Moves]
Row = tuple[int, int, float, float, float, bool]
EPS = 1e-9


@dataclass
class _State:
    """Capacities while a round's moves accumulate."""

    gpus_free: IntArray
    it_power_kw: FloatArray
    prefix: FloatArray
    moved: BoolArray

    @classmethod
    def of(cls, fleet: FleetArrays) -> _State:
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


def _deficit(fleet: FleetArrays, it_power_kw: FloatArray) -> BoolArray:
    result: BoolArray = fleet.online & (it_power_kw * fleet.pue > fleet.supply_kw[:, 0] + EPS)
    return result


def _top_per_site(fleet: FleetArrays, mask: BoolArray, k: int) -> IntArray:
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


def _targets(fleet: FleetArrays, state: _State, k: int) -> IntArray:
    """Sites that may take jobs now, the ``k`` with the most green headroom first."""
    now = state.prefix[:, 0]
    ok = fleet.online & ~fleet.blocked & (state.gpus_free > 0) & (now > EPS)
    idx = np.flatnonzero(ok)
    if idx.size > k:
        idx = idx[np.argsort(-now[idx], kind="stable")[:k]]
    return idx.astype(np.int64)


def _bandwidth(fleet: FleetArrays, jobs: IntArray, targets: IntArray) -> FloatArray:
    result: FloatArray = np.minimum(
        fleet.bandwidth_gbps[fleet.job_site[jobs]][:, None],
        fleet.bandwidth_gbps[targets][None, :],
    )
    return result


def _window_matrix(
    fleet: FleetArrays, state: _State, jobs: IntArray, targets: IntArray
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


def _shed(fleet: FleetArrays, params: PolicyParams, state: _State) -> list[Row]:
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
            windows = _window_matrix(fleet, state, np.asarray([job]), targets)[0]
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


def static(fleet: FleetArrays, params: PolicyParams) -> Moves:
    return Moves.empty()


def energy_greedy(fleet: FleetArrays, params: PolicyParams) -> Moves:
    state = _State.of(fleet)
    rows = _shed(fleet, params, state)
    surplus = state.prefix[:, 0].copy()  # IT headroom now
    surplus[~fleet.online | fleet.blocked] = -np.inf
    deficit = _deficit(fleet, state.it_power_kw)
    for site in np.flatnonzero(deficit)[np.argsort(surplus[deficit])]:
        jobs = np.flatnonzero((fleet.job_site == site) & ~state.moved)
        for job in jobs[np.argsort(-fleet.job_power_kw[jobs], kind="stable")]:
            if len(rows) >= params.max_migrations or not _deficit(fleet, state.it_power_kw)[site]:
                break
            fits = state.fits(fleet, np.asarray([job]), np.arange(fleet.n_sites))[0]
            score = np.where(fits & (surplus > EPS), surplus, -np.inf)
            score[site] = -np.inf
            target = int(np.argmax(score))
            if not np.isfinite(score[target]):
                break
            cost = move_cost(
                fleet.job_checkpoint_gb[job],
                fleet.job_gpus[job],
                min(fleet.bandwidth_gbps[site], fleet.bandwidth_gbps[target]),
                params,
            )
            state.move(fleet, int(job), target)
            surplus[target] -= fleet.job_power_kw[job]
            rows.append(
                (
                    int(job),
                    target,
                    float(cost.migration_s),
                    float(cost.energy_kwh),
                    float(windows_s(state.prefix[target], np.zeros(1), fleet.step_s)[0]),
                    False,
                )
            )
    return Moves.of(rows)


def _settled(fleet: FleetArrays, params: PolicyParams, state: _State) -> BoolArray:
    """Jobs that may move: not moved this round, at their site long enough."""
    result: BoolArray = ~state.moved & (fleet.at_s - fleet.job_arrived_s >= params.min_residence_s)
    return result


def feasibility_aware(fleet: FleetArrays, params: PolicyParams) -> Moves:
    state = _State.of(fleet)
    rows = _shed(fleet, params, state)
    if len(rows) >= params.max_migrations:
        return Moves.of(rows)
    deficit = _deficit(fleet, state.it_power_kw)
    jobs = _top_per_site(
        fleet, deficit[fleet.job_site] & _settled(fleet, params, state), params.candidates_per_site
    )
    targets = _targets(fleet, state, params.targets_per_round)
    if jobs.size == 0 or targets.size == 0:
        return Moves.of(rows)
    source = fleet.job_site[jobs]
    power = fleet.job_power_kw[jobs]
    cost = move_cost(
        fleet.job_checkpoint_gb[jobs][:, None],
        fleet.job_gpus[jobs][:, None],
        _bandwidth(fleet, jobs, targets),
        params,
    )
    windows = _window_matrix(fleet, state, jobs, targets)
    alpha = params.feasibility.alpha
    feasible = in_domain(cost, power[:, None], windows, alpha)
    elsewhere = source[:, None] != targets[None, :]
    active = np.ones(jobs.size, dtype=np.bool_)
    while len(rows) < params.max_migrations:
        gain = windows - cost.migration_s
        ok = feasible & elsewhere & state.fits(fleet, jobs, targets) & active[:, None]
        score = np.where(ok & (gain >= params.min_gain_s), gain, -np.inf)
        best = int(np.argmax(score))
        c, t = divmod(best, targets.size)
        if not np.isfinite(score[c, t]):
            break
        job, target = int(jobs[c]), int(targets[t])
        rows.append(
            (
                job,
                target,
                float(cost.migration_s[c, t]),
                float(cost.energy_kwh[c, t]),
                float(windows[c, t]),
                False,
            )
        )
        state.move(fleet, job, target)
        active[c] = False
        if not _deficit(fleet, state.it_power_kw)[source[c]]:
            active[source == source[c]] = False
        windows[:, t] = windows_s(state.prefix[target], power, fleet.step_s)
        feasible[:, t] = in_domain(cost.columns(t), power, windows[:, t], alpha)
    return Moves.of(rows)


def forecast_global(fleet: FleetArrays, params: PolicyParams) -> Moves:
    state = _State.of(fleet)
    rows = _shed(fleet, params, state)
    if len(rows) >= params.max_migrations:
        return Moves.of(rows)
    steps = fleet.supply_kw.shape[1]
    lead = min(steps, max(1, int(params.preempt_s // fleet.step_s)))
    short_fac = state.it_power_kw[:, None] * fleet.pue[:, None] - fleet.supply_kw[:, :lead]
    short_soon = fleet.online & (short_fac > EPS).any(axis=1)
    targets = _targets(fleet, state, params.targets_per_round)
    if targets.size == 0:
        return Moves.of(rows)
    # A job too slow to move even over the best link it could get is no candidate.
    fastest = move_cost(
        fleet.job_checkpoint_gb,
        fleet.job_gpus,
        np.minimum(fleet.bandwidth_gbps[fleet.job_site], fleet.bandwidth_gbps[targets].max()),
        params,
    )
    jobs = _top_per_site(
        fleet,
        short_soon[fleet.job_site]
        & _settled(fleet, params, state)
        & (fastest.migration_s <= params.max_move_s),
        params.candidates_per_site,
    )
    if jobs.size == 0:
        return Moves.of(rows)
    value = _MoveValue(fleet, params, state, jobs, targets)
    for round_ in range(params.rounds):
        if len(rows) >= params.max_migrations:
            break
        if round_:
            value.refresh()
        ok = value.allowed & state.fits(fleet, jobs, targets)
        score = np.where(ok & (value.kwh >= params.min_benefit_kwh), value.kwh, -np.inf)
        flat_scores = score.ravel()
        finite = np.flatnonzero(np.isfinite(flat_scores))
        if finite.size == 0:
            break
        # The best few (a batch touches each site once, so a few dozen are plenty).
        keep = min(finite.size, 4 * params.max_migrations)
        best = finite[np.argpartition(-flat_scores[finite], keep - 1)[:keep]]
        order = best[np.argsort(-flat_scores[best], kind="stable")]
        # Take the best moves that touch distinct sites, then refresh what they changed:
        # moves between other sites do not change each other's value.
        touched: set[int] = set()
        batch: list[tuple[int, int, int]] = []
        for flat in order:
            c, t = divmod(int(flat), targets.size)
            job, target = int(jobs[c]), int(targets[t])
            source = int(fleet.job_site[job])
            if source in touched or target in touched:
                continue
            touched.update((source, target))
            batch.append((c, source, target))
            rows.append(
                (
                    job,
                    target,
                    float(value.cost.migration_s[c, t]),
                    float(value.cost.energy_kwh[c, t]),
                    float(value.windows[c, t]),
                    False,
                )
            )
            state.move(fleet, job, target)
            if len(rows) >= params.max_migrations:
                break
        value.moved([c for c, _, _ in batch], touched)
    return Moves.of(rows)


class _MoveValue:
    """forecast-global's value of every (job, target) move, kept up to date as moves are
    chosen: a move changes one target column and the rows of one source only.

    The value of a move is the grid energy it saves over ``value_horizon_s`` (while the job
    still runs): at the source, its shortfall up to the job's draw; less at the target, the
    job's draw beyond the target's spare green power; less the move's own energy and the
    work it delays (``downtime_weight``) [kWh].
    """

    def __init__(
        self,
        fleet: FleetArrays,
        params: PolicyParams,
        state: _State,
        jobs: IntArray,
        targets: IntArray,
    ) -> None:
        self.fleet, self.params, self.state = fleet, params, state
        self.jobs, self.targets = jobs, targets
        steps = min(fleet.supply_kw.shape[1], max(1, int(params.value_horizon_s // fleet.step_s)))
        self.supply = fleet.supply_kw[:, :steps]
        self.step_h = fleet.step_s / 3600.0
        self.source = fleet.job_site[jobs]
        self.power = fleet.job_power_kw[jobs]
        self.cost = move_cost(
            fleet.job_checkpoint_gb[jobs][:, None],
            fleet.job_gpus[jobs][:, None],
            _bandwidth(fleet, jobs, targets),
            params,
        )
        run_steps = np.ceil(fleet.job_work_gpu_h[jobs] / fleet.job_gpus[jobs] * 3600 / fleet.step_s)
        self.running = np.arange(steps)[None, :] < run_steps[:, None]
        pue_t = fleet.pue[targets][None, :]
        self.fixed_kwh = (
            self.cost.energy_kwh
            + params.downtime_weight * self.power[:, None] * pue_t * self.cost.migration_s / 3600
        )
        self.windows = _window_matrix(fleet, state, jobs, targets)
        self.eligible = (self.cost.migration_s <= params.max_move_s) & (
            self.source[:, None] != targets[None, :]
        )
        """Moves the rules allow whatever the forecast: quick enough, to another site."""
        self.allowed = self.eligible & in_domain(
            self.cost, self.power[:, None], self.windows, params.feasibility.alpha
        )
        self.kwh = self._value(np.arange(jobs.size), np.arange(targets.size))
        self._dirty: set[int] = set()

    def _value(self, rows: IntArray, cols: IntArray) -> FloatArray:
        fleet, it = self.fleet, self.state.it_power_kw
        source, power, running = self.source[rows], self.power[rows], self.running[rows]
        pue_s = fleet.pue[source][:, None]
        short_src = np.maximum(0.0, it[source, None] * pue_s - self.supply[source])
        saved = np.minimum(power[:, None] * pue_s, short_src) * running
        t_sites = self.targets[cols]
        pue_t = fleet.pue[t_sites]
        spare = np.maximum(0.0, self.supply[t_sites] - (it[t_sites] * pue_t)[:, None])
        draw = power[:, None, None] * pue_t[None, :, None]
        added = np.maximum(0.0, draw - spare[None, :, :]) * running[:, None, :]
        green_kwh = (saved[:, None, :] - added).sum(axis=2) * self.step_h
        result: FloatArray = green_kwh - self.fixed_kwh[rows][:, cols]
        return result

    def moved(self, candidates: list[int], sites: set[int]) -> None:
        """These candidates moved, between these sites: they move no more this round, and
        :meth:`refresh` will bring the values that changed up to date."""
        self.eligible[candidates, :] = False
        self.allowed[candidates, :] = False
        self._dirty |= sites

    def refresh(self) -> None:
        """Recompute the columns of the sites moves touched, as targets, and the rows of
        jobs at those sites."""
        if not self._dirty:
            return
        site_list = np.fromiter(self._dirty, dtype=np.int64)
        self._dirty = set()
        cols = np.flatnonzero(np.isin(self.targets, site_list))
        if cols.size:
            self.kwh[:, cols] = self._value(np.arange(self.jobs.size), cols)
            for t in cols:
                self.windows[:, t] = windows_s(
                    self.state.prefix[self.targets[t]], self.power, self.fleet.step_s
                )
            self.allowed[:, cols] = self.eligible[:, cols] & in_domain(
                self.cost.columns(cols),
                self.power[:, None],
                self.windows[:, cols],
                self.params.feasibility.alpha,
            )
        rows = np.flatnonzero(np.isin(self.source, site_list))
        if rows.size:
            self.kwh[rows, :] = self._value(rows, np.arange(self.targets.size))


POLICIES: dict[str, Policy] = {
    "static": static,
    "energy-greedy": energy_greedy,
    "feasibility-aware": feasibility_aware,
    "forecast-global": forecast_global,
}
"""Every policy by its name in configuration and on the command line."""
