"""Stand-ins for the VEN's surroundings in the tests: the VTN id, the sites' settings, a
planner that answers from a table, and the event a simulated VTN issues.

Tests of the VEN against a simulated or scripted VTN (integration) and the VEN scenarios run
as processes (system) build their connections from these.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.db import unit_of_work
from gateway.events import DrEvent, OptDecision
from gateway.settings_sites import SiteSettings
from gateway.ven import store
from models import event as rows
from simulators.vtn import ScenarioEvent

POLL_S = 1.0
"""The poll interval a simulated VTN asks for: the shortest OpenADR expresses [s]."""
VTN_ID = "utility-1"


def site(site_id: str, resource_id: str | None = None, vtn: str | None = VTN_ID) -> SiteSettings:
    """The settings of a site of 8 GPUs and 60 kW served by ``vtn``; no controller answers at
    its URL."""
    return SiteSettings(
        id=site_id,
        gpus_total=8,
        it_power_max_kw=60.0,
        wan_bandwidth_gbps=10.0,
        controller_url="http://127.0.0.1:9/",
        controller_token="token-for-tests",
        vtn=vtn,
        resource_id=resource_id,
    )


SITES = (site("site-a"), site("site-b", resource_id="RES-B"))
"""Two sites served by :data:`VTN_ID`; site-b reports under the resource id RES-B."""


class Planner:
    """Stands in for the planner: answers from a table, records every call."""

    def __init__(self) -> None:
        self.answers: dict[str, OptDecision] = {}
        self.calls: list[DrEvent] = []

    async def __call__(self, event: DrEvent) -> OptDecision:
        self.calls.append(event)
        return self.answers.get(event.event_id, OptDecision("optIn", "enough flexible load"))

    def calls_for(self, event_id: str) -> list[DrEvent]:
        return [event for event in self.calls if event.event_id == event_id]


def event_spec(clock: Clock, **changes: Any) -> ScenarioEvent:
    """An hour-long SIMPLE event an hour ahead, in two equal intervals."""
    fields: dict[str, Any] = {
        "issue_at": clock.now(),
        "start_at": clock.now() + timedelta(hours=1),
        "duration_s": 3600,
        "signal_name": "SIMPLE",
        "signal_type": "level",
        "intervals": (1.0, 2.0),
    }
    fields.update(changes)
    return ScenarioEvent(**fields)


def versions(factory: sessionmaker[Session], event_id: str) -> list[DrEvent]:
    """Every stored version of ``event_id``, by modification number."""
    with unit_of_work(factory) as session:
        found = session.scalars(
            select(rows.Event)
            .where(rows.Event.event_id == event_id)
            .order_by(rows.Event.modification_number)
        )
        return [store.to_dr_event(row) for row in found]


def answers(factory: sessionmaker[Session], event_id: str) -> list[tuple[int, str, str]]:
    """(modification number, opt, reason) of every stored answer to ``event_id``, oldest
    first."""
    with unit_of_work(factory) as session:
        found = session.execute(
            select(
                rows.Event.modification_number, rows.EventResponse.opt, rows.EventResponse.reason
            )
            .join(rows.EventResponse.event)
            .where(rows.Event.event_id == event_id)
            .order_by(rows.EventResponse.id)
        )
        return [(number, opt, reason) for number, opt, reason in found]
