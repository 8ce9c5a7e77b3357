"""Conformance of the VEN's event handling, one test per rule, against a real openleadr VTN.

The VTN (:class:`simulators.scripted_vtn.ScriptedVtn`) runs openleadr's ``OpenADRServer`` in
its external ``on_poll`` mode on an OS-assigned loopback port, so it can send what the stock
VTN cannot (lower modification numbers, resent cancellations, distributions that leave events
out, unknown signals). Every message goes through openleadr's templates, XML schema and HTTP.
Each test runs on SQLite and PostgreSQL. ``docs/conformance.md`` lists the rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.db import unit_of_work
from gateway.events import DrEvent, OptDecision
from gateway.planner.requests import event_requests
from gateway.planner.signals import SignalPolicy
from gateway.settings import parse_settings
from gateway.settings_vtn import VtnSettings
from gateway.ven import store
from gateway.ven.client import VenConnection
from models import event as rows
from simulators.scripted_vtn import ScriptedVtn, event_dict
from tests.support.planning import site_view
from tests.support.ven import VTN_ID, Planner, answers, site
from tests.support.waiting import WAIT_S

pytestmark = pytest.mark.integration

POLL_S = 3600
"""The VTN asks for an hourly poll: the tests poll themselves (``Rig.send``), one message each."""
HOUR = timedelta(hours=1)


def calls_for(planner: Planner, event_id: str) -> list[int]:
    """The modification numbers the planner was asked about, in order."""
    return [e.modification_number for e in planner.calls_for(event_id)]


@dataclass
class Rig:
    vtn: ScriptedVtn
    connection: VenConnection
    planner: Planner
    sessions: sessionmaker[Session]
    clock: ManualClock

    async def send(self, *events: dict[str, Any]) -> str:
        """Distribute exactly ``events``: the VEN polls (openleadr's own poll, over HTTP) and
        has handled the message when this returns; the distribution's requestID."""
        self.vtn.distribute(events)
        await self.connection._client._poll()
        await asyncio.wait_for(self.connection.settled(), WAIT_S)
        assert not self.vtn.queue, "the VEN fetched the distribution"
        return self.vtn.distributions[-1].request_id

    def start(self, hours: float = 1.0) -> datetime:
        return self.clock.now() + timedelta(hours=hours)

    def stored(self, event_id: str) -> DrEvent | None:
        with unit_of_work(self.sessions) as session:
            return store.load_event(session, VTN_ID, event_id)

    def got(self, event_id: str) -> list[tuple[int, str, int]]:
        """(modification number, opt, response code) of each answer the VTN received."""
        return [
            (r.modification_number, r.opt_type, r.response_code)
            for r in self.vtn.responses_to(event_id)
        ]

    def answered_under(self, request_id: str) -> list[tuple[str, int, str, int]]:
        """(event id, modification number, opt, code) of each answer the VTN received with
        the requestID ``request_id``, in arrival order."""
        return [
            (r.event_id, r.modification_number, r.opt_type, r.response_code)
            for r in self.vtn.responses
            if r.request_id == request_id
        ]


@asynccontextmanager
async def connected(
    vtn: ScriptedVtn,
    session_factory: sessionmaker[Session],
    planner: Planner,
    clock: ManualClock,
    programmes: list[dict[str, Any]] | None = None,
) -> AsyncIterator[VenConnection]:
    """A started VEN against ``vtn``, stopped afterwards; a new one each time (a restart)."""
    connection = VenConnection(
        VtnSettings(id=VTN_ID, url=vtn.url, ven_name="dr-gateway-conformance"),
        (site("site-a"), site("site-b", resource_id="RES-B")),
        clock,
        session_factory,
        planner,
        lambda site_id: None,
        report_interval_s=60,
        unsupported=parse_settings({"programme": programmes or []}, "test programmes")
        .signal_policy()
        .unsupported,
    )
    try:
        await connection.start()
        yield connection
    finally:
        await connection.stop()


@asynccontextmanager
async def running(
    session_factory: sessionmaker[Session],
    vtn_id: str = "UTILITY-1",
    programmes: list[dict[str, Any]] | None = None,
    planner: Planner | None = None,
) -> AsyncIterator[Rig]:
    """A started VEN against a scripted VTN; ``programmes`` as ``[[programme]]`` tables
    (default: none, the default mapping for every market context)."""
    vtn = ScriptedVtn(vtn_id, poll_interval_s=POLL_S)
    await vtn.start()
    planner = planner or Planner()
    clock = ManualClock(datetime.now(UTC))
    try:
        async with connected(vtn, session_factory, planner, clock, programmes) as connection:
            yield Rig(vtn, connection, planner, session_factory, clock)
    finally:
        await vtn.stop()


def stored_answers(
    sessions: sessionmaker[Session], event_id: str
) -> list[tuple[int, str, int, bool, bool]]:
    """(modification, opt, code, required, sent) of every stored answer, in order."""
    with unit_of_work(sessions) as session:
        found = session.execute(
            select(
                rows.Event.modification_number,
                rows.EventResponse.opt,
                rows.EventResponse.response_code,
                rows.EventResponse.required,
                rows.EventResponse.sent_at,
            )
            .join(rows.EventResponse.event)
            .where(rows.Event.event_id == event_id)
            .order_by(rows.EventResponse.id)
        )
        return [(n, o, c, r, s is not None) for n, o, c, r, s in found]


def forget_acknowledgement(sessions: sessionmaker[Session], event_id: str) -> None:
    """As if the process had stopped before the VTN acknowledged the newest answer."""
    with unit_of_work(sessions) as session:
        row = store.event_row(session, VTN_ID, event_id, 0)
        assert row is not None
        row.responses[-1].sent_at = None


# -- modification numbers -------------------------------------------------------------------


async def test_rule_higher_modification_replaces(session_factory: sessionmaker[Session]) -> None:
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start, intervals=((HOUR, 1.0),)))
        await rig.send(
            event_dict("EVT-1", start_at=start, modification_number=1, intervals=((HOUR, 3.0),))
        )
        latest = rig.stored("EVT-1")
        assert latest is not None
        assert (latest.modification_number, latest.signals[0].intervals[0].value) == (1, 3.0)
        assert calls_for(rig.planner, "EVT-1") == [0, 1], "each new version is decided"
        assert rig.got("EVT-1") == [(0, "optIn", 200), (1, "optIn", 200)]


