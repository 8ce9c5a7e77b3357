"""The VEN keeps its venID and registration across a restart and across a crash.

A real simulated VTN on an OS-assigned port and a real database: a new :class:`VenConnection`
(and a new ``dr-gateway run`` process after SIGKILL) registers with the venID the previous one
stored, the VTN sees one VEN registering twice, and the events it sends again are known from
the store: not decided again, and answered again with the stored decision (conformance rule
62: the VEN answers every event of every distribution, also those it knows). Conditions
are awaited with bounded loops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock, SystemClock
from gateway.db import make_engine, make_session_factory, unit_of_work
from gateway.settings_vtn import VtnSettings
from gateway.sites.records import JobSpec
from gateway.ven import store as event_store
from gateway.ven.client import VenConnection
from models import Event, EventResponse, VenRegistration
from simulators.hang_guard import HANG_GUARD_S
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from simulators.vtn import SimulatedVtn
from tests.support.daemon import DaemonProcess, controller_site, gateway_settings
from tests.support.settings_files import write_toml
from tests.support.ven import VTN_ID, Planner, event_spec, site
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SITES = (site("site-a"),)


def sent(factory: sessionmaker[Session], event_id: str) -> int:
    """Answers to ``event_id`` the VTN acknowledged, as the store says."""
    query = (
        select(func.count())
        .select_from(EventResponse)
        .join(Event)
        .where(Event.event_id == event_id, EventResponse.sent_at.is_not(None))
    )
    with unit_of_work(factory) as session:
        return int(session.scalar(query) or 0)


def count(factory: sessionmaker[Session], model: Any, event_id: str | None = None) -> int:
    query = select(func.count()).select_from(model)
    if model is EventResponse:
        query = query.join(Event)
    if event_id is not None:
        query = query.where(Event.event_id == event_id)
    with unit_of_work(factory) as session:
        return int(session.scalar(query) or 0)


def stored(factory: sessionmaker[Session]) -> VenRegistration | None:
    with unit_of_work(factory) as session:
        return session.get(VenRegistration, VTN_ID)


@asynccontextmanager
async def connected(
    vtn: SimulatedVtn, clock: ManualClock, factory: sessionmaker[Session], planner: Planner
) -> AsyncIterator[VenConnection]:
    """A new VenConnection with the same settings each time, started and stopped."""
    connection = VenConnection(
        VtnSettings(id=VTN_ID, url=vtn.url, ven_name="dr-gateway-test"),
        SITES,
        clock,
        factory,
        planner,
        lambda _site_id: None,
        report_interval_s=1,
    )
    try:
        await connection.start()
        yield connection
    finally:
        await connection.stop()


@pytest.fixture
async def vtn() -> AsyncIterator[SimulatedVtn]:
    server = SimulatedVtn(ManualClock(datetime.now(UTC)), poll_interval_s=1)
    await server.start()
    yield server
    await server.stop()


async def test_rule_62_new_connection_registers_as_the_same_ven_and_answers_from_the_store(
    vtn: SimulatedVtn, session_factory: sessionmaker[Session]
) -> None:
    clock = ManualClock(datetime.now(UTC))
    planner = Planner()
    async with connected(vtn, clock, session_factory, planner) as first:
        ven_id = first.ven_id
        assert ven_id is not None
        event_id = vtn.add_event_now(event_spec(clock, intervals=(1.0,)))
        await wait_for(lambda: vtn.opts_for(event_id), "the answer to the event", HANG_GUARD_S)
    row = stored(session_factory)
    assert row is not None
    assert (row.ven_id, row.registration_id) == (ven_id, first.registration_id)
    assert row.vtn_url == vtn.url
    registered_at = row.registered_at
    assert row.updated_at == registered_at == clock.now()

    clock.advance(60)
    async with connected(vtn, clock, session_factory, planner) as second:
        assert second.ven_id == ven_id
        assert list(vtn.registrations) == [ven_id], "no second VEN at the VTN"
        assert vtn.registration_count(ven_id) == 2
        # start() returned after openleadr's oadrRequestEvent: the VTN has sent the event
        # again, and the VEN answered it again with the stored decision (rule 62).
        assert vtn.server.events[ven_id], "the VTN still has the event for this VEN"
    assert [a.opt_type for a in vtn.received_answers] == ["optIn", "optIn"]
    assert {a.ven_id for a in vtn.received_answers} == {ven_id}
    assert len(planner.calls) == 1, "decided again after the restart"
    assert count(session_factory, Event) == count(session_factory, EventResponse) == 1
    row = stored(session_factory)
    assert row is not None
    assert (row.ven_id, row.registration_id) == (ven_id, second.registration_id)
    assert (row.registered_at, row.updated_at) == (registered_at, clock.now())


async def test_other_ven_id_from_the_vtn_is_stored_and_logged_once(
    vtn: SimulatedVtn, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(datetime.now(UTC))
    async with connected(vtn, clock, session_factory, Planner()) as first:
        old_ven_id = first.ven_id

    # A VTN that has forgotten the VEN and gives it a new venID.
    register = vtn.server.services["registration_service"].on_create_party_registration
    vtn.server.add_handler(
        "on_create_party_registration", lambda payload: register({**payload, "ven_id": None})
    )
    caplog.set_level(logging.WARNING, logger="gateway.ven.registration")
    async with connected(vtn, clock, session_factory, Planner()) as second:
        new_ven_id = second.ven_id
    assert new_ven_id is not None and new_ven_id != old_ven_id
    row = stored(session_factory)
    assert row is not None and row.ven_id == new_ven_id

    vtn.server.add_handler("on_create_party_registration", register)
    async with connected(vtn, clock, session_factory, Planner()) as third:
        assert third.ven_id == new_ven_id
    warnings = [r for r in caplog.records if r.name == "gateway.ven.registration"]
    assert len(warnings) == 1
    assert new_ven_id in warnings[0].getMessage() and str(old_ven_id) in warnings[0].getMessage()


# -- a crashed process ---------------------------------------------------------------------


class Daemon(DaemonProcess):
    """``dr-gateway run`` as a process against a simulated VTN and one simulated site."""

    def __init__(self, tmp_path: Path, database_url: str, vtn: SimulatedVtn, site_url: str) -> None:
        # A real process: the shared hang guard, not a figure from a quiet machine (a daemon
        # starting beside a full suite on two cores took over 15 s to register).
        super().__init__(tmp_path / "daemon.log")
        self.vtn = vtn
        only = controller_site(
            "only",
            site_url,
            "token-of-only-site",
            gpus_total=4,
            it_power_max_kw=3.0,
            wan_bandwidth_gbps=1.0,
            vtn=VTN_ID,
        )
        settings = gateway_settings(
            database_url,
            [only],
            scheduler={"poll_interval_s": 0.5, "plan_interval_s": 1.0},
            vtn=[{"id": VTN_ID, "url": vtn.url, "ven_name": "dr-gateway-crash-test"}],
        )
        self.config = write_toml(tmp_path / "gateway.toml", settings)
        self.engine = make_engine(database_url)
        self.factory = make_session_factory(self.engine)

    async def launch(self) -> None:
        await self.start(self.config)

    async def close(self) -> None:
        await super().close()
        self.engine.dispose()


@asynccontextmanager
async def daemon_world(tmp_path: Path, database_url: str) -> AsyncIterator[Daemon]:
    """The daemon's world; ``database_url`` is an empty database (``dr-gateway run`` upgrades
    it at start)."""
    clock = SystemClock()
    site = SimulatedSite(
        site_id="only",
        token="token-of-only-site",
        clock=clock,
        trace=RenewableTrace.constant(5.0),
        gpus_total=4,
        it_power_max_kw=3.0,
        jobs=[JobSpec("job-a", 1, 0.6, 2.0, 10.0, migratable=True)],
    )
    runner, site_url = await start_site_server(site)
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    await vtn.start()
    daemon = Daemon(tmp_path, database_url, vtn, site_url)
    try:
        yield daemon
    finally:
        await daemon.close()
        await vtn.stop()
        await runner.cleanup()


def registered_again(daemon: Daemon, ven_id: str) -> Callable[[], bool]:
    """The restarted daemon stored the VTN's new registration: openleadr's oadrRequestEvent
    (the VTN sending its events again) came before it."""

    def check() -> bool:
        return bool(
            getattr(stored(daemon.factory), "registration_id", None)
            == daemon.vtn.registrations[ven_id].registration_id
        )

    return check


async def test_ven_id_and_answers_survive_sigkill_of_the_daemon(
    tmp_path: Path, empty_database_url: str
) -> None:
    async with daemon_world(tmp_path, empty_database_url) as daemon:
        vtn, factory = daemon.vtn, daemon.factory
        await daemon.launch()
        await daemon.until(lambda: vtn.registrations, "the first registration")
        (ven_id,) = vtn.registrations
        await daemon.until(lambda: stored(factory) is not None, "the stored registration")
        event_id = vtn.add_event_now(event_spec(SystemClock(), intervals=(1.0,)))
        await daemon.until(
            lambda: vtn.opts_for(event_id) and sent(factory, event_id) == 1,
            "the answer to the event, stored, sent and acknowledged",
        )
        (first_answer,) = {a.opt_type for a in vtn.received_answers}

        await daemon.kill()
        answers_before = len(vtn.received_answers)

        await daemon.launch()
        await daemon.until(
            lambda: vtn.registration_count(ven_id) == 2, "the registration after restart"
        )
        await daemon.until(
            registered_again(daemon, ven_id), "the stored registration after restart"
        )

        # The VTN sent the event again in answer to oadrRequestEvent (before the registration
        # was stored): answered again, with the stored decision (rule 62).
        assert len(vtn.received_answers) == answers_before + 1
        assert list(vtn.registrations) == [ven_id], "the VTN saw another VEN after the restart"
        assert {a.ven_id for a in vtn.received_answers} == {ven_id}
        assert {a.opt_type for a in vtn.received_answers} == {first_answer}
        assert count(factory, Event, event_id) == 1
        assert count(factory, EventResponse, event_id) == 1, "decided once, across the crash"
        row = stored(factory)
        assert row is not None and row.ven_id == ven_id
        assert row.registration_id == vtn.registrations[ven_id].registration_id


def event_state(factory: sessionmaker[Session]) -> list[tuple[str, int, str, str | None, bool]]:
    """(event id, newest modification, status, opt in force, active now) of every event."""
    now = SystemClock().now()
    with unit_of_work(factory) as session:
        return sorted(
            (
                p.event.event_id,
                p.event.modification_number,
                p.event.status,
                p.opt,
                p.event.is_active_at(now),
            )
            for p in event_store.participations(session)
        )


async def test_three_events_one_active_survive_sigkill_decided_once_and_answered_again(
    tmp_path: Path, empty_database_url: str
) -> None:
    clock = SystemClock()
    async with daemon_world(tmp_path, empty_database_url) as daemon:
        vtn, factory = daemon.vtn, daemon.factory
        await daemon.launch()
        await daemon.until(lambda: vtn.registrations, "the first registration")
        await daemon.until(lambda: stored(factory) is not None, "the stored registration")
        (ven_id,) = vtn.registrations
        active = vtn.add_event_now(
            event_spec(clock, start_at=clock.now() - timedelta(minutes=5), intervals=(1.0,))
        )
        soon = vtn.add_event_now(event_spec(clock, start_at=clock.now() + timedelta(hours=1)))
        later = vtn.add_event_now(event_spec(clock, start_at=clock.now() + timedelta(hours=3)))
        events = (active, soon, later)
        await daemon.until(
            lambda: all(sent(factory, e) == 1 for e in events), "three answers, acknowledged"
        )
        before = event_state(factory)
        assert [e[4] for e in before] == [True, False, False], "one event active now"
        # Each distribution carries every current event, and each is answered (rule 12).
        assert {a.event_id for a in vtn.received_answers} == set(events)
        answered_before = len(vtn.received_answers)

        await daemon.kill()
        # While the gateway is down the VTN modifies one event and issues another.
        vtn.modify(later, (2.0, 2.0))
        missed = vtn.add_event_now(event_spec(clock, start_at=clock.now() + timedelta(hours=5)))

        await daemon.launch()
        await daemon.until(
            registered_again(daemon, ven_id), "the stored registration after restart"
        )
        await daemon.until(
            lambda: sent(factory, missed) == 1 and sent(factory, later) == 2,
            "the answers to what changed while down",
        )

        after = event_state(factory)
        assert [e for e in after if e[0] in (active, soon)] == [
            e for e in before if e[0] in (active, soon)
        ], "the same state and opts for the events that did not change"
        assert {e[0]: e[1] for e in after}[later] == 1, "the modification is known"
        assert {e[0] for e in after} == {*events, missed}, "no event lost"
        opts: dict[tuple[str, int], set[str]] = {}
        for a in vtn.received_answers:
            opts.setdefault((a.event_id, a.modification_number), set()).add(a.opt_type)
        assert sorted(opts) == sorted(
            [(active, 0), (soon, 0), (later, 0), (later, 1), (missed, 0)]
        ), "every version answered"
        assert all(len(answered) == 1 for answered in opts.values()), "one decision per version"
        for e in (*events, missed):
            assert count(factory, EventResponse, e) == (2 if e == later else 1), (
                "each version decided once, across the crash"
            )
        again = {
            (a.event_id, a.modification_number) for a in vtn.received_answers[answered_before:]
        }
        assert again >= {(active, 0), (soon, 0), (later, 1), (missed, 0)}, (
            "the restarted VEN answered every event the VTN sent again (rule 62)"
        )
        assert list(vtn.registrations) == [ven_id]
