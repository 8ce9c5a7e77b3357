"""A change of plan: should the opt already given to an upcoming event change?

Pure: the event, the opt in force, a snapshot and the parameters in; a new decision or None.
Only before the event's (randomised) start minus its ramp, and only for answers the planner
gave (code 200; 450, 454 and 460 are final):

- an optOut becomes optIn when the planner, asked again, now opts in (a site came back,
  jobs arrived);
- an optIn becomes optOut when a site the event names can no longer take part (offline, or
  in maintenance during the event), or for an event of the whole VEN when none of its sites
  can. An optIn is not re-decided otherwise: once
  the planner prepares for the event its moves change the very numbers it decided on, and
  the answer must not flap with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gateway.events import DrEvent, Opt, OptDecision
from gateway.planner import maintenance, opt
from gateway.planner.params import PolicyParams
from gateway.planner.signals import SignalPolicy, lead_time_s, targeted_sites
from gateway.planner.snapshot import Snapshot

PLANNER_CODE = 200


def review(
    event: DrEvent,
    current: Opt | None,
    response_code: int | None,
    snapshot: Snapshot,
    params: PolicyParams,
    signals: SignalPolicy,
    baselines: Mapping[str, float] | None = None,
) -> OptDecision | None:
    """The new answer to ``event`` when the plan changed it, else None.

    baselines: as :func:`gateway.planner.opt.decide` takes them, so that an optOut becomes
    optIn only on the prediction a first answer would have needed."""
    if current is None or response_code != PLANNER_CODE or event.cancelled:
        return None
    if lead_time_s(event, snapshot.at) <= 0:
        return None
    if current == "optOut":
        fresh = opt.decide(event, snapshot, params, signals, baselines)
        if fresh.opt == "optIn":
            return replace(fresh, reason=f"plan changed: {fresh.reason}")
        return None
    targeted = targeted_sites(event, snapshot.sites)
    lost = [s for s in targeted if not s.online or maintenance.in_maintenance_during(event, s)]
    if not lost:
        return None
    named = {t.value for t in event.targets if t.kind == "resource_id"}
    needed = [s for s in lost if s.resource_id in named]
    if not needed and len(lost) < len(targeted):
        return None  # a whole-VEN event still has sites to deliver it
    why = "; ".join(
        f"{s.site_id} is {'offline' if not s.online else 'in maintenance during the event'}"
        for s in (needed or lost)
    )
    return OptDecision("optOut", f"plan changed: {why}")