async def test_a_modification_of_an_event_in_force_that_cannot_be_kept_whole_is_declined(
    session_factory: sessionmaker[Session],
) -> None:
    """The event is judged whole on its latest version: a new version of an event in force
    is answered optOut without the planner when the VEN declined the one before (joining
    partway cannot deliver the past) or when it raises the ask of an interval already
    started. One not started yet, or one that asks less of the past, is decided again."""
    first_values = {"IN-FORCE": 1.0, "LATER": 1.0, "TAKEN": 1.0, "RAISED": 1.0}
    new_values = {"IN-FORCE": 0.5, "LATER": 0.5, "TAKEN": 0.5, "RAISED": 2.0}
    async with running(session_factory) as rig:
        rig.planner.answers["IN-FORCE"] = OptDecision("optOut", "not enough flexible load")
        rig.planner.answers["LATER"] = OptDecision("optOut", "not enough flexible load")
        starts = {"IN-FORCE": rig.start(-0.25), "LATER": rig.start(), "TAKEN": rig.start(-0.25)}
        starts["RAISED"] = starts["TAKEN"]
        for version, values in ((0, first_values), (1, new_values)):
            if version == 1:
                rig.planner.answers.clear()  # the planner would now say optIn to each
            for event_id, start in starts.items():
                await rig.send(
                    event_dict(
                        event_id,
                        start_at=start,
                        modification_number=version,
                        duration=2 * HOUR,
                        intervals=((HOUR, values[event_id]), (HOUR, values[event_id])),
                    )
                )
        assert calls_for(rig.planner, "IN-FORCE") == [0]
        assert rig.got("IN-FORCE") == [(0, "optOut", 200), (1, "optOut", 200)]
        [reason] = [r for n, _, r in answers(session_factory, "IN-FORCE") if n == 1]
        assert "joining partway" in reason
        assert calls_for(rig.planner, "RAISED") == [0]
        assert rig.got("RAISED") == [(0, "optIn", 200), (1, "optOut", 200)]
        [reason] = [r for n, _, r in answers(session_factory, "RAISED") if n == 1]
        assert "raises the ask of intervals already started" in reason
        assert "SIMPLE interval 0" in reason and "interval 1" not in reason, "1 is to come"
        assert calls_for(rig.planner, "LATER") == [0, 1]
        assert rig.got("LATER") == [(0, "optOut", 200), (1, "optIn", 200)]
        assert calls_for(rig.planner, "TAKEN") == [0, 1]
        assert rig.got("TAKEN") == [(0, "optIn", 200), (1, "optIn", 200)]


