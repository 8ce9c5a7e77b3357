"""The paper's ``feasibility-aware`` policy, extended to honour opted-in events.

Each planning round:

1. Shed: for every opted-in shed or cap request in force (or about to be), move the largest
   migratable jobs off that site until the request is covered, to the targets with the longest
   green window.
2. Follow the green: jobs at sites whose renewable supply does not cover their load now may
   move to a target whose forecast window, after the move, is inside the feasibility domain
   (migration time <= alpha * window, energy repaid inside the window); the target that adds
   the most green running time wins. Hysteresis: a job stays ``min_residence_s`` at a site and
   a move must add ``min_gain_s`` of green time.

Pure: snapshot and parameters in, decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np

from gateway import feasibility as fm
from gateway.planner.snapshot import JobView, MigrationDecision, SiteView, Snapshot
from gateway.planner.windows import supply_matrix, window_s


@dataclass(frozen=True)
class PolicyParams:
    feasibility: fm.FeasibilityParams
    """alpha, efficiency, network energy; ``idle_kw`` here is per GPU [kW]."""
    checkpoint_write_gb_per_s: float = 0.6
    restore_gb_per_s: float = 1.5
    min_residence_s: float = 3600.0
    min_gain_s: float = 1800.0
    max_migrations: int = 4
    horizon_s: float = 43200.0
    step_s: float = 900.0
    shed_lookahead_s: float = 3600.0
    """Start shedding for a request this long before it begins [s]."""


@dataclass
class _Fleet:
    """Mutable copy of capacities while decisions accumulate."""

    gpus_free: dict[str, int]
    it_power_kw: dict[str, float]


@dataclass(frozen=True)
class MoveCost:
    """The feasibility model for a batch of (job, target) moves; arrays of one shape."""

    migration_s: fm.FloatArray
    energy_kwh: fm.FloatArray
    """Network energy plus the job's idle GPUs while it is stopped [kWh]."""
    feasible: fm.BoolArray
    """Inside the feasibility domain of the window: time and energy."""


def assess_moves(
    jobs: list[JobView],
    bandwidth_gbps: fm.ArrayLike,
    window_s_: fm.ArrayLike,
    params: PolicyParams,
) -> MoveCost:
    """Cost and feasibility of moving each job over ``bandwidth_gbps`` into ``window_s_``."""
    gb = np.array([j.checkpoint_gb for j in jobs], dtype=np.float64)
    gpus = np.array([j.gpus for j in jobs], dtype=np.float64)
    power = np.array([j.power_kw for j in jobs], dtype=np.float64)
    result = fm.assess(
        checkpoint_gb=gb,
        bandwidth_gbps=bandwidth_gbps,
        window_s=window_s_,
        checkpoint_write_s=fm.checkpoint_write_s(gb, params.checkpoint_write_gb_per_s),
        restore_s=fm.restore_s(gb, params.restore_gb_per_s),
        job_power_kw=power,
        params=replace(params.feasibility, idle_kw=0.0),
    )
    idle_kwh = params.feasibility.idle_kw * gpus * result.migration_s / 3600
    energy_kwh = result.migration_kwh + idle_kwh
    breakeven = fm.breakeven_s(energy_kwh, power)
    feasible = result.feasible_time & fm.feasible_energy(breakeven, window_s_, result.migration_s)
    return MoveCost(migration_s=result.migration_s, energy_kwh=energy_kwh, feasible=feasible)


def plan(snapshot: Snapshot, params: PolicyParams) -> list[MigrationDecision]:
    sites = [s for s in snapshot.sites if s.online]
    if len(sites) < 2 or params.max_migrations <= 0:
        return []
    fleet = _Fleet(
        gpus_free={s.site_id: s.gpus_free for s in sites},
        it_power_kw={s.site_id: s.it_power_kw for s in sites},
    )
    supply = supply_matrix(sites, snapshot.requests, snapshot.at, params.step_s, params.horizon_s)
    decisions: list[MigrationDecision] = []
    moved: set[str] = set()
    blocked = _blocked_targets(snapshot, params)
    decisions += _shed(snapshot, sites, supply, fleet, blocked, moved, params)
    budget = params.max_migrations - len(decisions)
    if budget > 0:
        decisions += _follow_green(snapshot, sites, supply, fleet, blocked, moved, params, budget)
    return decisions


