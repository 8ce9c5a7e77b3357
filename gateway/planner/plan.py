"""The daemon's way into the policies: a snapshot becomes fleet arrays, moves become decisions.

The evaluator builds its fleet arrays itself, step by step; both then call the same policy
function from ``POLICIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gateway.feasibility import FloatArray
from gateway.planner.arrays import FleetArrays, Moves
from gateway.planner.params import PolicyParams
from gateway.planner.policies import POLICIES
from gateway.planner.snapshot import (
    JobView,
    MigrationDecision,
    SiteRequest,
    SiteView,
    Snapshot,
)
from gateway.planner.supply import supply_matrix


@dataclass(frozen=True)
class PlanInput:
    fleet: FleetArrays
    jobs: list[JobView]
    """The candidate jobs, in the order of the fleet's job arrays."""
    request_sources: dict[str, str]
    """Site id -> the request (``vtn_id/event_id``) its ``shed_kw`` comes from."""
    absorb_sources: dict[str, str]
    """Site id -> the request its ``absorb_kw`` comes from."""


def fleet_arrays(snapshot: Snapshot, params: PolicyParams) -> PlanInput:
    """The snapshot as the arrays every policy reads."""
    sites = snapshot.sites
    index = {s.site_id: i for i, s in enumerate(sites)}
    jobs = [
        j
        for j in snapshot.jobs
        if j.migratable and j.state == "running" and not j.in_flight and j.site_id in index
    ]
    shed_kw, source_of = _shed_asks(snapshot, params, index)
    absorbs = _absorb_asks(snapshot, params, index)
    guarded = guarded_sites(snapshot, params)
    blocked = _blocked(snapshot, params) | guarded
    fleet = FleetArrays(
        at_s=snapshot.at.timestamp(),
        step_s=params.step_s,
        gpus_free=np.array([s.gpus_free for s in sites], dtype=np.int64),
        it_power_kw=np.array([s.it_power_kw for s in sites], dtype=np.float64),
        it_power_max_kw=np.array([s.it_power_max_kw for s in sites], dtype=np.float64),
        pue=np.array([s.pue for s in sites], dtype=np.float64),
        bandwidth_gbps=np.array([s.wan_bandwidth_gbps for s in sites], dtype=np.float64),
        online=np.array([s.online for s in sites], dtype=np.bool_),
        supply_kw=supply_matrix(
            sites, snapshot.requests, snapshot.at, params.step_s, params.horizon_s
        ),
        shed_kw=shed_kw,
        blocked=np.array([s.site_id in blocked for s in sites], dtype=np.bool_),
        job_site=np.array([index[j.site_id] for j in jobs], dtype=np.int64),
        job_gpus=np.array([j.gpus for j in jobs], dtype=np.int64),
        job_power_kw=np.array([j.power_kw for j in jobs], dtype=np.float64),
        job_checkpoint_gb=np.array([j.checkpoint_gb for j in jobs], dtype=np.float64),
        job_arrived_s=np.array([j.arrived_at_site_at.timestamp() for j in jobs], dtype=np.float64),
        job_work_gpu_h=np.array([j.work_remaining_gpu_h for j in jobs], dtype=np.float64),
        absorb_kw=absorbs.absorb_kw,
        absorb_in_s=absorbs.absorb_in_s,
        absorb_until_s=absorbs.absorb_until_s,
        job_pinned=np.array([j.site_id in guarded for j in jobs], dtype=np.bool_),
        idle_kw_per_gpu=params.feasibility.idle_kw,
    )
    return PlanInput(fleet, jobs, source_of, absorbs.sources)


def _shed_asks(
    snapshot: Snapshot, params: PolicyParams, index: dict[str, int]
) -> tuple[FloatArray, dict[str, str]]:
    """Per site, the most facility power a due shed or cap request still asks it to shed
    [kW], and site id -> the request it comes from."""
    sites = snapshot.sites
    shed_kw = np.zeros(len(sites), dtype=np.float64)
    source_of: dict[str, str] = {}
    lookahead = snapshot.at + timedelta(seconds=params.shed_lookahead_s)
    for request in _due(snapshot.requests, snapshot, lookahead):
        i = index.get(request.site_id)
        if i is None:
            continue
        site = sites[i]
        # The ask plus the margin, less what this event's moves already took off.
        margin = 1 + params.delivery_margin
        if request.kind == "shed" and request.baseline_kw is not None:
            asked = site.load_kw - (request.baseline_kw - request.power_kw * margin)
        elif request.kind == "shed":
            delivered = snapshot.delivered_kw.get((request.source, site.site_id), 0.0)
            asked = request.power_kw * margin - delivered
        else:
            asked = (site.load_kw - request.power_kw) * margin
        if asked > shed_kw[i]:
            shed_kw[i] = asked
            source_of[site.site_id] = request.source
    return shed_kw, source_of


@dataclass(frozen=True)
class _AbsorbAsks:
    absorb_kw: FloatArray
    """Per site, the most facility power an absorb request still asks it to take [kW]."""
    absorb_in_s: FloatArray
    """Seconds until that request starts (0 once in force) [s]."""
    absorb_until_s: FloatArray
    """Seconds until that request ends (inf: open-ended) [s]."""
    sources: dict[str, str]
    """Site id -> the request its ``absorb_kw`` comes from."""