async def test_rule_12_equal_modification_is_no_change_and_answered_from_the_store(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        event = event_dict("EVT-1", start_at=rig.start())
        await rig.send(event)
        again = await rig.send(event)
        assert calls_for(rig.planner, "EVT-1") == [0], "not decided again"
        assert rig.got("EVT-1") == [(0, "optIn", 200), (0, "optIn", 200)]
        assert rig.answered_under(again) == [("EVT-1", 0, "optIn", 200)]
        assert stored_answers(session_factory, "EVT-1") == [(0, "optIn", 200, True, True)]


async def test_rule_lower_modification_is_answered_450(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start, modification_number=2))
        await rig.send(event_dict("EVT-1", start_at=start, modification_number=1))
        assert rig.got("EVT-1") == [(2, "optIn", 200), (1, "optOut", 450)]
        assert calls_for(rig.planner, "EVT-1") == [2], "an old version is not decided"
        latest = rig.stored("EVT-1")
        assert latest is not None and latest.modification_number == 2


async def test_rule_lower_modification_than_a_cancellation_is_answered_450(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start))
        await rig.send(
            event_dict("EVT-1", start_at=start, modification_number=1, status="cancelled")
        )
        await rig.send(event_dict("EVT-1", start_at=start))
        assert rig.got("EVT-1") == [(0, "optIn", 200), (1, "optIn", 200), (0, "optOut", 450)]
        latest = rig.stored("EVT-1")
        assert latest is not None and latest.cancelled, "the event stays cancelled"


# -- cancellation --------------------------------------------------------------------------


async def test_rule_cancellation_is_acknowledged_without_the_planner(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        start = rig.start(hours=-0.5)  # active now
        await rig.send(event_dict("EVT-1", start_at=start, status="active"))
        await rig.send(
            event_dict("EVT-1", start_at=start, modification_number=1, status="cancelled")
        )
        assert rig.got("EVT-1") == [(0, "optIn", 200), (1, "optIn", 200)]
        assert calls_for(rig.planner, "EVT-1") == [0]
        latest = rig.stored("EVT-1")
        assert latest is not None and not latest.is_active_at(rig.clock.now())


async def test_rule_resent_cancelled_event_does_not_opt_out_the_others(
    session_factory: sessionmaker[Session],
) -> None:
    """openleadr raises KeyError on a cancelled event sent again and opts out of every event
    in that message (pitfall 3); here the cancelled one is no change and the others stand."""
    async with running(session_factory) as rig:
        start = rig.start()
        cancelled = event_dict("EVT-1", start_at=start, modification_number=1, status="cancelled")
        await rig.send(event_dict("EVT-1", start_at=start))
        await rig.send(cancelled)
        await rig.send(cancelled, event_dict("EVT-2", start_at=start))
        await rig.send(cancelled, event_dict("EVT-2", start_at=start))
        assert rig.got("EVT-1") == [(0, "optIn", 200)] + [(1, "optIn", 200)] * 3, (
            "the cancellation is acknowledged again each time it is sent (rule 12)"
        )
        assert rig.got("EVT-2") == [(0, "optIn", 200)] * 2
        assert calls_for(rig.planner, "EVT-2") == [0]


async def test_rule_event_missing_from_a_distribution_is_cancelled_by_implication(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start), event_dict("EVT-2", start_at=start))
        await rig.send(event_dict("EVT-2", start_at=start))
        first, second = rig.stored("EVT-1"), rig.stored("EVT-2")
        assert first is not None and second is not None
        assert first.cancelled and first.implied_cancel_at is not None
        assert not first.is_active_at(start + timedelta(minutes=1))
        assert not second.cancelled and second.is_active_at(start + timedelta(minutes=1))
        assert rig.got("EVT-2") == [(0, "optIn", 200)] * 2, "the kept event is answered again"
        assert calls_for(rig.planner, "EVT-2") == [0], "from the store"


