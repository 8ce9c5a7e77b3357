"""Which of overlapping events governs a resource: OpenADR 2.0b's priority rule.

Of the events in force at a resource, one per market context governs it: the one with the
winning priority (lower numbers win, 0 is the lowest of all: "unspecified"); between equal
priorities the most recently created version, then the later randomised start, then the event
id, so that a VTN that re-issues an instruction is obeyed. Pure: events in, events out. The
VEN (``docs/conformance.md``) and the planner (:mod:`gateway.planner.requests`) both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from gateway.events import DrEvent


def priority_rank(priority: int) -> float:
    """Lower numbers win; 0 is the lowest priority of all (it means "unspecified")."""
    return math.inf if priority <= 0 else float(priority)


def winners(
    events: Sequence[DrEvent], resource_id: str, ven_id: str | None, at: datetime
) -> list[DrEvent]:
    """The events that govern the resource ``resource_id`` at ``at``: of the events in force
    there, one per market context, the one with the winning priority.

    Between equal priorities the most recently created version wins (then the later
    randomised start, then the event id), so a VTN that re-issues an instruction is obeyed.
    """
    contest = Contest(events, resource_id, ven_id)
    found = (contest.winner(context, at) for context in contest.market_contexts)
    return sorted(
        (event for event in found if event is not None),
        key=lambda e: (e.market_context, e.event_id),
    )


class Contest:
    """The events addressing one resource, ranked once by :func:`winners`' rule, so that
    which one governs can be asked at many instants: a question costs the events ranked
    above the winner, not a pass over all of them (a planner's look at the fleet asks it
    once per event and site)."""

    def __init__(self, events: Iterable[DrEvent], resource_id: str, ven_id: str | None) -> None:
        ranked: dict[str, list[tuple[float, float, DrEvent]]] = {}
        addressed = (e for e in events if e.targets_resource(resource_id, ven_id))
        for event in sorted(addressed, key=_sort_key):
            until = event.acts_until
            span = (
                event.effective_start_at.timestamp(),
                math.inf if until is None else until.timestamp(),
            )
            ranked.setdefault(event.market_context, []).append((*span, event))
        self._ranked = ranked

    @property
    def market_contexts(self) -> list[str]:
        return list(self._ranked)

    def winner(self, market_context: str, at: datetime) -> DrEvent | None:
        """The event of ``market_context`` that governs the resource at ``at``; None when
        none is in force."""
        at_s = at.timestamp()
        for start_s, until_s, event in self._ranked.get(market_context, ()):
            if start_s <= at_s < until_s:
                return event
        return None

    def wins(self, event: DrEvent, at: datetime) -> bool:
        """``event`` governs the resource at ``at`` (in its market context)."""
        return self.winner(event.market_context, at) is event


def _sort_key(event: DrEvent) -> tuple[float, float, float, str]:
    created_s = event.created_at.timestamp() if event.created_at is not None else -math.inf
    return (
        priority_rank(event.priority),
        -created_s,
        -event.effective_start_at.timestamp(),
        event.event_id,
    )
