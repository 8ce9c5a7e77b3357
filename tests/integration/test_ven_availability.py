"""Maintenance windows as availability schedules (EiOpt), end to end.

Windows from the configuration and from ``dr-gateway maintenance`` reach a real openleadr VTN
on loopback (with the simulator's EiOpt route, ``simulators/eiopt.py``) through the daemon,
on SQLite and PostgreSQL; removing one cancels its opt; a restart resends nothing the VTN
acknowledged; a VTN that does not answer gets the window later. Also: the signed (mutual
TLS) round trip, the answers the VEN accepts, the simulator's refusals, the planner keeping
sites in maintenance out of events and migrations, and the validation of every input.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openleadr.messaging import create_message, parse_message
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.cli import main
from gateway.clock import ManualClock
from gateway.daemon.gateway import Gateway
from gateway.db import unit_of_work
from gateway.errors import ConfigError, GatewayError
from gateway.fleet import build_snapshot, sync_sites
from gateway.maintenance import store
from gateway.maintenance_window import Window
from gateway.planner import opt
from gateway.planner.plan import plan
from gateway.planner.signals import peak_requests
from gateway.planner.snapshot import Snapshot
from gateway.settings import load_settings
from gateway.settings_vtn import VtnSettings
from gateway.ven.availability import (
    AvailabilityCancel,
    AvailabilitySchedule,
    OptAnswer,
    OptNotAnswered,
    create_opt_payload,
    read_answer,
)
from models import AvailabilityWindow
from simulators.eiopt import AvailabilityInterval, ReceivedOpt
from simulators.vtn import Registration, SimulatedVtn
from tests.integration.test_ven_tls import Pki, build_pki, connection_to, ven_settings
from tests.integration.test_ven_tls import tls_vtn as running_tls_vtn
from tests.support.daemon import controller_site, gateway_settings
from tests.support.planning import NOW, PARAMS, SIGNALS, event, fleet_for_opt, job, site
from tests.support.settings_files import write_toml
from tests.support.ven import VTN_ID
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MARKET_CONTEXT = "http://utility.example/programme"


@pytest.fixture
def clock() -> ManualClock:
    """Simulated time at the present, in whole seconds (OpenADR durations are whole)."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


def at(clock: ManualClock, hours: float) -> datetime:
    return clock.now() + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def write_config(
    path: Path,
    database_url: str,
    vtn_url: str,
    maintenance: Sequence[tuple[str, datetime, datetime, str]] = (),
) -> Path:
    """A configuration: one VTN serving site-a (resource RES-A) and site-b, and site-c
    that no VTN serves; ``maintenance``: (site, start, end, reason) entries."""
    served_by = {"site-a": {"vtn": VTN_ID, "resource_id": "RES-A"}, "site-b": {"vtn": VTN_ID}}
    sites = [
        controller_site(
            site_id,
            "http://127.0.0.1:9/",
            f"token-of-{site_id}",
            gpus_total=8,
            it_power_max_kw=10.0,
            wan_bandwidth_gbps=10.0,
            **served_by.get(site_id, {}),
        )
        for site_id in ("site-a", "site-b", "site-c")
    ]
    vtn = {
        "id": VTN_ID,
        "url": vtn_url,
        "ven_name": "dr-gateway-availability",
        "opt_market_context": MARKET_CONTEXT,
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 1.0,
    }
    windows = [
        {"site": site_id, "start_at": start_at, "end_at": end_at, "reason": reason}
        for site_id, start_at, end_at, reason in maintenance
    ]
    settings = gateway_settings(database_url, sites, vtn=[vtn], maintenance=windows)
    return write_toml(path, settings)


@asynccontextmanager
async def daemon(
    config: Path, clock: ManualClock, session_factory: sessionmaker[Session]
) -> AsyncIterator[Gateway]:
    """The daemon (no scheduler: rounds are run by hand), registered with its VTN."""
    gateway = Gateway(load_settings(config), clock, session_factory)
    try:
        await gateway.start(schedule=False)
        await wait_for(lambda: all(v.available for v in gateway.vens), "registration")
        yield gateway
    finally:
        await gateway.stop()


@asynccontextmanager
async def plain_vtn(clock: ManualClock) -> AsyncIterator[SimulatedVtn]:
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    await vtn.start()
    try:
        yield vtn
    finally:
        await vtn.stop()