async def test_rule_empty_distribution_cancels_every_event_by_implication(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start), event_dict("EVT-2", start_at=start))
        await rig.send()
        for event_id in ("EVT-1", "EVT-2"):
            event = rig.stored(event_id)
            assert event is not None and event.implied_cancel_at is not None


async def test_rule_an_ended_event_missing_from_a_distribution_is_not_cancelled(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        start = rig.start(hours=-0.5)
        await rig.send(event_dict("EVT-1", start_at=start, status="active"))
        rig.clock.advance(HOUR.total_seconds())  # the event ended a half hour ago
        await rig.send()
        event = rig.stored("EVT-1")
        assert event is not None and event.implied_cancel_at is None


# -- randomisation ---------------------------------------------------------------------------


async def test_rule_startafter_randomises_the_start(session_factory: sessionmaker[Session]) -> None:
    window = timedelta(minutes=10)
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start, start_after=window))
        event = rig.stored("EVT-1")
        assert event is not None
        assert event.start_after_s == window.total_seconds()
        assert 0 < event.start_offset_s < window.total_seconds()
        assert not event.is_active_at(start), "not before the randomised start"
        assert event.is_active_at(event.effective_start_at)
        assert event.end_at == event.effective_start_at + HOUR, "the duration is kept"


async def test_rule_startafter_randomises_the_end_of_a_cancelled_event(
    session_factory: sessionmaker[Session],
) -> None:
    window = timedelta(minutes=10)
    async with running(session_factory) as rig:
        start = rig.start(hours=-0.5)
        await rig.send(event_dict("EVT-1", start_at=start, status="active", start_after=window))
        received_at = rig.clock.now()
        await rig.send(
            event_dict(
                "EVT-1",
                start_at=start,
                modification_number=1,
                status="cancelled",
                start_after=window,
            )
        )
        event = rig.stored("EVT-1")
        assert event is not None and event.cancel_effective_at is not None
        delay = event.cancel_effective_at - received_at
        assert timedelta(0) < delay < window
        assert event.is_active_at(event.cancel_effective_at - timedelta(seconds=1))
        assert not event.is_active_at(event.cancel_effective_at)


# -- what an event asks ----------------------------------------------------------------------


