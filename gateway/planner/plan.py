"""The daemon's way into the policies: a snapshot becomes fleet arrays, moves become decisions.

The evaluator builds its fleet arrays itself, step by step; both then call the same policy
function from ``POLICIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gateway.planner.arrays import FleetArrays, Moves
from gateway.planner.params import PolicyParams
from gateway.planner.policies import POLICIES
from gateway.planner.snapshot import JobView, MigrationDecision, SiteRequest, Snapshot
from gateway.planner.windows import supply_matrix


@dataclass(frozen=True)
class PlanInput:
    fleet: FleetArrays
    jobs: list[JobView]
    """The candidate jobs, in the order of the fleet's job arrays."""
    request_sources: dict[str, str]
    """Site id -> the request (``vtn_id/event_id``) its ``shed_kw`` comes from."""


def fleet_arrays(snapshot: Snapshot, params: PolicyParams) -> PlanInput:
    """The snapshot as the arrays every policy reads."""
    sites = snapshot.sites
    index = {s.site_id: i for i, s in enumerate(sites)}
    jobs = [
        j
        for j in snapshot.jobs
        if j.migratable and j.state == "running" and not j.in_flight and j.site_id in index
    ]
    shed_kw = np.zeros(len(sites), dtype=np.float64)
    source_of: dict[str, str] = {}
    lookahead = snapshot.at + timedelta(seconds=params.shed_lookahead_s)
    for request in _due(snapshot.requests, snapshot, lookahead):
        i = index.get(request.site_id)
        if i is None:
            continue
        site = sites[i]
        if request.kind == "shed":
            delivered = snapshot.delivered_kw.get((request.source, site.site_id), 0.0)
            asked = request.power_kw - delivered
        else:
            asked = site.load_kw - request.power_kw
        if asked > shed_kw[i]:
            shed_kw[i] = asked
            source_of[site.site_id] = request.source
    blocked = _blocked(snapshot, params)
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
    )
    return PlanInput(fleet, jobs, source_of)


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
    jobs, sources = given.jobs, given.request_sources
    moves: Moves = POLICIES[policy](given.fleet, params)
    decisions = []
    for i in range(len(moves)):
        job = jobs[int(moves.job[i])]
        target = snapshot.sites[int(moves.target[i])]
        window_h = float(moves.window_s[i]) / 3600
        event_ref = sources.get(job.site_id) if moves.shed[i] else None
        if moves.shed[i]:
            reason = f"shed for {event_ref}; green window at target {window_h:.1f} h"
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
