"""Every event field bounded where it is parsed (``gateway/ven/limits.py``), ids kept as text
and escaped in the answers, and one bad event never poisoning another event, another
distribution or the daemon (issue 12, findings 2 and 4).

The end-to-end tests run a real VEN against the scripted openleadr VTN on loopback
(``tests/integration/test_ven_conformance.py``'s rig), on SQLite and PostgreSQL;
``docs/conformance.md`` ("Bounds of an event") lists the limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openleadr.messaging import create_message, validate_xml_schema
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.daemon.gateway import Gateway
from gateway.db import unit_of_work
from gateway.events import LATEST_AT, DrEvent, EventInterval, EventSignal, shifted
from gateway.settings import Settings, parse_settings
from gateway.ven import limits, store
from gateway.ven.adapter import MalformedEventError, parse_event
from gateway.ven.answers import Answer
from gateway.ven.wire import created_event_payload, escape, escaped
from gateway.web.app import make_app
from models import event as rows
from simulators.scripted_vtn import ScriptedVtn, event_dict, render_distribution
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from tests.integration.test_ven_conformance import connected, running
from tests.support.openleadr_events import raw_event
from tests.support.ven import Planner

HOUR = timedelta(hours=1)
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
TOKEN = "bounds-test-token-abcdefghijklmnop"
VTN = "utility"


# -- the bounds, field by field ---------------------------------------------------------------

_LONG = "x" * (limits.MAX_EVENT_ID_CHARS + 1)
OUT_OF_BOUNDS = [
    pytest.param(
        {"active_period__dtstart": FAR_FUTURE}, "active_period.dtstart", id="dtstart 9999-12-31"
    ),
    pytest.param(
        {"active_period__dtstart": datetime(1999, 12, 31, tzinfo=UTC)},
        "active_period.dtstart",
        id="dtstart 1999",
    ),
    pytest.param(
        {"active_period__dtstart": datetime(2099, 12, 31, 23, 50, tzinfo=UTC)},
        "active_period: ends after 2100-01-01",
        id="ends after 2100",
    ),
    pytest.param(
        {"event_descriptor__created_date_time": datetime(2100, 6, 1, tzinfo=UTC)},
        "event_descriptor.created_date_time",
        id="created 2100",
    ),
    pytest.param(
        {"active_period__duration": timedelta(days=32)},
        "active_period.duration: duration 32 days",
        id="event of 32 days",
    ),
    pytest.param(
        {"event_signals__0__intervals__0__duration": timedelta(days=400)},
        "event_signals[0].intervals[0].duration",
        id="interval of 400 days",
    ),
    pytest.param(
        {"active_period__tolerance": {"tolerate": {"startafter": timedelta(days=40)}}},
        "active_period.tolerance.tolerate.startafter",
        id="startafter of 40 days",
    ),
    pytest.param(
        {"event_descriptor__event_id": _LONG},
        "event_descriptor.event_id: 129 characters",
        id="event id too long",
    ),
    pytest.param(
        {"event_descriptor__modification_number": 2**31},
        "event_descriptor.modification_number",
        id="modification number over INTEGER",
    ),
    pytest.param(
        {"event_descriptor__priority": 2**32 - 1},
        "event_descriptor.priority",
        id="priority over INTEGER",
    ),
    pytest.param(
        {"event_signals__0__intervals__0__signal_payload": float("inf")},
        "event_signals[0].intervals[0].signal_payload",
        id="infinite payload",
    ),
    pytest.param(
        {"event_signals__0__intervals__0__signal_payload": float("nan")},
        "event_signals[0].intervals[0].signal_payload",
        id="NaN payload",
    ),
    pytest.param(
        {"event_signals__0__intervals__0__signal_payload": 10**400},
        "event_signals[0].intervals[0].signal_payload",
        id="payload of 400 digits",
    ),
    pytest.param(
        {"event_signals__0__intervals__0__uid": "9" * 129},
        "event_signals[0].intervals[0].uid: 129 characters",
        id="uid too long",
    ),
    pytest.param(
        {"targets": [{"resource_id": f"r{i}"} for i in range(limits.MAX_TARGETS + 1)]},
        "targets: 1001 items",
        id="too many targets",
    ),
]


@pytest.mark.parametrize(("changes", "message"), OUT_OF_BOUNDS)
def test_a_field_out_of_bounds_is_malformed_naming_it(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedEventError) as caught:
        parse_event(raw_event(**changes), VTN)
    assert message in str(caught.value)


def test_too_many_intervals_or_signals_are_malformed() -> None:
    many = [
        {"duration": timedelta(seconds=1), "signal_payload": 1.0}
        for _ in range(limits.MAX_INTERVALS + 1)
    ]
    raw = raw_event()
    raw["event_signals"][0]["intervals"] = many
    with pytest.raises(MalformedEventError, match=r"intervals: 1001 items"):
        parse_event(raw, VTN)
    raw = raw_event()
    raw["event_signals"] = [raw["event_signals"][0]] * (limits.MAX_SIGNALS + 1)
    with pytest.raises(MalformedEventError, match=r"event_signals: 33 items"):
        parse_event(raw, VTN)


def test_the_limits_themselves_are_accepted() -> None:
    raw = raw_event(
        event_descriptor__event_id="e" * limits.MAX_EVENT_ID_CHARS,
        event_descriptor__modification_number=limits.MAX_INTEGER,
        active_period__dtstart=limits.EARLIEST_START_AT,
        active_period__duration=timedelta(seconds=limits.MAX_DURATION_S),
        event_signals__0__intervals__0__duration=timedelta(seconds=limits.MAX_DURATION_S),
        event_signals__0__intervals__0__signal_payload=-limits.MAX_ABS_PAYLOAD,
        event_signals__0__intervals__0__uid="1" * 60,
    )
    event = parse_event(raw, VTN)
    assert event.modification_number == limits.MAX_INTEGER
    assert event.signals[0].intervals[0].uid == "1" * 60


# -- stored dates: arithmetic never raises ------------------------------------------------------


def _far_event(event_id: str, start_at: datetime = FAR_FUTURE) -> DrEvent:
    return DrEvent(
        vtn_id=VTN,
        event_id=event_id,
        modification_number=0,
        status="far",
        market_context="http://utility.example/dr",
        start_at=start_at,
        duration_s=3600.0,
        signals=(EventSignal("S0", "SIMPLE", "level", (EventInterval(0, 3600.0, 1.0),)),),
        start_offset_s=86400.0,
    )


def test_arithmetic_on_a_stored_extreme_date_is_clamped() -> None:
    event = _far_event("FAR")
    assert event.effective_start_at == LATEST_AT
    assert event.end_at == LATEST_AT
    assert not event.is_over_at(datetime(2027, 1, 1, tzinfo=UTC))
    assert shifted(datetime(2027, 1, 1, tzinfo=UTC), 1e300) == LATEST_AT
    assert shifted(datetime(2027, 1, 1, tzinfo=UTC), float("nan")) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


# -- one bad event poisons nothing: the 9999-12-31 case ---------------------------------------


def _settings(vtn_url: str, site_url: str, database_url: str) -> Settings:
    return parse_settings(
        {
            "database": {"url": database_url},
            "vtn": [{"id": VTN, "url": vtn_url, "ven_name": "bounds-test"}],
            "site": [
                {
                    "id": "alpha",
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "pue": 1.2,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": site_url,
                    "controller_token": "token-of-alpha",
                    "vtn": VTN,
                }
            ],
            "web": {"enabled": True, "port": 0, "token": TOKEN},
        },
        "test",
    )


@dataclass
class Daemon:
    vtn: ScriptedVtn
    gateway: Gateway
    clock: ManualClock
    sessions: sessionmaker[Session]
    api: TestClient[web.Request, web.Application]

    async def send(self, *events: dict[str, Any]) -> None:
        self.vtn.distribute(events)
        await self.gateway.vens[0]._client._poll()
        await self.gateway.vens[0].settled()  # answered, also when it took the poll over 1 s
        assert not self.vtn.queue, "the VEN fetched the distribution"

    def got(self, event_id: str) -> list[tuple[str, int]]:
        return [(r.opt_type, r.response_code) for r in self.vtn.responses_to(event_id)]

    def stored_ids(self) -> set[str]:
        with unit_of_work(self.sessions) as session:
            return set(session.scalars(select(rows.Event.event_id)))

    async def events_api(self) -> list[dict[str, Any]]:
        async with self.api.get(
            "/api/v1/events", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200, await response.text()
            events: list[dict[str, Any]] = (await response.json())["events"]
            return events


@pytest.fixture
async def daemon(
    session_factory: sessionmaker[Session], database_url: str
) -> AsyncIterator[Daemon]:
    clock = ManualClock(datetime.now(UTC))
    site = SimulatedSite(
        site_id="alpha",
        token="token-of-alpha",
        clock=clock,
        trace=RenewableTrace.constant(2.0),
        gpus_total=8,
        it_power_max_kw=6.0,
    )
    runner, site_url = await start_site_server(site)
    vtn = ScriptedVtn(poll_interval_s=3600)
    await vtn.start()
    settings = _settings(vtn.url, site_url, database_url)
    gateway = Gateway(settings, clock, session_factory)
    app = make_app(session_factory, settings.web, clock)
    try:
        await gateway.start(schedule=False)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as api:
            yield Daemon(vtn, gateway, clock, session_factory, api)
    finally:
        await gateway.stop()
        await vtn.stop()
        await runner.cleanup()


async def test_an_event_dated_9999_12_31_received_or_stored_poisons_nothing(
    daemon: Daemon,
) -> None:
    start = daemon.clock.now() + 2 * HOUR
    await daemon.send(event_dict("FAR", start_at=FAR_FUTURE), event_dict("OK-1", start_at=start))
    assert daemon.got("FAR") == [("optOut", 454)]
    assert [code for _, code in daemon.got("OK-1")] == [200]
    assert "FAR" not in daemon.stored_ids()

    # Later distributions from the same VTN, with and without it, are all answered.
    await daemon.send(
        event_dict("FAR", start_at=FAR_FUTURE),
        event_dict("OK-1", start_at=start),
        event_dict("OK-2", start_at=start + HOUR),
    )
    await daemon.send(event_dict("OK-1", start_at=start), event_dict("OK-2", start_at=start + HOUR))
    assert daemon.got("FAR") == [("optOut", 454), ("optOut", 454)]
    assert [code for _, code in daemon.got("OK-1")] == [200, 200, 200]
    assert [code for _, code in daemon.got("OK-2")] == [200, 200]
    assert daemon.stored_ids() == {"OK-1", "OK-2"}
    await daemon.gateway.plan_once()  # a plan round runs
    assert {e["event_id"] for e in await daemon.events_api()} == {"OK-1", "OK-2"}

    # A database written before the bounds existed may hold such a row: the implied-cancel
    # check of the next distribution, a plan round and the web API all get past it.
    with unit_of_work(daemon.sessions) as session:
        store.save_event(session, _far_event("STORED-FAR"), daemon.clock.now())
    await daemon.send(event_dict("OK-1", start_at=start), event_dict("OK-3", start_at=start))
    assert [code for _, code in daemon.got("OK-3")] == [200]
    await daemon.gateway.plan_once()
    listed = {e["event_id"]: e for e in await daemon.events_api()}
    assert set(listed) == {"OK-1", "OK-2", "OK-3", "STORED-FAR"}
    assert listed["STORED-FAR"]["end_at"] == "9000-01-01T00:00:00Z"


# -- ids: text as sent, escaped in the answers --------------------------------------------------


def _raw(vtn: ScriptedVtn, events: list[dict[str, Any]], request_id: str) -> str:
    return render_distribution({"events": events, "request_id": request_id, "vtn_id": vtn.vtn_id})


async def test_a_60_digit_interval_uid_is_stored_as_text_and_ids_keep_their_zeros(
    session_factory: sessionmaker[Session],
) -> None:
    uid = "0" + "123456789" * 6 + "0"
    async with running(session_factory) as rig:
        sent: list[str] = []
        rig.connection._client.add_hook("before_send_xml", sent.append)
        body = _raw(rig.vtn, [event_dict("007", start_at=rig.start())], "00123")
        assert body.count("<text>0</text>") == 1
        rig.vtn.send_raw(body.replace("<text>0</text>", f"<text>{uid}</text>"))
        await rig.connection._client._poll()
        stored = rig.stored("007")
        assert stored is not None and stored.signals[0].intervals[0].uid == uid
        [answer] = [xml for xml in sent if "oadrCreatedEvent" in xml]
        assert "<ei:eventID>007</ei:eventID>" in answer
        assert ">00123</requestID>" in answer
        # openleadr's VTN reads all-digit text as numbers ("007" -> 7): its own loss.
        assert rig.got("7") == [(0, "optIn", 200)]


SQLITE_ONLY = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
"""For a test about the wire, not the database: one backend is enough."""


@SQLITE_ONLY
async def test_ids_with_xml_metacharacters_come_back_intact_in_schema_valid_answers(
    session_factory: sessionmaker[Session],
) -> None:
    event_id = "A<&\"'>B"
    async with running(session_factory) as rig:
        # openleadr's templates do not escape: the VTN's XML carries the id escaped.
        rig.vtn.distribute([event_dict(escape(event_id), start_at=rig.start())])
        await rig.connection._client._poll()
        # openleadr's VTN validates every message it receives against the 2.0b schema.
        assert rig.got(event_id) == [(0, "optIn", 200)]


@SQLITE_ONLY
async def test_a_ven_id_the_vtn_assigns_with_xml_metacharacters_goes_out_escaped(
    session_factory: sessionmaker[Session],
) -> None:
    """openleadr puts its venID into every poll, report and answer as it is: a VTN-assigned
    ``<&"'>`` made each one malformed, and the VTN refused them all."""
    ven_id = "VEN<&\"'>1"
    vtn = ScriptedVtn("UTILITY-1", poll_interval_s=1)
    vtn.assigned_ven_id = ven_id
    await vtn.start()
    try:
        clock = ManualClock(datetime.now(UTC))
        async with connected(vtn, session_factory, Planner(), clock) as connection:
            assert connection.ven_id == ven_id
            start_at = clock.now() + timedelta(hours=2)
            vtn.distribute([event_dict("EVT-1", start_at=start_at)])
            await connection._client._poll()
            await connection.settled()
            # openleadr's VTN validates every message it receives against the 2.0b schema.
            assert [(r.ven_id, r.opt_type) for r in vtn.responses_to("EVT-1")] == [
                (ven_id, "optIn")
            ]
    finally:
        await vtn.stop()


