"""The VEN against a real simulated VTN on an OS-assigned port, with a real database.

Every test runs on SQLite and on PostgreSQL (the ``session_factory`` fixture). The VTN asks
for a 1 s poll, the shortest OpenADR can express (durations travel in whole seconds), and the
VEN polls at the rate the VTN asks for. Conditions are awaited with a bounded polling loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.db import unit_of_work
from gateway.errors import ConfigError, GatewayError
from gateway.events import DrEvent, EventInterval, EventSignal, EventTarget, OptDecision
from gateway.settings_vtn import VtnSettings
from gateway.ven import store
from gateway.ven.client import VenConnection
from simulators.vtn import SimulatedVtn
from tests.support.ven import POLL_S, SITES, VTN_ID, Planner, answers, event_spec, site, versions
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    clock: ManualClock
    vtn: SimulatedVtn
    connection: VenConnection
    planner: Planner
    power_kw: dict[str, float] = field(default_factory=dict)


@pytest.fixture
def clock() -> ManualClock:
    """Simulated time starting at the present: openleadr judges event status on the wall."""
    return ManualClock(datetime.now(UTC))


@asynccontextmanager
async def running(
    clock: ManualClock, session_factory: sessionmaker[Session], **vtn_options: Any
) -> AsyncIterator[Rig]:
    vtn = SimulatedVtn(clock, poll_interval_s=POLL_S, **vtn_options)
    await vtn.start()
    planner = Planner()
    power_kw = {"site-a": 40.0}
    connection = VenConnection(
        VtnSettings(id=VTN_ID, url=vtn.url, ven_name="dr-gateway-test"),
        SITES,
        clock,
        session_factory,
        planner,
        power_kw.get,
        report_interval_s=1,
    )
    try:
        await connection.start()
        yield Rig(clock, vtn, connection, planner, power_kw)
    finally:
        await connection.stop()
        await vtn.stop()


def values(event: DrEvent) -> list[tuple[int, float, float]]:
    return [(i.position, i.duration_s, i.value) for i in event.signals[0].intervals]


# -- registration and telemetry ----------------------------------------------------------


async def test_ven_registers_and_telemetry_of_each_site_reaches_the_vtn(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    async with running(clock, session_factory) as rig:
        ven_id = rig.connection.ven_id
        assert ven_id is not None and ven_id in rig.vtn.registrations
        assert rig.connection.registration_id == rig.vtn.registrations[ven_id].registration_id
        assert rig.connection.available

        def readings(resource_id: str) -> list[Any]:
            return [r for r in rig.vtn.telemetry if r.resource_id == resource_id]

        await wait_for(lambda: readings("site-a"), "telemetry of site-a")
        first = readings("site-a")[0]
        assert (first.measurement, first.unit, first.value) == ("RealPower", "kW", 40.0)
        assert (first.ven_id, first.at) == (ven_id, clock.now())
        assert readings("RES-B") == [], "an unknown value is not reported"

        rig.power_kw["site-b"] = 7.5
        await wait_for(lambda: readings("RES-B"), "telemetry of site-b under its resource id")
        assert readings("RES-B")[0].value == 7.5


# -- events --------------------------------------------------------------------------------


async def test_events_are_stored_decided_once_and_answered_in_and_out(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    async with running(clock, session_factory) as rig:
        rig.planner.answers["EVT-B"] = OptDecision("optOut", "no flexible load left at RES-B")
        rig.vtn.add_event_now(event_spec(clock, resource_ids=("site-a",)), event_id="EVT-A")
        rig.vtn.add_event_now(
            event_spec(clock, signal_name="LOAD_DISPATCH", signal_type="delta", intervals=(-20.0,)),
            event_id="EVT-B",
        )
        await wait_for(lambda: rig.vtn.opts_for("EVT-A") and rig.vtn.opts_for("EVT-B"), "both opts")

        assert [(o.opt_type, o.modification_number) for o in rig.vtn.opts_for("EVT-A")] == [
            ("optIn", 0)
        ]
        assert [(o.opt_type, o.modification_number) for o in rig.vtn.opts_for("EVT-B")] == [
            ("optOut", 0)
        ]
        assert len(rig.planner.calls_for("EVT-A")) == 1
        assert len(rig.planner.calls_for("EVT-B")) == 1

        (a,) = versions(session_factory, "EVT-A")
        assert (a.vtn_id, a.modification_number, a.duration_s) == (VTN_ID, 0, 3600.0)
        assert a.signals[0].signal_name == "SIMPLE"
        assert values(a) == [(0, 1800.0, 1.0), (1, 1800.0, 2.0)]
        assert a.targets == (EventTarget("resource_id", "site-a"),)
        assert a == rig.planner.calls_for("EVT-A")[0]
        (b,) = versions(session_factory, "EVT-B")
        assert b.signals[0].signal_type == "delta"
        assert b.targets == (EventTarget("ven_id", str(rig.connection.ven_id)),)
        assert answers(session_factory, "EVT-A") == [(0, "optIn", "enough flexible load")]
        assert answers(session_factory, "EVT-B") == [
            (0, "optOut", "no flexible load left at RES-B")
        ]

        number = rig.vtn.modify("EVT-A", (3.0, 0.0))
        await wait_for(
            lambda: any(o.modification_number == number for o in rig.vtn.opts_for("EVT-A")),
            "the opt for the modified event",
        )

        assert [v.modification_number for v in versions(session_factory, "EVT-A")] == [0, 1]
        assert len(rig.planner.calls_for("EVT-A")) == 2
        assert len(rig.planner.calls_for("EVT-B")) == 1, "an unchanged version is not re-decided"
        with unit_of_work(session_factory) as session:
            latest = {e.event_id: e for e in store.latest_events(session, VTN_ID)}
            assert store.load_event(session, VTN_ID, "EVT-A") == latest["EVT-A"]
        assert latest["EVT-A"].modification_number == 1
        assert values(latest["EVT-A"]) == [(0, 1800.0, 3.0), (1, 1800.0, 0.0)]
        assert latest["EVT-B"].modification_number == 0
        assert [n for n, _, _ in answers(session_factory, "EVT-A")] == [0, 1]


async def test_cancellation_is_acknowledged_and_a_resent_one_does_not_opt_out_others(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    """openadr-notes pitfall 3: the VTN keeps sending the cancelled event; the new test event
    in the same message must still get the planner's answer, not openleadr's blanket optOut."""
    async with running(clock, session_factory, resend_cancelled=True) as rig:
        rig.vtn.add_event_now(event_spec(clock), event_id="EVT-A")
        await wait_for(lambda: rig.vtn.opts_for("EVT-A"), "the opt for EVT-A")

        number = rig.vtn.cancel("EVT-A")
        await wait_for(
            lambda: any(o.modification_number == number for o in rig.vtn.opts_for("EVT-A")),
            "the acknowledgement of the cancellation",
        )

        assert rig.vtn.opts_for("EVT-A")[-1].opt_type == "optIn"
        assert len(rig.planner.calls_for("EVT-A")) == 1, "a cancellation is not decided"
        assert [(v.modification_number, v.status) for v in versions(session_factory, "EVT-A")] == [
            (0, "far"),
            (1, "cancelled"),
        ]
        assert answers(session_factory, "EVT-A")[-1] == (1, "optIn", "cancellation acknowledged")

        ven_id = str(rig.connection.ven_id)
        assert any(e.event_descriptor.event_id == "EVT-A" for e in rig.vtn.server.events[ven_id]), (
            "the simulated VTN keeps distributing the cancelled event"
        )
        rig.planner.answers["EVT-T"] = OptDecision("optIn", "test event: answered, no load moved")
        rig.vtn.add_event_now(event_spec(clock, test_event=True), event_id="EVT-T")
        await wait_for(lambda: rig.vtn.opts_for("EVT-T"), "the opt for the test event")

        assert [o.opt_type for o in rig.vtn.opts_for("EVT-T")] == ["optIn"]
        (call,) = rig.planner.calls_for("EVT-T")
        assert call.test_event
        (stored,) = versions(session_factory, "EVT-T")
        assert stored.test_event
        assert answers(session_factory, "EVT-T") == [
            (0, "optIn", "test event: answered, no load moved")
        ]
        assert len(rig.planner.calls_for("EVT-A")) == 1


async def test_scenario_events_are_issued_on_the_injected_clock(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    surplus = event_spec(
        clock,
        issue_at=clock.now() + timedelta(minutes=1),
        start_at=clock.now() + timedelta(hours=2),
        duration_s=1800,
        signal_name="LOAD_DISPATCH",
        signal_type="delta",
        intervals=(25.0, 10.0),
        interval_durations_s=(600, 1200),
        kind="surplus",
    )
    async with running(clock, session_factory, scenario=[surplus]) as rig:
        task = asyncio.create_task(rig.vtn.run_scenario())
        try:
            await asyncio.sleep(0.1)
            assert rig.vtn.issued == [], "not issued before its time on the simulated clock"
            clock.advance(60)
            await wait_for(task.done, "the scenario to be issued")
            await task
        finally:
            task.cancel()

        (issued,) = rig.vtn.issued
        assert (issued.spec, issued.ven_id) == (surplus, rig.connection.ven_id)
        await wait_for(lambda: rig.vtn.opts_for(issued.event_id), "the opt for the scenario event")
        (stored,) = versions(session_factory, issued.event_id)
        assert values(stored) == [(0, 600.0, 25.0), (1, 1200.0, 10.0)]
        assert stored.start_at == surplus.start_at


# -- failures --------------------------------------------------------------------------------


async def test_unreachable_vtn_raises_gateway_error_and_leaves_nothing_running(
    clock: ManualClock,
) -> None:
    vtn = SimulatedVtn(clock)
    await vtn.start()
    url = vtn.url
    await vtn.stop()  # the port is closed again
    connection = VenConnection(
        VtnSettings(id=VTN_ID, url=url, ven_name="dr-gateway-test"),
        SITES,
        clock,
        sessionmaker(),  # never reached
        Planner(),
        lambda site_id: None,
    )

    with pytest.raises(GatewayError, match="not reachable"):
        await connection.start()

    assert not connection.available
    assert connection.ven_id is None and connection.registration_id is None
    await connection.stop()


CONFIG_CASES = [
    pytest.param({"report_interval_s": 7}, "report_interval_s = 7", id="7 s does not divide 60"),
    pytest.param({"report_interval_s": 0.5}, "report_interval_s = 0.5", id="fractions of a s"),
    pytest.param({"report_interval_s": 90}, "report_interval_s = 90", id="90 s is no whole minute"),
    pytest.param(
        {"sites": (site("site-c", vtn="other"),)}, "served by VTN 'other'", id="another VTN's site"
    ),
    pytest.param(
        {"sites": (site("a", resource_id="R"), site("b", resource_id="R"))},
        "share the OpenADR resource id 'R'",
        id="shared resource id",
    ),
]


@pytest.mark.parametrize(("options", "message"), CONFIG_CASES)
def test_bad_connection_settings_are_refused(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "vtn": VtnSettings(id=VTN_ID, url="http://127.0.0.1:9/", ven_name="gw"),
        "sites": SITES,
        "clock": ManualClock(datetime.now(UTC)),
        "session_factory": sessionmaker(),
        "decide": Planner(),
        "telemetry_kw": lambda site_id: None,
    } | options
    with pytest.raises(ConfigError, match=message):
        VenConnection(**arguments)


# -- the event handler on its own (what openleadr calls) ---------------------------------------


def raw_event(event_id: str = "EVT-H", number: int = 0, **descriptor: Any) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(hours=1)
    return {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": number,
            "market_context": "http://utility.example/dr",
            "event_status": "far",
            **descriptor,
        },
        "active_period": {"dtstart": start, "duration": timedelta(minutes=30)},
        "event_signals": [
            {
                "signal_id": "s",
                "signal_name": "SIMPLE",
                "signal_type": "level",
                "intervals": [{"duration": timedelta(minutes=30), "signal_payload": 2.0}],
            }
        ],
        "targets": [{"ven_id": "VEN-1"}],
        "response_required": "always",
    }


def offline_connection(
    clock: ManualClock, session_factory: sessionmaker[Session], planner: Planner
) -> VenConnection:
    return VenConnection(
        VtnSettings(id=VTN_ID, url="http://127.0.0.1:9/", ven_name="gw"),
        SITES,
        clock,
        session_factory,
        planner,
        lambda site_id: None,
    )


async def test_a_version_seen_again_is_answered_from_the_store_even_after_a_restart(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    planner = Planner()
    planner.answers["EVT-H"] = OptDecision("optOut", "site busy")

    async def opts(connection: VenConnection) -> list[tuple[str, int]]:
        handled = await connection._events.distribution.handle([raw_event()], "REQ-1")
        return [(a.opt, a.response_code) for a in handled.to_send]

    first = offline_connection(clock, session_factory, planner)
    assert await opts(first) == [("optOut", 200)]
    # Never acknowledged (no VTN here): the stored answer goes out again, undecided.
    assert await opts(first) == [("optOut", 200)]
    restarted = offline_connection(clock, session_factory, planner)
    assert await opts(restarted) == [("optOut", 200)]

    assert len(planner.calls) == 1
    assert answers(session_factory, "EVT-H") == [(0, "optOut", "site busy")]


async def test_the_handler_never_raises_into_openleadr(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    """openleadr opts out of every event in a message when a handler raises."""

    class FailingOnce(Planner):
        async def __call__(self, event: DrEvent) -> OptDecision:
            if not self.calls:
                self.calls.append(event)
                raise RuntimeError("planner crashed")
            return await super().__call__(event)

    planner = FailingOnce()
    connection = offline_connection(clock, session_factory, planner)
    malformed = raw_event("EVT-M")
    del malformed["active_period"]

    handled = await connection._events.distribution.handle([malformed, raw_event()], "REQ-1")
    assert [(a.event_id, a.opt, a.response_code) for a in handled.to_send] == [
        ("EVT-M", "optOut", 454),
        ("EVT-H", "optOut", 200),
    ], "a malformed event is answered 454 and the other one still decided"
    assert len(planner.calls) == 1, "a malformed event is not decided"
    assert answers(session_factory, "EVT-H") == [
        (0, "optOut", "the planner failed: RuntimeError: planner crashed")
    ]


# -- the store on its own ----------------------------------------------------------------------


def stored_event(number: int, status: str = "far", vtn_id: str = VTN_ID) -> DrEvent:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    return DrEvent(
        vtn_id=vtn_id,
        event_id="EVT-S",
        modification_number=number,
        status=status,  # type: ignore[arg-type]
        market_context="http://utility.example/dr",
        start_at=start,
        duration_s=0.0,
        signals=(
            EventSignal(
                "s",
                "ELECTRICITY_PRICE",
                "price",
                (EventInterval(0, 0.0, -0.02, uid="0"),),
                units="EUR",
            ),
        ),
        targets=(EventTarget("resource_id", "b"), EventTarget("resource_id", "a")),
        priority=2,
        ramp_up_s=60.0,
        start_after_s=120.0,
        created_at=start - timedelta(days=1),
    )


def test_store_keeps_one_row_per_version_and_reads_back_the_newest(
    session_factory: sessionmaker[Session],
) -> None:
    received_at = datetime(2029, 12, 31, tzinfo=UTC)
    with unit_of_work(session_factory) as session:
        first, created = store.save_event(session, stored_event(0), received_at)
        again, created_again = store.save_event(session, stored_event(0), received_at)
        assert (created, created_again, again.id) == (True, False, first.id)
        store.save_event(session, stored_event(1, "cancelled"), received_at)
        store.save_event(session, stored_event(0, vtn_id="OTHER"), received_at)
        assert store.last_response(session, VTN_ID, "EVT-S", 0) is None
        store.save_response(session, first, OptDecision("optOut", "first"), received_at)
        store.save_response(session, first, OptDecision("optIn", "second", 200), received_at)

    with unit_of_work(session_factory) as session:
        assert store.last_response(session, VTN_ID, "EVT-S", 0) == OptDecision("optIn", "second")
        assert store.last_response(session, VTN_ID, "EVT-S", 1) is None
        assert store.load_event(session, VTN_ID, "EVT-S") == stored_event(1, "cancelled")
        assert store.load_event(session, VTN_ID, "nope") is None
        assert store.latest_events(session, VTN_ID) == [stored_event(1, "cancelled")]
        assert {(e.vtn_id, e.modification_number) for e in store.latest_events(session)} == {
            (VTN_ID, 1),
            ("OTHER", 0),
        }
        row = store.event_row(session, VTN_ID, "EVT-S", 0)
        assert row is not None and row.received_at == received_at


def test_store_keeps_the_request_id_and_predicted_power_of_each_answer(
    session_factory: sessionmaker[Session],
) -> None:
    at = datetime(2029, 12, 31, tzinfo=UTC)
    decision = OptDecision("optIn", "enough flexible load", predicted_kw=12.5)
    with unit_of_work(session_factory) as session:
        row, _ = store.save_event(session, stored_event(0), at)
        response = store.save_response(session, row, decision, at, request_id="REQ-7")
        response_id = response.id
    with unit_of_work(session_factory) as session:
        stored = store.last_answer(session, VTN_ID, "EVT-S", 0)
        assert stored is not None
        assert (stored.decision, stored.request_id, stored.sent_at) == (decision, "REQ-7", None)
        store.mark_sent(session, [response_id], at)
    with unit_of_work(session_factory) as session:
        store.owe_again(session, response_id, "REQ-8")
    with unit_of_work(session_factory) as session:
        again = store.last_answer(session, VTN_ID, "EVT-S", 0)
        assert again is not None
        assert (again.decision, again.request_id, again.sent_at) == (decision, "REQ-8", None), (
            "answered again: the same decision, owed to the new distribution"
        )
