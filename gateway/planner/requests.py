"""What the events the fleet takes part in ask of each site, now and within the horizon.

Pure: the events with their opts, a snapshot and the signal policy in, site requests out.
An event counts while it is in force here (randomised start; a cancellation, sent or implied,
counts from the moment it takes effect). Test events never count: they move no load. Where
events of one market context overlap at a site only the one with the winning priority counts
(:func:`gateway.event_priority.winners`: lower numbers win, 0 is the lowest); an upcoming event
counts when it wins at its own start. Events compete only at the sites of their own VTN.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from gateway.event_priority import Contest
from gateway.events import DrEvent, Opt
from gateway.planner.signals import SignalPolicy, peak_requests, requests_at
from gateway.planner.snapshot import SiteRequest, SiteView


def event_requests(
    events: Sequence[tuple[DrEvent, Opt | None]],
    sites: Sequence[SiteView],
    flexible_kw: dict[str, float],
    at: datetime,
    horizon_s: float,
    policy: SignalPolicy,
) -> list[SiteRequest]:
    """Requests of the opted-in, non-test events in force at ``at`` or starting within
    ``horizon_s`` [s] of it.

    events: each event's newest version with the opt in force for it
    flexible_kw: facility power of the migratable running jobs per site [kW]
    at: now [aware UTC]
    """
    horizon = at + timedelta(seconds=horizon_s)
    taking_part = [
        event
        for event, opt in events
        if opt == "optIn" and not event.test_event and not event.is_over_at(at)
    ]
    out: list[SiteRequest] = []
    for site in sites:
        # Only the events of the site's own VTN ask anything of it (targeted_sites), so only
        # they compete for it.
        own = [event for event in taking_part if event.vtn_id == site.vtn_id]
        contest = Contest(own, site.resource_id, None)
        for event in own:
            start = event.effective_start_at
            when = at if start <= at else start
            if when > horizon or not contest.wins(event, when):
                continue
            if when == at:
                out += requests_at(event, [site], flexible_kw, at, policy)
            else:
                out += peak_requests(event, [site], flexible_kw, policy)
    return out
