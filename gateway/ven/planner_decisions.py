"""The planner's decisions on new event versions, asked for by the VEN.

A failed planner never sinks a distribution: every version it failed on is answered optOut
with the reason (:class:`PlannerDecisions`). The planner itself is injected as callables (the
VEN does not import it): :data:`Decide` for one version, :data:`DecideMany` for all the new
versions of one distribution at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.events import DrEvent, OptDecision

logger = logging.getLogger(__name__)

Decide = Callable[[DrEvent], Awaitable[OptDecision]]
"""The planner's answer to one event version."""
DecideMany = Callable[[Sequence[DrEvent]], Awaitable[Sequence[OptDecision]]]
"""The planner's answers to the new versions of one distribution, in order, all judged on one
look at the fleet; the planner runs it off the event loop."""
Unsupported = Callable[[DrEvent], Sequence[str]]
"""The signals of a version that the programme's signal mapping cannot act on."""


class PlannerDecisions:
    """Asks the planner about the new versions of one VTN's events.

    vtn_id: the VTN's id in our configuration (log lines)
    decide: the planner's answer to a version
    decide_many: the planner's answers to all new versions of a distribution at once (one
        look at the fleet, off the event loop); None asks ``decide`` once per version
    """

    def __init__(self, vtn_id: str, decide: Decide, decide_many: DecideMany | None) -> None:
        self.vtn_id = vtn_id
        self._decide = decide
        self._decide_many = decide_many

    async def ask(self, events: Sequence[DrEvent]) -> list[OptDecision]:
        """The planner's answers to ``events``, in order: in one call of ``decide_many`` when
        there is one (the planner looks at the fleet once and works off the event loop), else
        one ``decide`` per version. optOut with the reason for every version when the planner
        fails."""
        if not events:
            return []
        if self._decide_many is None:
            return [await self._decide_safely(event) for event in events]
        try:
            decisions = list(await self._decide_many(events))
            if len(decisions) != len(events):
                raise ValueError(f"{len(decisions)} answers to {len(events)} versions")
        except Exception as exc:  # task boundary: a failed planner opts out, sinks nothing
            logger.exception(
                "VTN %s: deciding on events %s failed, opting out",
                self.vtn_id,
                ", ".join(event.event_id for event in events[:5])
                + (f" and {len(events) - 5} more" if len(events) > 5 else ""),
            )
            failed = OptDecision("optOut", f"the planner failed: {type(exc).__name__}: {exc}")
            return [failed] * len(events)
        return decisions

    async def _decide_safely(self, event: DrEvent) -> OptDecision:
        """The planner's answer; optOut with the reason when the planner fails."""
        try:
            return await self._decide(event)
        except Exception as exc:  # task boundary: one event must not sink the message
            logger.exception(
                "VTN %s: deciding on event %s failed, opting out", self.vtn_id, event.event_id
            )
            return OptDecision("optOut", f"the planner failed: {type(exc).__name__}: {exc}")