async def test_rule_unknown_signal_name_is_answered_460(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        await rig.send(
            event_dict("EVT-1", start_at=rig.start(), signal_name="x-unknownSignal"),
            event_dict("EVT-2", start_at=rig.start()),
        )
        assert rig.got("EVT-1") == [(0, "optOut", 460)]
        assert rig.got("EVT-2") == [(0, "optIn", 200)]
        assert calls_for(rig.planner, "EVT-1") == [], "the planner is not asked"


async def test_rule_signals_outside_the_programme_mapping_are_answered_460(
    session_factory: sessionmaker[Session],
) -> None:
    dr = "http://utility.example/dr"
    programmes = [
        {
            "market_context": dr,
            "signal": [{"name": "SIMPLE", "type": "level", "action": "shed_fraction_by_level"}],
        }
    ]
    async with running(session_factory, programmes=programmes) as rig:
        start = rig.start()
        await rig.send(
            event_dict("EVT-MAPPED", start_at=start, market_context=dr),
            event_dict(
                "EVT-UNMAPPED",
                start_at=start,
                market_context=dr,
                signal_name="LOAD_DISPATCH",
                signal_type="delta",
            ),
            event_dict("EVT-OTHER", start_at=start, market_context="http://other.example/dr"),
        )
        assert rig.got("EVT-MAPPED") == [(0, "optIn", 200)]
        assert rig.got("EVT-UNMAPPED") == [(0, "optOut", 460)]
        assert rig.got("EVT-OTHER") == [(0, "optOut", 460)]
        assert [e.event_id for e in rig.planner.calls] == ["EVT-MAPPED"]


async def test_rule_duration_zero_is_open_ended(session_factory: sessionmaker[Session]) -> None:
    async with running(session_factory) as rig:
        start = rig.start()
        await rig.send(
            event_dict(
                "EVT-1", start_at=start, duration=timedelta(0), intervals=((timedelta(0), 2.0),)
            )
        )
        event = rig.stored("EVT-1")
        assert event is not None and event.end_at is None
        far = start + timedelta(days=400)
        assert event.is_active_at(far)
        interval = event.interval_at(event.signals[0], far)
        assert interval is not None and interval.value == 2.0


async def test_rule_response_required_never_sends_no_answer(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        await rig.send(
            event_dict("EVT-1", start_at=rig.start(), response_required="never"),
            event_dict("EVT-2", start_at=rig.start()),
        )
        assert rig.got("EVT-1") == []
        assert rig.got("EVT-2") == [(0, "optIn", 200)]
        assert stored_answers(session_factory, "EVT-1") == [(0, "optIn", 200, False, False)]


async def test_rule_response_required_always_answers_each_event_in_one_message(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        rig.planner.answers["EVT-2"] = OptDecision("optOut", "no flexible load")
        start = rig.start()
        await rig.send(event_dict("EVT-1", start_at=start), event_dict("EVT-2", start_at=start))
        assert rig.got("EVT-1") == [(0, "optIn", 200)]
        assert rig.got("EVT-2") == [(0, "optOut", 200)]
        assert stored_answers(session_factory, "EVT-2") == [(0, "optOut", 200, True, True)]


async def test_rule_intervals_are_located_from_the_start_plus_durations(
    session_factory: sessionmaker[Session],
) -> None:
    """Per-interval dtstart and currentValue are sent wrong on purpose: neither is used."""
    async with running(session_factory) as rig:
        start = rig.start()
        half = timedelta(minutes=30)
        await rig.send(
            event_dict(
                "EVT-1",
                start_at=start,
                intervals=((half, 1.0), (half, 3.0)),
                interval_dtstart=(start + HOUR, start - HOUR),
                current_value=3.0,
            )
        )
        event = rig.stored("EVT-1")
        assert event is not None
        signal = event.signals[0]
        first = event.interval_at(signal, start + timedelta(minutes=10))
        second = event.interval_at(signal, start + timedelta(minutes=40))
        assert first is not None and second is not None
        assert (first.value, second.value) == (1.0, 3.0)
        assert event.interval_at(signal, start + timedelta(minutes=61)) is None


async def test_rule_targets_name_sites_by_resource_id_or_the_whole_ven(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        ven_id = rig.connection.ven_id
        assert ven_id is not None
        start = rig.start()
        await rig.send(
            event_dict("EVT-RES", start_at=start, targets=[{"resource_id": "RES-B"}]),
            event_dict("EVT-VEN", start_at=start, targets=[{"ven_id": ven_id}]),
            event_dict("EVT-OTHER", start_at=start, targets=[{"ven_id": "SOMEONE-ELSE"}]),
        )
        by_resource, whole_ven, other = (
            rig.stored("EVT-RES"),
            rig.stored("EVT-VEN"),
            rig.stored("EVT-OTHER"),
        )
        assert by_resource is not None and whole_ven is not None and other is not None
        assert [by_resource.targets_resource(r, None) for r in ("site-a", "RES-B")] == [
            False,
            True,
        ]
        assert [whole_ven.targets_resource(r, None) for r in ("site-a", "RES-B")] == [True, True]
        assert [other.targets_resource(r, None) for r in ("site-a", "RES-B")] == [False, False]


async def test_rule_lower_case_vtn_id_is_tolerated(session_factory: sessionmaker[Session]) -> None:
    """openleadr answers 452 to every event of a VTN whose id is lower case (pitfall 7)."""
    async with running(session_factory, vtn_id="lower-case-vtn") as rig:
        await rig.send(event_dict("EVT-1", start_at=rig.start()))
        assert rig.got("EVT-1") == [(0, "optIn", 200)]


# -- crash windows ----------------------------------------------------------------------------


async def test_rule_an_answer_stored_but_never_acknowledged_is_sent_when_distributed_again(
    session_factory: sessionmaker[Session],
) -> None:
    """The process stopped after storing its answer and before the VTN acknowledged it."""
    async with running(session_factory) as rig:
        event = event_dict("EVT-1", start_at=rig.start())
        await rig.send(event)
        forget_acknowledgement(session_factory, "EVT-1")
        again = await rig.send(event)
        assert rig.got("EVT-1") == [(0, "optIn", 200), (0, "optIn", 200)]
        assert rig.answered_under(again) == [("EVT-1", 0, "optIn", 200)]
        assert calls_for(rig.planner, "EVT-1") == [0], "resent from the store, not decided again"
        assert stored_answers(session_factory, "EVT-1") == [(0, "optIn", 200, True, True)]
        assert await rig.connection.resend_unsent() == 0, "acknowledged now"


async def test_rule_a_version_stored_without_an_answer_is_decided_when_sent_again(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        event = event_dict("EVT-1", start_at=rig.start())
        await rig.send(event)
        with unit_of_work(session_factory) as session:
            row = store.event_row(session, VTN_ID, "EVT-1", 0)
            assert row is not None
            for response in list(row.responses):
                session.delete(response)
        await rig.send(event)
        assert calls_for(rig.planner, "EVT-1") == [0, 0]
        assert rig.got("EVT-1") == [(0, "optIn", 200), (0, "optIn", 200)]


# -- a change of plan ---------------------------------------------------------------------------


async def test_rule_42_a_change_of_plan_updates_the_opt_under_the_distributions_request_id(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        first = await rig.send(event_dict("EVT-1", start_at=rig.start()))
        event = rig.stored("EVT-1")
        assert event is not None
        changed = OptDecision("optOut", "plan changed: site-a is offline", predicted_kw=0.0)
        assert await rig.connection.update_opt(event, changed)
        assert rig.answered_under(first) == [
            ("EVT-1", 0, "optIn", 200),
            ("EVT-1", 0, "optOut", 200),
        ], "the change answers the distribution that carried the version"
        assert stored_answers(session_factory, "EVT-1") == [
            (0, "optIn", 200, True, True),
            (0, "optOut", 200, True, True),
        ]
        # The VTN distributes the event again: the new answer stands and is sent again.
        again = await rig.send(event_dict("EVT-1", start_at=event.start_at))
        assert rig.answered_under(again) == [("EVT-1", 0, "optOut", 200)]
        assert calls_for(rig.planner, "EVT-1") == [0]
        assert await rig.connection.resend_unsent() == 0


async def test_rule_42_an_answer_the_vtn_never_acknowledged_is_resent_under_its_request_id(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        request_id = await rig.send(event_dict("EVT-1", start_at=rig.start()))
        forget_acknowledgement(session_factory, "EVT-1")
        assert await rig.connection.resend_unsent() == 1
        assert await rig.connection.resend_unsent() == 0
        assert rig.got("EVT-1") == [(0, "optIn", 200), (0, "optIn", 200)]
        assert rig.answered_under(request_id) == [("EVT-1", 0, "optIn", 200)] * 2


# -- every event of every distribution (rules 12 and 62) ------------------------------------


async def test_rule_12_every_event_of_every_distribution_is_answered(
    session_factory: sessionmaker[Session],
) -> None:
    """As other VTNs write them: each distribution holds all current events (unchanged ones
    too), events carry no per-interval dtstart, a cancelled one stays in until it ends."""
    async with running(session_factory) as rig:
        rig.planner.answers["EVT-B"] = OptDecision("optOut", "no flexible load")
        start = rig.start()
        a, b, c = (event_dict(e, start_at=start) for e in ("EVT-A", "EVT-B", "EVT-C"))
        first = await rig.send(a, b, c)
        changed = event_dict("EVT-B", start_at=start, modification_number=1, intervals=((HOUR, 2),))
        cancelled = event_dict("EVT-C", start_at=start, modification_number=1, status="cancelled")
        new = event_dict("EVT-D", start_at=start)
        second = await rig.send(a, changed, cancelled, new)
        third = await rig.send(a, changed, cancelled, new)

        assert rig.answered_under(first) == [
            ("EVT-A", 0, "optIn", 200),
            ("EVT-B", 0, "optOut", 200),
            ("EVT-C", 0, "optIn", 200),
        ]
        unchanged_new_changed_cancelled = [
            ("EVT-A", 0, "optIn", 200),
            ("EVT-B", 1, "optOut", 200),
            ("EVT-C", 1, "optIn", 200),
            ("EVT-D", 0, "optIn", 200),
        ]
        assert rig.answered_under(second) == unchanged_new_changed_cancelled
        assert rig.answered_under(third) == unchanged_new_changed_cancelled
        assert len(rig.vtn.responses) == 3 + 4 + 4, "no answer under another requestID"
        assert [(e.event_id, e.modification_number) for e in rig.planner.calls] == [
            ("EVT-A", 0),
            ("EVT-B", 0),
            ("EVT-C", 0),
            ("EVT-B", 1),
            ("EVT-D", 0),
        ], "known versions are answered from the store, not decided again"
        assert await rig.connection.resend_unsent() == 0, "all acknowledged"


async def test_rule_62_events_sent_again_after_a_restart_are_answered_from_the_store(
    session_factory: sessionmaker[Session],
) -> None:
    """The VTN sends its current events again in answer to the ``oadrRequestEvent`` of a
    restarted VEN: each is answered again, with the stored decision."""
    vtn = ScriptedVtn("UTILITY-1", poll_interval_s=POLL_S)
    await vtn.start()
    planner = Planner()
    planner.answers["EVT-OUT"] = OptDecision("optOut", "no flexible load")
    clock = ManualClock(datetime.now(UTC))
    start = clock.now() + HOUR
    vtn.standing = [
        event_dict("EVT-IN", start_at=start),
        event_dict("EVT-OUT", start_at=start),
        event_dict("EVT-460", start_at=start, signal_name="x-unknownSignal"),
    ]
    try:
        async with connected(vtn, session_factory, planner, clock):
            before = vtn.distributions[-1].request_id
        async with connected(vtn, session_factory, planner, clock):
            after = vtn.distributions[-1].request_id
    finally:
        await vtn.stop()

    expected = [
        ("EVT-IN", 0, "optIn", 200),
        ("EVT-OUT", 0, "optOut", 200),
        ("EVT-460", 0, "optOut", 460),
    ]
    assert before != after and len(vtn.distributions) == 2
    assert answered_under(vtn, before) == expected
    assert answered_under(vtn, after) == expected, "every known event answered again"
    assert [e.event_id for e in planner.calls] == ["EVT-IN", "EVT-OUT"], "not decided again"
    assert stored_answers(session_factory, "EVT-OUT") == [(0, "optOut", 200, True, True)]


def answered_under(vtn: ScriptedVtn, request_id: str) -> list[tuple[str, int, str, int]]:
    return [
        (r.event_id, r.modification_number, r.opt_type, r.response_code)
        for r in vtn.responses
        if r.request_id == request_id
    ]


# -- requestIDs (rule 42) ---------------------------------------------------------------------


class GatedPlanner(Planner):
    """A planner that holds every answer until the test opens its gate."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, event: DrEvent) -> OptDecision:
        self.asked.set()
        await self.gate.wait()
        return await super().__call__(event)


async def test_rule_42_an_answer_stored_while_another_waits_goes_out_with_its_distribution(
    session_factory: sessionmaker[Session],
) -> None:
    """One message, one event answered at once (460) and one waiting for the planner; a
    plan round's resend comes in between. Before the fix the resend sent the stored 460
    alone under a requestID openleadr generated, and the distribution sent it again."""
    planner = GatedPlanner()
    async with running(session_factory, planner=planner) as rig:
        start = rig.start()
        rig.vtn.distribute(
            [
                event_dict("EVT-460", start_at=start, signal_name="x-unknownSignal"),
                event_dict("EVT-WAIT", start_at=start),
            ]
        )
        poll = asyncio.create_task(rig.connection._client._poll())
        try:
            await asyncio.wait_for(planner.asked.wait(), WAIT_S)
            assert stored_answers(session_factory, "EVT-460") == [
                (0, "optOut", 460, True, False)
            ], "the 460 answer is stored and unsent while the planner is held"
            resent = await rig.connection.resend_unsent()
        finally:
            planner.gate.set()
            await asyncio.wait_for(poll, WAIT_S)
            await asyncio.wait_for(rig.connection.settled(), WAIT_S)

        request_id = rig.vtn.distributions[-1].request_id
        assert resent == 0, "the resend leaves the distribution's answers to it"
        assert [(r.event_id, r.request_id) for r in rig.vtn.responses] == [
            ("EVT-460", request_id),
            ("EVT-WAIT", request_id),
        ], "each answer once, under the distribution's requestID"
        assert stored_answers(session_factory, "EVT-460") == [(0, "optOut", 460, True, True)]


# -- intervals against the active period (rule 8) -----------------------------------------


async def test_rule_8_intervals_that_do_not_fill_the_active_period_are_answered_459(
    session_factory: sessionmaker[Session],
) -> None:
    """Seen in the field: eight 8 h intervals (64 h) in a 24 h active period, sent as
    written (openleadr's own VTN would have stretched the active period)."""
    day = timedelta(hours=24)
    async with running(session_factory) as rig:
        start = rig.start()
        broken = event_dict(
            "EVT-64H", start_at=start, duration=day, intervals=((timedelta(hours=8), 1.0),) * 8
        )
        whole = event_dict(
            "EVT-24H", start_at=start, duration=day, intervals=((timedelta(hours=8), 1.0),) * 3
        )
        await rig.send(broken, whole)
        await rig.send(broken, whole)

        assert rig.got("EVT-64H") == [(0, "optOut", 459)] * 2
        assert rig.got("EVT-24H") == [(0, "optIn", 200)] * 2
        assert calls_for(rig.planner, "EVT-64H") == [], "the planner is not asked"
        stored = rig.stored("EVT-64H")
        assert stored is not None and stored.duration_s == day.total_seconds()
        with unit_of_work(session_factory) as session:
            taking_part = [(p.event, p.opt) for p in store.participations(session, VTN_ID)]
        asked = event_requests(
            taking_part,
            [replace(site_view("site-a"), vtn_id=VTN_ID)],
            {"site-a": 30.0},
            rig.clock.now(),
            horizon_s=2 * HOUR.total_seconds(),
            policy=SignalPolicy(),
        )
        assert {r.source for r in asked} == {f"{VTN_ID}/EVT-24H"}, "EVT-64H moves no load"


# -- one writer per answer ----------------------------------------------------------------------


async def test_one_writer_an_answer_awaiting_acknowledgement_is_not_resent_meanwhile(
    session_factory: sessionmaker[Session],
) -> None:
    """The VTN holds its acknowledgement of the answer; a plan round's resend comes in
    between and must not send the same stored answer a second time (commit d7266b9)."""
    async with running(session_factory) as rig:
        service = rig.vtn.server.services["event_service"]
        acknowledge = service.handlers["oadrCreatedEvent"]
        arrived, release = asyncio.Event(), asyncio.Event()

        async def held(payload: dict[str, Any]) -> Any:
            arrived.set()
            await release.wait()
            return await acknowledge(payload)

        service.handlers["oadrCreatedEvent"] = held
        rig.vtn.distribute([event_dict("EVT-1", start_at=rig.start())])
        poll = asyncio.create_task(rig.connection._client._poll())
        try:
            await asyncio.wait_for(arrived.wait(), WAIT_S)
            assert stored_answers(session_factory, "EVT-1") == [(0, "optIn", 200, True, False)]
            resent = await rig.connection.resend_unsent()
        finally:
            release.set()
            await asyncio.wait_for(poll, WAIT_S)
            await asyncio.wait_for(rig.connection.settled(), WAIT_S)

        assert resent == 0
        assert rig.got("EVT-1") == [(0, "optIn", 200)]
        assert stored_answers(session_factory, "EVT-1") == [(0, "optIn", 200, True, True)]
