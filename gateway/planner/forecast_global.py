"""``forecast-global``: our policy (``docs/architecture.md``, 'Policies and the fluid bound';
README, trace-driven evaluation).

It values each move by the grid energy it saves over ``value_horizon_s`` while the job still
runs, lets every (job, target) pair compete for one budget, best first, and keeps moves inside
the feasibility domain and under ``max_move_s``. Pure and vectorised.
"""

from __future__ import annotations

import numpy as np

from gateway.feasibility import FloatArray
from gateway.planner.arrays import FleetArrays, IntArray, Moves, windows_s
from gateway.planner.params import PolicyParams, in_domain, move_cost
from gateway.planner.rounds import (
    EPS,
    RoundState,
    bandwidth,
    event_moves,
    settled,
    targets_now,
    top_per_site,
    window_matrix,
)


def forecast_global(fleet: FleetArrays, params: PolicyParams) -> Moves:
    state = RoundState.of(fleet)
    rows = event_moves(fleet, params, state)
    if len(rows) >= params.max_migrations:
        return Moves.of(rows)
    steps = fleet.supply_kw.shape[1]
    lead = min(steps, max(1, int(params.preempt_s // fleet.step_s)))
    short_fac = state.it_power_kw[:, None] * fleet.pue[:, None] - fleet.supply_kw[:, :lead]
    short_soon = fleet.online & (short_fac > EPS).any(axis=1)
    targets = targets_now(fleet, state, params.targets_per_round)
    if targets.size == 0:
        return Moves.of(rows)
    # A job too slow to move even over the best link it could get is no candidate.
    fastest = move_cost(
        fleet.job_checkpoint_gb,
        fleet.job_gpus,
        np.minimum(fleet.bandwidth_gbps[fleet.job_site], fleet.bandwidth_gbps[targets].max()),
        params,
    )
    jobs = top_per_site(
        fleet,
        short_soon[fleet.job_site]
        & settled(fleet, params, state)
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
        state: RoundState,
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
            bandwidth(fleet, jobs, targets),
            params,
        )
        run_steps = np.ceil(fleet.job_runs_s(jobs) / fleet.step_s)
        self.running = np.arange(steps)[None, :] < run_steps[:, None]
        pue_t = fleet.pue[targets][None, :]
        self.fixed_kwh = (
            self.cost.energy_kwh
            + params.downtime_weight * self.power[:, None] * pue_t * self.cost.migration_s / 3600
        )
        self.windows = window_matrix(fleet, state, jobs, targets)
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