def test_the_rendered_answer_is_schema_valid_whatever_the_ids() -> None:
    answer = Answer(
        event_id="<&\"'>]]>",
        modification_number=3,
        opt="optOut",
        response_code=454,
        reason="event '<&>': active_period.dtstart: 9999-12-31T00:00:00+00:00 is outside",
        response_id=None,
        request_id="R<&>",
    )
    payload = escaped(created_event_payload([answer], "R<&>", "V&N"))
    xml = create_message("oadrCreatedEvent", **payload)
    validate_xml_schema(xml)


# -- one unreadable event, a requestID too long ---------------------------------------------


@SQLITE_ONLY
async def test_an_event_openleadr_cannot_convert_is_answered_454_beside_a_valid_one(
    session_factory: sessionmaker[Session],
) -> None:
    async with running(session_factory) as rig:
        events = [
            event_dict("HUGE", start_at=rig.start(), duration=HOUR),
            event_dict("FINE", start_at=rig.start()),
        ]
        body = _raw(rig.vtn, events, "REQ-1")
        # A duration the schema accepts and Python's timedelta cannot hold.
        marker = "<duration><duration>PT1H</duration></duration></properties>"
        assert body.count(marker) == 2
        rig.vtn.send_raw(body.replace(marker, marker.replace("PT1H", "P99999999999D"), 1))
        await rig.connection._client._poll()
        assert rig.got("HUGE") == [(0, "optOut", 454)]
        assert rig.got("FINE") == [(0, "optIn", 200)]
        assert rig.stored("HUGE") is None


@SQLITE_ONLY
async def test_a_requestid_too_long_to_store_answers_454_and_stores_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    request_id = "R" * (limits.MAX_REQUEST_ID_CHARS + 1)
    async with running(session_factory) as rig:
        rig.vtn.send_raw(_raw(rig.vtn, [event_dict("EVT-1", start_at=rig.start())], request_id))
        await rig.connection._client._poll()
        assert rig.got("EVT-1") == [(0, "optOut", 454)]
        assert [r.request_id for r in rig.vtn.responses_to("EVT-1")] == [request_id]
        assert rig.stored("EVT-1") is None
        await rig.send(event_dict("EVT-1", start_at=rig.start()))
        assert rig.got("EVT-1")[-1] == (0, "optIn", 200)
