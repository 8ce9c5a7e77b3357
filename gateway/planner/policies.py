"""The policies (``docs/architecture.md``, 'Policies and the fluid bound'): fleet arrays in, moves
out. Pure and vectorised.

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

import numpy as np

from gateway.planner.arrays import FleetArrays, Moves, windows_s
from gateway.planner.forecast_global import forecast_global
from gateway.planner.params import PolicyParams, in_domain, move_cost
from gateway.planner.rounds import (
    EPS,
    RoundState,
    bandwidth,
    choose_shed_jobs,
    deficit,
    event_moves,
    settled,
    targets_now,
    top_per_site,
    window_matrix,
)

Policy = Callable[[FleetArrays, PolicyParams], Moves]

__all__ = ["POLICIES", "Policy", "choose_shed_jobs"]


def static(fleet: FleetArrays, params: PolicyParams) -> Moves:
    return Moves.empty()


def energy_greedy(fleet: FleetArrays, params: PolicyParams) -> Moves:
    state = RoundState.of(fleet)
    rows = event_moves(fleet, params, state)
    surplus = state.prefix[:, 0].copy()  # IT headroom now
    surplus[~fleet.online | fleet.blocked] = -np.inf
    short = deficit(fleet, state.it_power_kw)
    for site in np.flatnonzero(short)[np.argsort(surplus[short])]:
        jobs = np.flatnonzero((fleet.job_site == site) & ~state.moved & ~fleet.pinned)
        for job in jobs[np.argsort(-fleet.job_power_kw[jobs], kind="stable")]:
            if len(rows) >= params.max_migrations or not deficit(fleet, state.it_power_kw)[site]:
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


def feasibility_aware(fleet: FleetArrays, params: PolicyParams) -> Moves:
    state = RoundState.of(fleet)
    rows = event_moves(fleet, params, state)
    if len(rows) >= params.max_migrations:
        return Moves.of(rows)
    short = deficit(fleet, state.it_power_kw)
    jobs = top_per_site(
        fleet, short[fleet.job_site] & settled(fleet, params, state), params.candidates_per_site
    )
    targets = targets_now(fleet, state, params.targets_per_round)
    if jobs.size == 0 or targets.size == 0:
        return Moves.of(rows)
    source = fleet.job_site[jobs]
    power = fleet.job_power_kw[jobs]
    cost = move_cost(
        fleet.job_checkpoint_gb[jobs][:, None],
        fleet.job_gpus[jobs][:, None],
        bandwidth(fleet, jobs, targets),
        params,
    )
    windows = window_matrix(fleet, state, jobs, targets)
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
        if not deficit(fleet, state.it_power_kw)[source[c]]:
            active[source == source[c]] = False
        windows[:, t] = windows_s(state.prefix[target], power, fleet.step_s)
        feasible[:, t] = in_domain(cost.columns(t), power, windows[:, t], alpha)
    return Moves.of(rows)


POLICIES: dict[str, Policy] = {
    "static": static,
    "energy-greedy": energy_greedy,
    "feasibility-aware": feasibility_aware,
    "forecast-global": forecast_global,
}
"""Every policy by its name in configuration and on the command line."""