def cli(*argv: str) -> int:
    return main(["maintenance", *argv])


def rows(factory: sessionmaker[Session]) -> dict[str, AvailabilityWindow]:
    """The stored windows by site (one each in these tests)."""
    with unit_of_work(factory) as session:
        return {row.site_id: row for row in session.scalars(select(AvailabilityWindow))}


def creates(vtn: SimulatedVtn, opt_id: str) -> list[int]:
    """The response codes of every oadrCreateOpt the VTN received for ``opt_id``."""
    return [e.response_code for e in vtn.eiopt.received("oadrCreateOpt", opt_id)]


# -- through the daemon, against the VTN ---------------------------------------------------------


async def test_windows_from_configuration_and_cli_reach_the_vtn_with_interval_and_targets(
    tmp_path: Path,
    clock: ManualClock,
    database_url: str,
    session_factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with plain_vtn(clock) as vtn:
        config = write_config(
            tmp_path / "gateway.toml",
            database_url,
            vtn.url,
            [("site-a", at(clock, 1), at(clock, 3), "transformer maintenance")],
        )
        b_start, b_end = at(clock, 2), at(clock, 26)
        assert cli("add", "--config", str(config), "--site", "site-b", "--start", iso(b_start),
                   "--end", iso(b_end), "--reason", "firmware upgrade") == 0  # fmt: skip
        assert "the daemon sends it to VTN utility-1" in capsys.readouterr().out
        assert cli("add", "--config", str(config), "--site", "site-c", "--start",
                   iso(at(clock, 1)), "--end", iso(at(clock, 2))) == 0  # fmt: skip
        assert "no VTN serves the site" in capsys.readouterr().out

        async with daemon(config, clock, session_factory) as gateway:
            result = await gateway.availability_once()
            ven_id = gateway.vens[0].ven_id

    stored = rows(session_factory)
    assert set(stored) == {"site-a", "site-b", "site-c"}
    assert sorted(result.sent) == sorted([stored["site-a"].id, stored["site-b"].id])
    assert (stored["site-a"].source, stored["site-b"].source) == ("config", "cli")
    expected = {
        stored["site-a"].opt_id: (("resource_id", "RES-A"),),
        stored["site-b"].opt_id: (("resource_id", "site-b"),),
    }
    assert {opt_id: o.targets for opt_id, o in vtn.eiopt.opts.items()} == expected
    received_a = vtn.eiopt.opts[stored["site-a"].opt_id]
    assert received_a == ReceivedOpt(
        ven_id=str(ven_id),
        opt_id=stored["site-a"].opt_id,
        opt_type="optOut",
        opt_reason="x-schedule",
        market_context=MARKET_CONTEXT,
        targets=(("resource_id", "RES-A"),),
        intervals=(AvailabilityInterval(at(clock, 1), at(clock, 3)),),
        event_id=None,
        received_at=received_a.received_at,
    )
    assert vtn.eiopt.opts[stored["site-b"].opt_id].intervals == (
        AvailabilityInterval(b_start, b_end),
    )
    for site_id in ("site-a", "site-b"):
        row = stored[site_id]
        assert (row.vtn_id, row.response_code, row.last_error) == (VTN_ID, 200, None)
        assert row.sent_at is not None
    # A site that no VTN serves: stored (for the planner), never sent.
    assert stored["site-c"].sent_at is None and stored["site-c"].vtn_id is None
    assert stored["site-a"].reason == "transformer maintenance"

    assert cli("list", "--config", str(config), "--format", "json") == 0
    listed = {r["site"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["site-a"]["state"] == "acknowledged"
    assert listed["site-b"]["reason"] == "firmware upgrade"
    assert listed["site-c"]["state"] == "not sent: no VTN serves the site"
    assert cli("list", "--config", str(config)) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "id", "site", "start_at", "end_at", "source", "state", "reason",
    ]  # fmt: skip
    assert "transformer maintenance" in table


async def test_removing_a_window_sends_a_cancel_from_the_cli_and_from_the_configuration(
    tmp_path: Path,
    clock: ManualClock,
    database_url: str,
    session_factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with plain_vtn(clock) as vtn:
        window = ("site-a", at(clock, 1), at(clock, 3), "maintenance")
        config = write_config(tmp_path / "gateway.toml", database_url, vtn.url, [window])
        assert cli("add", "--config", str(config), "--site", "site-b", "--start",
                   iso(at(clock, 1)), "--end", iso(at(clock, 2))) == 0  # fmt: skip
        async with daemon(config, clock, session_factory) as gateway:
            await gateway.availability_once()
            sent = rows(session_factory)
            assert {r.response_code for r in sent.values()} == {200}

            # The CLI removes its window; the running daemon's next round cancels the opt.
            assert cli("remove", "--config", str(config), str(sent["site-b"].id)) == 0
            assert f"cancels opt {sent['site-b'].opt_id}" in capsys.readouterr().out
            result = await gateway.availability_once()
            assert result.cancelled == (sent["site-b"].id,)

        # A window gone from the configuration is removed, and cancelled, at the next start.
        write_config(config, database_url, vtn.url, [])
        async with daemon(config, clock, session_factory) as gateway:
            result = await gateway.availability_once()
            assert result.cancelled == (sent["site-a"].id,)
            assert result.sent == ()

    removed = rows(session_factory)
    for site_id in ("site-a", "site-b"):
        opt_id = sent[site_id].opt_id
        assert vtn.eiopt.opts[opt_id].cancelled_at is not None
        assert [e.response_code for e in vtn.eiopt.received("oadrCancelOpt", opt_id)] == [200]
        row = removed[site_id]
        assert row.cancelled_at is not None and row.cancel_sent_at is not None
        assert row.cancel_response_code == 200
    assert cli("list", "--config", str(config)) == 0
    assert capsys.readouterr().out == "no maintenance windows\n"
    assert cli("list", "--config", str(config), "--all", "--format", "json") == 0
    states = {r["site"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert states == {"site-a": "removed, cancel answered 200", "site-b": states["site-b"]}
    assert states["site-b"] == "removed, cancel answered 200"


async def test_a_restart_does_not_resend_an_acknowledged_window(
    tmp_path: Path, clock: ManualClock, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    async with plain_vtn(clock) as vtn:
        window = ("site-a", at(clock, 1), at(clock, 3), "maintenance")
        config = write_config(tmp_path / "gateway.toml", database_url, vtn.url, [window])
        async with daemon(config, clock, session_factory) as gateway:
            first = await gateway.availability_once()
            again = await gateway.availability_once()
        async with daemon(config, clock, session_factory) as gateway:
            after_restart = await gateway.availability_once()

    opt_id = rows(session_factory)["site-a"].opt_id
    assert len(first.sent) == 1
    assert again.sent == () and after_restart.sent == ()
    assert creates(vtn, opt_id) == [200]
    assert len(rows(session_factory)) == 1  # the configuration's window was not added twice


async def test_a_vtn_that_does_not_answer_gets_the_window_later_even_after_a_restart(
    tmp_path: Path,
    clock: ManualClock,
    database_url: str,
    session_factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with plain_vtn(clock) as vtn:
        config = write_config(tmp_path / "gateway.toml", database_url, vtn.url)
        assert cli("add", "--config", str(config), "--site", "site-a", "--start",
                   iso(at(clock, 1)), "--end", iso(at(clock, 2))) == 0  # fmt: skip
        window_id = rows(session_factory)["site-a"].id
        vtn.eiopt.answering = False  # HTTP 404, as openleadr's own VTN answers EiOpt
        async with daemon(config, clock, session_factory) as gateway:
            failed = await gateway.availability_once()
            failed_again = await gateway.availability_once()
        pending = rows(session_factory)["site-a"]
        assert failed.failed == (window_id,) and failed.sent == ()
        assert failed_again.failed == (window_id,)
        assert pending.sent_at is None and pending.last_error is not None
        assert "404" in pending.last_error
        capsys.readouterr()
        assert cli("list", "--config", str(config), "--format", "json") == 0
        [listed] = json.loads(capsys.readouterr().out)
        assert listed["state"] == "pending, retrying"

        vtn.eiopt.answering = True
        async with daemon(config, clock, session_factory) as gateway:
            recovered = await gateway.availability_once()

    sent = rows(session_factory)["site-a"]
    assert recovered.sent == (window_id,) and recovered.failed == ()
    assert (sent.response_code, sent.last_error) == (200, None)
    assert creates(vtn, sent.opt_id) == [200]


async def test_rule_463_not_registered_is_not_final_the_window_is_sent_again(
    tmp_path: Path, clock: ManualClock, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    async with plain_vtn(clock) as vtn:
        config = write_config(
            tmp_path / "gateway.toml",
            database_url,
            vtn.url,
            [("site-a", at(clock, 1), at(clock, 2), "maintenance")],
        )
        async with daemon(config, clock, session_factory) as gateway:
            ven_id = str(gateway.vens[0].ven_id)
            registration = vtn.registrations.pop(ven_id)  # the VTN forgets us
            refused = await gateway.availability_once()
            assert rows(session_factory)["site-a"].sent_at is None
            vtn.registrations[ven_id] = registration
            accepted = await gateway.availability_once()

    window = rows(session_factory)["site-a"]
    assert refused.failed == (window.id,) and refused.sent == ()
    assert accepted.sent == (window.id,) and accepted.failed == ()
    assert creates(vtn, window.opt_id) == [463, 200]
    assert window.response_code == 200


async def test_a_vtn_down_at_send_time_gets_the_window_once_it_is_back(
    tmp_path: Path, clock: ManualClock, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    await vtn.start()
    port = int(vtn.url.split(":")[2].split("/")[0])
    config = write_config(tmp_path / "gateway.toml", database_url, vtn.url)
    try:
        async with daemon(config, clock, session_factory) as gateway:
            await vtn.stop()
            assert cli("add", "--config", str(config), "--site", "site-b", "--start",
                       iso(at(clock, 1)), "--end", iso(at(clock, 2))) == 0  # fmt: skip
            down = await gateway.availability_once()
            assert down.sent == ()
            assert rows(session_factory)["site-b"].sent_at is None

            await vtn.start(port)
            delivered: list[int] = []

            async def deliver() -> bool:
                delivered.extend((await gateway.availability_once()).sent)
                return bool(delivered)

            for _ in range(100):  # while the VEN polls its VTN back, at most 10 s
                if await deliver():
                    break
                await asyncio.sleep(0.1)
            assert delivered == [rows(session_factory)["site-b"].id]
    finally:
        await vtn.stop()
    assert creates(vtn, rows(session_factory)["site-b"].opt_id) == [200]


# -- the VEN side, one connection ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["ec", "rsa"], ids=["EC P-256", "RSA-2048"])
def tls_pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway PKI of each key type."""
    return build_pki(tmp_path_factory.mktemp(f"pki-{request.param}"), request.param)


async def test_signed_mutual_tls_availability_schedule_and_cancel(
    clock: ManualClock, tls_pki: Pki, session_factory: sessionmaker[Session]
) -> None:
    pki = tls_pki
    schedule = AvailabilitySchedule(
        opt_id="OPT-TLS-1",
        resource_id="RES-B",
        start_at=at(clock, 1),
        end_at=at(clock, 4),
        market_context=MARKET_CONTEXT,
    )
    async with running_tls_vtn(clock, pki) as vtn:
        connection = connection_to(ven_settings(pki, vtn.url), clock, session_factory)
        try:
            await connection.start()
            created = await connection.send_availability(schedule)
            cancelled = await connection.send_availability(AvailabilityCancel("OPT-TLS-1"))
            cancelled_again = await connection.send_availability(AvailabilityCancel("OPT-TLS-1"))
        finally:
            await connection.stop()
    assert created == OptAnswer(200, "OK") and cancelled == OptAnswer(200, "OK")
    assert cancelled_again.response_code == 452
    received = vtn.eiopt.opts["OPT-TLS-1"]
    assert received.ven_id == connection.ven_id
    assert received.targets == (("resource_id", "RES-B"),)
    assert received.intervals == (AvailabilityInterval(schedule.start_at, schedule.end_at),)
    assert received.cancelled_at is not None


async def test_rule_a_vtn_without_eiopt_is_no_answer_and_an_unregistered_connection_sends_nothing(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    schedule = AvailabilitySchedule("OPT-404", "RES-A", at(clock, 1), at(clock, 2))
    async with plain_vtn(clock) as vtn:
        vtn.eiopt.answering = False
        settings = VtnSettings(id=VTN_ID, url=vtn.url, ven_name="dr-gateway-plain")
        connection = connection_to(settings, clock, session_factory)
        with pytest.raises(GatewayError, match="not registered; OPT-404 not sent"):
            await connection.send_availability(schedule)  # not started
        await connection.start()
        try:
            with pytest.raises(OptNotAnswered, match=r"no answer to oadrCreateOpt OPT-404.*404"):
                await connection.send_availability(schedule)
        finally:
            await connection.stop()
    assert vtn.eiopt.exchanges == []


ANSWER_CASES = [
    # label, message type, payload, expected code or the words of OptNotAnswered
    ("acknowledged", "oadrCreatedOpt",
     {"opt_id": "OPT-1", "response": {"request_id": "REQ-1", "response_code": 200}}, 200),
    ("refused with a code", "oadrCreatedOpt",
     {"opt_id": "OPT-1", "response": {"request_id": "REQ-1", "response_code": 454}}, 454),
    ("openleadr's error answer without a requestID", "oadrResponse",
     {"response": {"request_id": None, "response_code": 459}}, 459),
    ("an answer to another request", "oadrCreatedOpt",
     {"opt_id": "OPT-1", "response": {"request_id": "REQ-2", "response_code": 200}},
     "not ours"),
    ("an answer about another opt", "oadrCreatedOpt",
     {"opt_id": "OPT-2", "response": {"request_id": "REQ-1", "response_code": 200}},
     "about opt 'OPT-2'"),
    ("the answer of another service", "oadrCanceledOpt",
     {"opt_id": "OPT-1", "response": {"request_id": "REQ-1", "response_code": 200}},
     "not oadrCreatedOpt"),
    ("no eiResponse", "oadrCreatedOpt", {"opt_id": "OPT-1"}, "no eiResponse"),
    ("no response code", "oadrCreatedOpt",
     {"opt_id": "OPT-1", "response": {"request_id": "REQ-1"}}, "response code None"),
    ("the VTN forgot us", "oadrRequestReregistration", {"ven_id": "V"}, "register again"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "message_type", "payload", "expected"), ANSWER_CASES, ids=[c[0] for c in ANSWER_CASES]
)
def test_rule_opt_answers_must_be_for_our_request_and_opt(
    label: str, message_type: str, payload: dict[str, Any], expected: int | str
) -> None:
    if isinstance(expected, int):
        answer = read_answer("oadrCreatedOpt", "REQ-1", "OPT-1", message_type, payload)
        assert answer.response_code == expected
        assert answer.acknowledged == (expected == 200)
        return
    with pytest.raises(OptNotAnswered, match=expected):
        read_answer("oadrCreatedOpt", "REQ-1", "OPT-1", message_type, payload)


# -- the simulated VTN's EiOpt service ------------------------------------------------------------


async def post(url: str, body: str) -> tuple[int, str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/EiOpt", data=body, headers={"content-type": "application/xml"}) as r,
    ):
        text = await r.text()
    if r.status != 200:
        return r.status, text, {}
    message_type, payload = parse_message(text)
    return r.status, message_type, payload


def create_body(ven_id: str, opt_id: str, request_id: str, **changes: Any) -> str:
    schedule = AvailabilitySchedule(opt_id, "RES-A", NOW, NOW + timedelta(hours=1))
    payload = create_opt_payload(ven_id, schedule, request_id, NOW)
    payload.update(changes)
    return str(create_message("oadrCreateOpt", **payload))


async def test_simulated_vtn_refuses_what_openadr_refuses(clock: ManualClock) -> None:
    async with plain_vtn(clock) as vtn:
        for ven_id in ("VEN-1", "VEN-2"):
            vtn.registrations[ven_id] = Registration(ven_id, ven_id, f"REG-{ven_id}", NOW)
        cases = [
            ("unregistered VEN", create_body("VEN-X", "OPT-1", "R1"), "oadrCreatedOpt", 463),
            ("created", create_body("VEN-1", "OPT-1", "R2"), "oadrCreatedOpt", 200),
            ("resent: the same opt", create_body("VEN-1", "OPT-1", "R3"), "oadrCreatedOpt", 200),
            ("another VEN's optID", create_body("VEN-2", "OPT-1", "R4"), "oadrCreatedOpt", 452),
            ("no schedule, no event", create_body("VEN-1", "OPT-2", "R5", vavailability=None),
             "oadrCreatedOpt", 454),
            ("cancel of an unknown opt",
             str(create_message("oadrCancelOpt", request_id="R6", opt_id="OPT-9", ven_id="VEN-1")),
             "oadrCanceledOpt", 452),
            ("cancelled",
             str(create_message("oadrCancelOpt", request_id="R7", opt_id="OPT-1", ven_id="VEN-1")),
             "oadrCanceledOpt", 200),
            ("not an EiOpt message",
             str(create_message("oadrPoll", ven_id="VEN-1")), "oadrResponse", 459),
        ]  # fmt: skip
        for label, body, answer_type, code in cases:
            status, message_type, payload = await post(vtn.url, body)
            assert (status, message_type, payload["response"]["response_code"]) == (
                200, answer_type, code,
            ), label  # fmt: skip
            request_id = parse_message(body)[1].get("request_id")
            assert payload["response"]["request_id"] == request_id, label
        status, text, _ = await post(vtn.url, "<not-openadr/>")
        assert status == 400 and "XML failed validation" in text
    assert [e.response_code for e in vtn.eiopt.received("oadrCreateOpt", "OPT-1")] == [
        463, 200, 200, 452,
    ]  # fmt: skip
    assert vtn.eiopt.opts["OPT-1"].cancelled_at is not None
    assert set(vtn.eiopt.opts) == {"OPT-1"}


# -- the planner: a site in maintenance takes part in nothing -----------------------------------

MAINTENANCE_NOW = ((NOW - timedelta(hours=1), NOW + timedelta(hours=5)),)
"""Covers the test events (an hour from NOW, two hours long)."""


def in_maintenance(snapshot: Snapshot, site_id: str, spans: Any = MAINTENANCE_NOW) -> Snapshot:
    sites = tuple(
        replace(s, maintenance=spans) if s.site_id == site_id else s for s in snapshot.sites
    )
    return replace(snapshot, sites=sites)


def test_the_planner_opts_out_of_an_event_that_needs_a_site_in_maintenance() -> None:
    shed_at_a = event(values=(-3.0,), resources=("a",))
    assert opt.decide(shed_at_a, fleet_for_opt(), PARAMS, SIGNALS).opt == "optIn"
    decision = opt.decide(shed_at_a, in_maintenance(fleet_for_opt(), "a"), PARAMS, SIGNALS)
    assert decision.opt == "optOut"
    assert decision.reason == "a: in maintenance during the event"
    # A window that ends before the event starts does not matter.
    earlier = ((NOW - timedelta(hours=1), NOW + timedelta(minutes=30)),)
    assert (
        opt.decide(shed_at_a, in_maintenance(fleet_for_opt(), "a", earlier), PARAMS, SIGNALS).opt
        == "optIn"
    )


def test_an_event_for_the_whole_ven_leaves_out_the_sites_in_maintenance() -> None:
    absorb_anywhere = event(values=(2.0,), resources=())
    fleet = fleet_for_opt()
    # Every site is asked to absorb; a, with all the jobs, cannot: optOut.
    asked = peak_requests(absorb_anywhere, fleet.sites, opt.flexible_kw(fleet), SIGNALS)
    assert {r.site_id for r in asked} == {"a", "b"}
    assert opt.decide(absorb_anywhere, fleet, PARAMS, SIGNALS).opt == "optOut"
    # With a in maintenance only b is asked, and b can take a's jobs: optIn.
    resting = in_maintenance(fleet, "a")
    asked = peak_requests(absorb_anywhere, resting.sites, opt.flexible_kw(resting), SIGNALS)
    assert {r.site_id for r in asked} == {"b"}
    assert opt.decide(absorb_anywhere, resting, PARAMS, SIGNALS).opt == "optIn"
    # Every site it addresses in maintenance: optOut.
    both = in_maintenance(resting, "b")
    decision = opt.decide(absorb_anywhere, both, PARAMS, SIGNALS)
    assert decision.opt == "optOut" and "a: in maintenance" in decision.reason


def test_the_planner_does_not_migrate_to_a_site_in_maintenance() -> None:
    snapshot = Snapshot(
        at=NOW,
        sites=(site("dark", 0.0, it_power_kw=1.3), site("sunny", 10.0)),
        jobs=(job("j1", "dark"),),
    )
    assert [d.target_site_id for d in plan(snapshot, PARAMS)] == ["sunny"]
    assert plan(in_maintenance(snapshot, "sunny"), PARAMS) == []
    # Nor to one whose maintenance starts within the planning horizon.
    soon = ((NOW + timedelta(hours=3), NOW + timedelta(hours=4)),)
    assert plan(in_maintenance(snapshot, "sunny", soon), PARAMS) == []
    # Jobs may still leave a site in maintenance.
    assert [d.target_site_id for d in plan(in_maintenance(snapshot, "dark"), PARAMS)] == ["sunny"]


OVERLAP_CASES = [
    # label, window (start h, end h) from NOW, span (start h, end h or None)
    ("inside", (1, 3), (1.5, 2), True),
    ("overlaps the start", (1, 3), (0, 1.5), True),
    ("ends as the span starts", (1, 3), (3, 4), False),
    ("starts as the span ends", (1, 3), (0, 1), False),
    ("open-ended span after the start", (1, 3), (2, None), True),
    ("open-ended span after the end", (1, 3), (3, None), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "window", "span", "expected"), OVERLAP_CASES, ids=[c[0] for c in OVERLAP_CASES]
)
def test_a_window_overlaps_a_span(
    label: str, window: tuple[float, float], span: tuple[float, float | None], expected: bool
) -> None:
    def h(hours: float) -> datetime:
        return NOW + timedelta(hours=hours)

    view = replace(site("a", 0.0), maintenance=((h(window[0]), h(window[1])),))
    end = None if span[1] is None else h(span[1])
    assert view.in_maintenance(h(span[0]), end) is expected


def test_the_snapshot_carries_the_stored_windows_not_removed_or_ended(
    tmp_path: Path, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    config = write_config(tmp_path / "gateway.toml", database_url, "http://127.0.0.1:9/x")
    settings = load_settings(config)
    spans = {
        "ended": (NOW - timedelta(hours=3), NOW - timedelta(hours=1)),
        "now": (NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
        "later": (NOW + timedelta(hours=5), NOW + timedelta(hours=6)),
        "removed": (NOW + timedelta(hours=7), NOW + timedelta(hours=8)),
    }
    with unit_of_work(session_factory) as session:
        sync_sites(session, settings.site, NOW)
        added = {
            label: store.add(session, Window("site-a", *span), "cli", NOW)
            for label, span in spans.items()
        }
        store.remove(session, added["removed"].id, NOW)
        snapshot = build_snapshot(session, settings.site, {}, (), NOW)
    assert snapshot.site("site-a").maintenance == (spans["now"], spans["later"])
    assert snapshot.site("site-b").maintenance == ()


# -- validation of the configuration and the command line ----------------------------------------

GOOD = ("2031-05-01T22:00:00Z", "2031-05-02T02:00:00Z")

CONFIG_CASES = [
    # label, [[maintenance]] body, key, words
    ("unknown site", 'site = "site-x"\nstart_at = {s}\nend_at = {e}', "site",
     "unknown site 'site-x'"),
    ("end before start", 'site = "site-a"\nstart_at = {e}\nend_at = {s}', "end_at",
     "must be after the start"),
    ("end equal to start", 'site = "site-a"\nstart_at = {s}\nend_at = {s}', "end_at",
     "must be after the start"),
    ("no time zone", 'site = "site-a"\nstart_at = 2031-05-01T22:00:00\nend_at = {e}', "start_at",
     "timezone-aware"),
    ("not a date", 'site = "site-a"\nstart_at = "next tuesday"\nend_at = {e}', "start_at",
     "valid datetime"),
    ("fractions of a second", 'site = "site-a"\nstart_at = {s}\nend_at = 2031-05-02T02:00:00.5Z',
     "end_at", "whole seconds"),
    ("missing end", 'site = "site-a"\nstart_at = {s}', "end_at", "required key is missing"),
    ("misspelt key", 'site = "site-a"\nstart = {s}\nend_at = {e}', "start", "unknown key"),
    ("empty reason", 'site = "site-a"\nstart_at = {s}\nend_at = {e}\nreason = ""', "reason",
     "at least 1 character"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "body", "key", "words"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_maintenance_configuration_names_the_file_and_key(
    tmp_path: Path, label: str, body: str, key: str, words: str
) -> None:
    good = ("site-b", datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 1, 2, tzinfo=UTC), "m")
    config = write_config(tmp_path / "gateway.toml", "sqlite:///x.db", "http://h:9/x", [good])
    with config.open("a") as file:  # the second entry is the bad one
        file.write("\n[[maintenance]]\n" + body.format(s=GOOD[0], e=GOOD[1]) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert message.startswith(f"{config}: maintenance[1].{key}:"), message
    assert words in message


def test_the_example_configuration_documents_maintenance(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / "config" / "example.toml").read_text()
    assert "# [[maintenance]]" in example and "opt_market_context" in example
    # Its commented example, uncommented, validates: the lines from "# [[maintenance]]" up
    # to the next blank line.
    lines = example.splitlines()
    start = lines.index("# [[maintenance]]")
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    path = tmp_path / "example.toml"
    path.write_text(example + "\n" + "\n".join(line[2:] for line in lines[start:end]) + "\n")
    settings = load_settings(path)
    assert [w.site for w in settings.maintenance] == ["site-a"]


CLI_CASES = [
    # label, options after "add --config FILE", words in the one-line error
    ("unknown site", ["--site", "site-x", "--start", GOOD[0], "--end", GOOD[1]],
     "--site site-x: not a [[site]] of"),
    ("not a date", ["--site", "site-a", "--start", "soon", "--end", GOOD[1]],
     "--start soon: not an ISO 8601 time"),
    ("no time zone", ["--site", "site-a", "--start", "2031-05-01T22:00:00", "--end", GOOD[1]],
     "--start 2031-05-01T22:00:00: expected a timezone-aware"),
    ("fractions of a second",
     ["--site", "site-a", "--start", GOOD[0], "--end", "2031-05-02T02:00:00.250+00:00"],
     "--end 2031-05-02T02:00:00.250+00:00: expected whole seconds"),
    ("end before start", ["--site", "site-a", "--start", GOOD[1], "--end", GOOD[0]],
     f"--end {GOOD[0]}: must be after the start"),
    ("empty reason", ["--site", "site-a", "--start", GOOD[0], "--end", GOOD[1], "--reason", " "],
     "--reason: must not be empty"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "options", "words"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_maintenance_cli_input_exits_2_naming_the_option(
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    label: str,
    options: list[str],
    words: str,
) -> None:
    config = write_config(tmp_path / "gateway.toml", database_url, "http://127.0.0.1:9/x")
    assert cli("add", "--config", str(config), *options) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_cli_remove_and_duplicate_errors_name_the_window(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "gateway.toml",
        database_url,
        "http://127.0.0.1:9/x",
        [("site-a", datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 1, 2, tzinfo=UTC), "m")],
    )
    add = ["add", "--config", str(config), "--site", "site-b", "--start", GOOD[0], "--end", GOOD[1]]
    assert cli(*add) == 0
    assert cli(*add) == 2
    assert "site site-b already has maintenance window" in capsys.readouterr().err
    assert cli("list", "--config", str(config), "--format", "json") == 0
    ids = {r["source"]: r["id"] for r in json.loads(capsys.readouterr().out)}
    assert cli("remove", "--config", str(config), str(ids["config"])) == 2
    assert "comes from the configuration" in capsys.readouterr().err
    assert cli("remove", "--config", str(config), "999") == 2
    assert "no maintenance window 999" in capsys.readouterr().err
    assert cli("remove", "--config", str(config), str(ids["cli"])) == 0
    assert cli("remove", "--config", str(config), str(ids["cli"])) == 2
    assert f"maintenance window {ids['cli']} was removed at" in capsys.readouterr().err


def test_maintenance_help_explains_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["maintenance", "--help"], ["maintenance", "add", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
    out = capsys.readouterr().out
    for words in ("availability schedule", "oadrCancelOpt", "--start ISO", "time zone"):
        assert words in out, words