def _blocked_targets(snapshot: Snapshot, params: PolicyParams) -> set[str]:
    """Sites asked to shed or cap now or soon take no new jobs."""
    soon = snapshot.at + timedelta(seconds=params.horizon_s)
    return {
        r.site_id
        for r in snapshot.requests
        if r.kind in ("shed", "cap")
        and r.start_at <= soon
        and (r.end_at is None or r.end_at > snapshot.at)
    }


def _candidates(snapshot: Snapshot, site_id: str, moved: set[str]) -> list[JobView]:
    return [
        j
        for j in snapshot.jobs
        if j.site_id == site_id
        and j.migratable
        and j.state == "running"
        and not j.in_flight
        and j.job_id not in moved
    ]


def _fits(site: SiteView, job: JobView, fleet: _Fleet) -> bool:
    return (
        fleet.gpus_free[site.site_id] >= job.gpus
        and fleet.it_power_kw[site.site_id] + job.power_kw <= site.it_power_max_kw + 1e-9
    )


def _commit_move(
    fleet: _Fleet,
    moved: set[str],
    job: JobView,
    source: SiteView,
    target: SiteView,
    cost: MoveCost,
    index: int,
    *,
    reason: str,
    event_ref: str | None = None,
) -> MigrationDecision:
    """Book the move in the working copy of the fleet and describe it."""
    fleet.gpus_free[target.site_id] -= job.gpus
    fleet.it_power_kw[target.site_id] += job.power_kw
    fleet.gpus_free[source.site_id] += job.gpus
    fleet.it_power_kw[source.site_id] -= job.power_kw
    moved.add(job.job_id)
    return MigrationDecision(
        job_id=job.job_id,
        source_site_id=source.site_id,
        target_site_id=target.site_id,
        reason=reason,
        expected_s=float(cost.migration_s[index]),
        expected_kwh=float(cost.energy_kwh[index]),
        event_ref=event_ref,
    )


def _windows_for(
    sites: list[SiteView], supply: fm.FloatArray, fleet: _Fleet, job: JobView, step_s: float
) -> fm.FloatArray:
    need = np.array(
        [(fleet.it_power_kw[s.site_id] + job.power_kw) * s.pue for s in sites], dtype=np.float64
    )
    return window_s(supply, need, step_s)


def _shed(
    snapshot: Snapshot,
    sites: list[SiteView],
    supply: fm.FloatArray,
    fleet: _Fleet,
    blocked: set[str],
    moved: set[str],
    params: PolicyParams,
) -> list[MigrationDecision]:
    decisions: list[MigrationDecision] = []
    lookahead = snapshot.at + timedelta(seconds=params.shed_lookahead_s)
    for request in snapshot.requests:
        if request.kind not in ("shed", "cap") or request.site_id not in fleet.gpus_free:
            continue
        if request.start_at > lookahead or (
            request.end_at is not None and request.end_at <= snapshot.at
        ):
            continue
        source = snapshot.site(request.site_id)
        if request.kind == "shed":
            # What the request asks, less what moves planned for it already took away.
            delivered_kw = snapshot.delivered_kw.get((request.source, source.site_id), 0.0)
            remaining_kw = request.power_kw - delivered_kw
        else:
            remaining_kw = fleet.it_power_kw[source.site_id] * source.pue - request.power_kw
        budget = params.max_migrations - len(decisions)
        jobs = choose_shed_jobs(
            _candidates(snapshot, source.site_id, moved),
            remaining_kw / source.pue,
            source.wan_bandwidth_gbps,
            params,
            budget,
        )
        for job in jobs:
            windows = _windows_for(sites, supply, fleet, job, params.step_s)
            bandwidth = np.array(
                [min(source.wan_bandwidth_gbps, s.wan_bandwidth_gbps) for s in sites]
            )
            cost = assess_moves([job] * len(sites), bandwidth, windows, params)
            best: tuple[float, float, int] | None = None
            for i, target in enumerate(sites):
                if target.site_id == source.site_id or target.site_id in blocked:
                    continue
                if not _fits(target, job, fleet):
                    continue
                key = (float(windows[i]), -float(cost.migration_s[i]), i)
                if best is None or key > best:
                    best = key
            if best is None:
                continue
            i = best[2]
            remaining_kw -= job.power_kw * source.pue
            decisions.append(
                _commit_move(
                    fleet,
                    moved,
                    job,
                    source,
                    sites[i],
                    cost,
                    i,
                    reason=(
                        f"shed {request.power_kw:.1f} kW for {request.source}; "
                        f"green window at target {windows[i] / 3600:.1f} h"
                    ),
                    event_ref=request.source,
                )
            )
    return decisions


