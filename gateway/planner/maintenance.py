"""Sites in maintenance and events (pure).

A site in a maintenance window takes part in no event: its VTN has been told with an optOut
availability schedule (``gateway/ven/availability.py``). An event that addresses the whole
VEN is answered for the sites that are available; an event that names a site in maintenance
by its resource id (or addresses only sites in maintenance) needs what the site cannot give,
and is opted out of.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.events import DrEvent
from gateway.planner.snapshot import SiteView


def in_maintenance_during(event: DrEvent, site: SiteView) -> bool:
    """True when a maintenance window of ``site`` overlaps the event's active period."""
    return site.in_maintenance(event.start_at, event.end_at)


def available(event: DrEvent, sites: Sequence[SiteView]) -> list[SiteView]:
    """``sites`` without those in maintenance during the event."""
    return [s for s in sites if not in_maintenance_during(event, s)]


def conflict(event: DrEvent, targeted: Sequence[SiteView]) -> str | None:
    """Why the event needs a site in maintenance, or None.

    targeted: the sites the event addresses
    """
    busy = [s for s in targeted if in_maintenance_during(event, s)]
    if not busy:
        return None
    named = {t.value for t in event.targets if t.kind == "resource_id"}
    needed = [s for s in busy if s.resource_id in named]
    if not needed and len(busy) < len(targeted):
        return None
    return "; ".join(f"{s.site_id}: in maintenance during the event" for s in (needed or busy))