def _absorb_asks(snapshot: Snapshot, params: PolicyParams, index: dict[str, int]) -> _AbsorbAsks:
    """What the absorb requests in force or to come still ask of each site."""
    sites = snapshot.sites
    absorb_kw = np.zeros(len(sites), dtype=np.float64)
    absorb_in_s = np.zeros(len(sites), dtype=np.float64)
    absorb_until_s = np.full(len(sites), np.inf, dtype=np.float64)
    absorb_source: dict[str, str] = {}
    for request in _absorbs(snapshot.requests, snapshot):
        i = index.get(request.site_id)
        if i is None:
            continue
        if request.baseline_kw is not None:  # hold the load at baseline plus the ask
            site = sites[i]
            target_kw = request.baseline_kw + request.power_kw * (1 + params.delivery_margin)
            asked = (
                target_kw
                - site.load_kw
                - snapshot.arriving_kw.get(site.site_id, 0.0)
                + _finishing_kw(snapshot, site, params.refill_ahead_s)
            )
        else:
            absorbed = snapshot.absorbed_kw.get((request.source, request.site_id), 0.0)
            asked = request.power_kw * (1 + params.delivery_margin) - absorbed
        if asked > absorb_kw[i]:
            absorb_kw[i] = asked
            absorb_in_s[i] = max(0.0, (request.start_at - snapshot.at).total_seconds())
            absorb_until_s[i] = (
                np.inf if request.end_at is None else (request.end_at - snapshot.at).total_seconds()
            )
            absorb_source[request.site_id] = request.source
    return _AbsorbAsks(absorb_kw, absorb_in_s, absorb_until_s, absorb_source)


def _finishing_kw(snapshot: Snapshot, site: SiteView, within_s: float) -> float:
    """Facility power of the jobs running at ``site`` that finish within ``within_s``: an
    absorb in force counts them as gone already, so that their replacements arrive as they
    end rather than a round and a move later [kW]."""
    return site.pue * sum(
        j.power_kw
        for j in snapshot.jobs
        if j.site_id == site.site_id and j.state == "running" and j.runs_s <= within_s
    )


def guarded_sites(snapshot: Snapshot, params: PolicyParams) -> set[str]:
    """Sites with an opted-in event in force or starting within ``event_guard_s``: their
    load changes only for that event (jobs neither leave nor arrive for other reasons)."""
    soon = snapshot.at + timedelta(seconds=params.event_guard_s)
    return {
        r.site_id
        for r in snapshot.requests
        if r.start_at <= soon and (r.end_at is None or r.end_at > snapshot.at)
    }


def _absorbs(requests: tuple[SiteRequest, ...], snapshot: Snapshot) -> list[SiteRequest]:
    """Absorb requests in force now or to come (those in the snapshot are within the
    horizon): jobs must leave for them early enough to run at the start."""
    return [
        r for r in requests if r.kind == "absorb" and (r.end_at is None or r.end_at > snapshot.at)
    ]


def _due(
    requests: tuple[SiteRequest, ...], snapshot: Snapshot, lookahead: datetime
) -> list[SiteRequest]:
    """Shed and cap requests in force now or starting by ``lookahead``."""
    return [
        r
        for r in requests
        if r.kind in ("shed", "cap")
        and r.start_at <= lookahead
        and (r.end_at is None or r.end_at > snapshot.at)
    ]


def _blocked(snapshot: Snapshot, params: PolicyParams) -> set[str]:
    """Sites asked to shed or cap, or in maintenance, now or within the horizon, and sites
    under manual override take no new jobs."""
    soon = snapshot.at + timedelta(seconds=params.horizon_s)
    asked = {r.site_id for r in _due(snapshot.requests, snapshot, soon)}
    return asked | {
        s.site_id
        for s in snapshot.sites
        if s.in_maintenance(snapshot.at, soon) or s.manual_override
    }


def plan(
    snapshot: Snapshot, params: PolicyParams, policy: str = "feasibility-aware"
) -> list[MigrationDecision]:
    """Run ``policy`` on the snapshot; the moves as decisions with their reasons."""
    if len([s for s in snapshot.sites if s.online]) < 2 or params.max_migrations <= 0:
        return []
    given = fleet_arrays(snapshot, params)
    jobs, sources, absorbs = given.jobs, given.request_sources, given.absorb_sources
    moves: Moves = POLICIES[policy](given.fleet, params)
    decisions = []
    for i in range(len(moves)):
        job = jobs[int(moves.job[i])]
        target = snapshot.sites[int(moves.target[i])]
        window_h = float(moves.window_s[i]) / 3600
        event_ref = None
        if moves.shed[i]:
            event_ref = sources.get(job.site_id) or absorbs.get(target.site_id)
        if moves.shed[i] and job.site_id in sources:
            reason = f"shed for {event_ref}; green window at target {window_h:.1f} h"
        elif moves.shed[i]:
            reason = f"absorb for {event_ref}; green window at target {window_h:.1f} h"
        else:
            reason = (
                f"{policy}: {window_h:.1f} h green window at target, "
                f"migration {moves.migration_s[i]:.0f} s"
            )
        decisions.append(
            MigrationDecision(
                job_id=job.job_id,
                source_site_id=job.site_id,
                target_site_id=target.site_id,
                reason=reason,
                expected_s=float(moves.migration_s[i]),
                expected_kwh=float(moves.energy_kwh[i]),
                event_ref=event_ref,
            )
        )
    return decisions