def choose_shed_jobs(
    jobs: list[JobView],
    shed_it_kw: float,
    bandwidth_gbps: float,
    params: PolicyParams,
    budget: int,
) -> list[JobView]:
    """The jobs to move so that ``shed_it_kw`` of IT load leaves, cheapest in migration time.

    Two candidates: the quickest single job that covers the shed alone, and the quickest-first
    set (jobs in order of migration time until covered, at most ``budget``). The one with the
    smaller total migration time wins; when neither covers, the largest jobs go first.
    """
    if shed_it_kw <= 0 or budget <= 0 or not jobs:
        return []
    times = assess_moves(jobs, bandwidth_gbps, np.inf, params).migration_s
    order = sorted(range(len(jobs)), key=lambda i: float(times[i]))
    covering = [i for i in order if jobs[i].power_kw >= shed_it_kw]
    quickest_first: list[int] = []
    covered_kw = 0.0
    for i in order[:budget]:
        if covered_kw >= shed_it_kw:
            break
        quickest_first.append(i)
        covered_kw += jobs[i].power_kw
    options: list[list[int]] = []
    if covering:
        options.append([covering[0]])
    if covered_kw >= shed_it_kw:
        options.append(quickest_first)
    if not options:
        largest = sorted(range(len(jobs)), key=lambda i: -jobs[i].power_kw)[:budget]
        return [jobs[i] for i in largest]
    best = min(options, key=lambda chosen: (sum(float(times[i]) for i in chosen), len(chosen)))
    return [jobs[i] for i in best]


def _follow_green(
    snapshot: Snapshot,
    sites: list[SiteView],
    supply: fm.FloatArray,
    fleet: _Fleet,
    blocked: set[str],
    moved: set[str],
    params: PolicyParams,
    budget: int,
) -> list[MigrationDecision]:
    decisions: list[MigrationDecision] = []
    for _ in range(budget):
        pairs_job: list[JobView] = []
        pairs_src: list[int] = []
        pairs_tgt: list[int] = []
        for s_i, source in enumerate(sites):
            load_kw = fleet.it_power_kw[source.site_id] * source.pue
            if supply[s_i, 0] >= load_kw:
                continue  # the site's own green power covers it now
            for job in _candidates(snapshot, source.site_id, moved):
                age_s = (snapshot.at - job.arrived_at_site_at).total_seconds()
                if age_s < params.min_residence_s:
                    continue
                for t_i, target in enumerate(sites):
                    if t_i == s_i or target.site_id in blocked or not _fits(target, job, fleet):
                        continue
                    pairs_job.append(job)
                    pairs_src.append(s_i)
                    pairs_tgt.append(t_i)
        if not pairs_job:
            break
        src = np.array(pairs_src)
        tgt = np.array(pairs_tgt)
        power = np.array([j.power_kw for j in pairs_job], dtype=np.float64)
        pue_t = np.array([sites[t].pue for t in pairs_tgt], dtype=np.float64)
        pue_s = np.array([sites[s].pue for s in pairs_src], dtype=np.float64)
        load_t = np.array([fleet.it_power_kw[sites[t].site_id] for t in pairs_tgt])
        load_s = np.array([fleet.it_power_kw[sites[s].site_id] for s in pairs_src])
        window_t = window_s(supply[tgt], (load_t + power) * pue_t, params.step_s)
        window_src = window_s(supply[src], load_s * pue_s, params.step_s)
        bandwidth = np.minimum(
            np.array([sites[s].wan_bandwidth_gbps for s in pairs_src]),
            np.array([sites[t].wan_bandwidth_gbps for t in pairs_tgt]),
        )
        cost = assess_moves(pairs_job, bandwidth, window_t, params)
        gain_s = window_t - cost.migration_s - window_src
        score = np.where(cost.feasible & (gain_s >= params.min_gain_s), gain_s, -np.inf)
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        decisions.append(
            _commit_move(
                fleet,
                moved,
                pairs_job[best],
                sites[pairs_src[best]],
                sites[pairs_tgt[best]],
                cost,
                best,
                reason=(
                    f"follow renewables: {window_t[best] / 3600:.1f} h green window at target, "
                    f"migration {cost.migration_s[best]:.0f} s <= "
                    f"{params.feasibility.alpha:.0%} of window"
                ),
            )
        )
    return decisions
