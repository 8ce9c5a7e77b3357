"""optIn or optOut: can the fleet deliver at the facility meter what an event asks?

For each targeted site the event's largest ask is compared with what migrations would deliver
at the meter, as the planner will carry them out (:mod:`gateway.planner.timing`):

- shed (or cap): migratable jobs leave the site when the event starts (the load leaves with
  the checkpoint); a job counts when another site (not asked to shed by the same event) has
  room for it, with its power less the idle draw of the GPUs it leaves behind, times the
  site's PUE;
- absorb: migratable jobs from other sites come in while there is room, those that run the
  largest share of the event first, then the quickest; each counts for that share: in full
  when its migration fits in the notice and its work lasts to the end, less by the time it
  arrives late or ends early.

An event that asks a site to shed (or cap) while another opted-in event asks it to absorb,
or the other way round, is declined: the meter cannot show both, and the promise made first
is kept. The answer is optIn only when every site's prediction covers its ask plus
``delivery_margin`` of it (what the planner aims to deliver: a prediction that covers the ask
alone leaves no room for a job finishing or a baseline a little off); the decision carries
the prediction (``predicted_kw``: what the planner means to deliver), so that a campaign can
score it against the meter.

Pure: event, snapshot and parameters in, a decision with its reason out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np

from gateway.events import DrEvent, OptDecision
from gateway.planner import maintenance
from gateway.planner.params import PolicyParams, move_cost
from gateway.planner.signals import (
    SignalPolicy,
    lead_time_s,
    peak_requests,
    targeted_sites,
)
from gateway.planner.snapshot import JobView, SiteRequest, SiteView, Snapshot

SIGNAL_NOT_SUPPORTED = 460


@dataclass(frozen=True)
class Delivery:
    site_id: str
    kind: str
    requested_kw: float
    deliverable_kw: float

    def enough(self, margin: float) -> bool:
        """The prediction covers the ask plus ``margin`` of it: what the planner aims to
        deliver, so that a job finishing or a baseline a little off leaves the ask met."""
        return self.deliverable_kw + 1e-6 >= self.requested_kw * (1 + margin)

    def planned_kw(self, margin: float) -> float:
        """What the planner means to deliver: the ask plus the margin, as far as it can."""
        return min(self.deliverable_kw, self.requested_kw * (1 + margin))

    def describe(self) -> str:
        verb = "absorb" if self.kind == "absorb" else "shed"
        return (
            f"{self.site_id}: {verb} {self.requested_kw:.1f} kW asked, "
            f"{self.deliverable_kw:.1f} kW deliverable"
        )


def flexible_kw(snapshot: Snapshot) -> dict[str, float]:
    """Facility power of the migratable running jobs at each site [kW]."""
    out: dict[str, float] = {s.site_id: 0.0 for s in snapshot.sites}
    pue = {s.site_id: s.pue for s in snapshot.sites}
    for job in snapshot.jobs:
        if job.migratable and job.state == "running" and not job.in_flight:
            out[job.site_id] = out.get(job.site_id, 0.0) + job.power_kw * pue.get(job.site_id, 1.0)
    return out


def decide(
    event: DrEvent,
    snapshot: Snapshot,
    params: PolicyParams,
    signals: SignalPolicy,
    baselines: Mapping[str, float] | None = None,
) -> OptDecision:
    """optIn when every targeted site's predicted delivery covers its ask.

    baselines: the baseline each site's delivery will be measured against, as predicted
        (:mod:`gateway.baseline_forecast`) [kW]; a site without one is taken to be measured
        against its load now. The meter credits baseline minus load: a site that draws more
        now than its baseline must shed that much more."""
    prefix = "test event, no load moves: " if event.test_event else ""
    unsupported = signals.unsupported(event)
    if unsupported:
        return OptDecision(
            "optOut",
            f"{prefix}unsupported signal(s) {', '.join(unsupported)}",
            response_code=SIGNAL_NOT_SUPPORTED,
        )
    sites = targeted_sites(event, snapshot.sites)
    if not sites:
        return OptDecision("optOut", f"{prefix}the event addresses none of our sites")
    busy = maintenance.conflict(event, sites)
    if busy is not None:
        return OptDecision("optOut", f"{prefix}{busy}")
    overridden = _overridden_conflict(event, sites)
    if overridden is not None:
        return OptDecision("optOut", f"{prefix}{overridden}")
    requests = peak_requests(event, snapshot.sites, flexible_kw(snapshot), signals)
    if not requests:
        return OptDecision("optIn", f"{prefix}nothing to deliver at the targeted sites")
    if conflicts := _opposing(event, requests, snapshot):
        return OptDecision("optOut", f"{prefix}{'; '.join(conflicts)}")
    lead_s = lead_time_s(event, snapshot.at)
    duration_s = event.duration_s if event.duration_s > 0 else params.horizon_s
    asked_sites = {r.site_id for r in requests} | _committed_sites(event, snapshot, params)
    deliveries = [
        _against_baseline(
            _deliverable(r, snapshot, asked_sites, lead_s, duration_s, params),
            snapshot.site(r.site_id),
            (baselines or {}).get(r.site_id),
        )
        for r in requests
    ]
    text = "; ".join(d.describe() for d in deliveries)
    predicted_kw = sum(d.planned_kw(params.delivery_margin) for d in deliveries)
    if all(d.enough(params.delivery_margin) for d in deliveries):
        return OptDecision("optIn", f"{prefix}{text}", predicted_kw=predicted_kw)
    return OptDecision("optOut", f"{prefix}{text}", predicted_kw=predicted_kw)


def _against_baseline(delivery: Delivery, site: SiteView, baseline_kw: float | None) -> Delivery:
    """The delivery as the meter will credit it: moves plus the gap between the baseline
    and the load now (shed: baseline above the load adds; absorb: below adds)."""
    if baseline_kw is None or delivery.kind == "cap":
        return delivery
    gap_kw = baseline_kw - site.load_kw if delivery.kind == "shed" else site.load_kw - baseline_kw
    return replace(delivery, deliverable_kw=max(0.0, delivery.deliverable_kw + gap_kw))


def _opposing(event: DrEvent, requests: list[SiteRequest], snapshot: Snapshot) -> list[str]:
    """Why the event's asks would break a promise made: at a site it asks to shed (or cap),
    another opted-in event asks to absorb at an overlapping time, or the other way round.
    One meter cannot show both, and each event is judged whole on it; the promise made first
    is kept."""
    source = f"{event.vtn_id}/{event.event_id}"
    start, end = event.effective_start_at, event.end_at
    found = []
    for asked in requests:
        for other in snapshot.requests:
            if (
                other.site_id == asked.site_id
                and other.source != source
                and (other.kind == "absorb") != (asked.kind == "absorb")
                and (end is None or other.start_at < end)
                and (other.end_at is None or start < other.end_at)
            ):
                found.append(
                    f"{asked.site_id}: {asked.kind} would break the {other.kind} promised to "
                    f"{other.source} from {other.start_at:%Y-%m-%d %H:%M} UTC"
                )
    return found


def _committed_sites(event: DrEvent, snapshot: Snapshot, params: PolicyParams) -> set[str]:
    """Sites that other opted-in events guard while this one runs (from ``event_guard_s``
    before its start to its end): they neither take its jobs nor give up theirs."""
    source = f"{event.vtn_id}/{event.event_id}"
    start = event.effective_start_at - timedelta(seconds=params.event_guard_s)
    end = event.end_at
    return {
        r.site_id
        for r in snapshot.requests
        if r.source != source
        and (end is None or r.start_at < end + timedelta(seconds=params.event_guard_s))
        and (r.end_at is None or r.end_at > start)
    }


def _overridden_conflict(event: DrEvent, targeted: list[SiteView]) -> str | None:
    """Why the event needs a site under manual override (one it names, or every site it
    addresses), or None."""
    overridden = [s for s in targeted if s.manual_override]
    named = {t.value for t in event.targets if t.kind == "resource_id"}
    needed = [s for s in overridden if s.resource_id in named]
    if not needed and len(overridden) < len(targeted):
        return None
    return "; ".join(f"{s.site_id}: under manual override" for s in (needed or overridden))


def _movable(snapshot: Snapshot, site_id: str) -> list[JobView]:
    return [
        j
        for j in snapshot.jobs
        if j.site_id == site_id and j.migratable and j.state == "running" and not j.in_flight
    ]


def _deliverable(
    request: SiteRequest,
    snapshot: Snapshot,
    asked_sites: set[str],
    lead_s: float,
    duration_s: float,
    params: PolicyParams,
) -> Delivery:
    site = snapshot.site(request.site_id)
    if request.kind == "absorb":
        return Delivery(
            site.site_id,
            "absorb",
            request.power_kw,
            _absorbable_kw(site, snapshot, asked_sites, lead_s, duration_s, params),
        )
    asked_kw = request.power_kw
    if request.kind == "cap":
        asked_kw = max(0.0, site.load_kw - request.power_kw)
    idle_kw = params.feasibility.idle_kw
    room = {
        s.site_id: [s.gpus_free, s.it_power_max_kw - s.it_power_kw]
        for s in snapshot.sites
        if s.site_id not in asked_sites and s.online
    }
    goal_kw = asked_kw * (1 + params.delivery_margin)
    delivered_kw = 0.0
    for job in sorted(_movable(snapshot, site.site_id), key=lambda j: -j.power_kw):
        if delivered_kw >= goal_kw:
            break
        for free in room.values():
            if free[0] >= job.gpus and free[1] >= job.power_kw:
                free[0] -= job.gpus
                free[1] -= job.power_kw
                delivered_kw += max(0.0, job.power_kw - idle_kw * job.gpus) * site.pue
                break
    return Delivery(site.site_id, request.kind, asked_kw, delivered_kw)


def _absorbable_kw(
    site: SiteView,
    snapshot: Snapshot,
    asked_sites: set[str],
    lead_s: float,
    duration_s: float,
    params: PolicyParams,
) -> float:
    jobs = [
        j
        for s in snapshot.sites
        if s.site_id != site.site_id and s.site_id not in asked_sites and s.online
        for j in _movable(snapshot, s.site_id)
    ]
    if not jobs:
        return 0.0
    sources = {s.site_id: s for s in snapshot.sites}
    bandwidth = np.array(
        [min(sources[j.site_id].wan_bandwidth_gbps, site.wan_bandwidth_gbps) for j in jobs]
    )
    cost = move_cost(
        np.array([j.checkpoint_gb for j in jobs]),
        np.array([j.gpus for j in jobs]),
        bandwidth,
        params,
    )
    gpus_free, power_free_kw = site.gpus_free, site.it_power_max_kw - site.it_power_kw
    idle_kw = params.feasibility.idle_kw
    # A job runs at the site from its arrival (at the start, or late by its migration) to
    # its end (it makes no progress while it moves), within the event.
    arrive_s = np.maximum(cost.migration_s, lead_s)
    end_s = np.minimum(cost.migration_s + np.array([j.runs_s for j in jobs]), lead_s + duration_s)
    shares = np.clip((end_s - arrive_s) / duration_s, 0.0, 1.0)
    absorbed_kw = 0.0
    for i in np.lexsort((cost.migration_s, -shares)):
        job = jobs[int(i)]
        share = float(shares[i])
        if share <= 0.0:
            break
        if job.gpus <= gpus_free and job.power_kw <= power_free_kw:
            gpus_free -= job.gpus
            power_free_kw -= job.power_kw
            absorbed_kw += max(0.0, job.power_kw - idle_kw * job.gpus) * site.pue * share
    return absorbed_kw
