"""Reconnection of the VEN: outages at runtime, re-registration, the endless 463 loop.

Real simulated VTNs (openleadr's ``OpenADRServer``) on OS-assigned ports and a real database
(SQLite and PostgreSQL). A VTN goes down and comes back on the same port
(``SimulatedVtn.start(port)``); a VTN that lost its memory is a new ``SimulatedVtn`` on that
port; what the stock VTN cannot send (a re-registration request, 463 answers to polls) is
injected in openleadr's external ``on_poll`` mode. Timings are short: the VTN asks for a 1 s
poll, two failed polls make an outage, back-off starts at 0.1 s and stops at 0.5 s.

The back-off and the loop are also tested on their own, with seeded jitter and a recorded
sleep (no wall time).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from openleadr import OpenADRClient, errors
from sqlalchemy.orm import Session, sessionmaker

from gateway.backoff import Backoff
from gateway.clock import ManualClock
from gateway.db import unit_of_work
from gateway.errors import ConfigError, GatewayError
from gateway.settings import parse_settings
from gateway.settings_vtn import VtnSettings
from gateway.ven.client import VenConnection
from gateway.ven.reconnect import Loss, Reconnector
from models import VenRegistration
from simulators.vtn import SimulatedVtn
from tests.support.ven import SITES, VTN_ID, Planner, event_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

TIMING: dict[str, Any] = {
    "reconnect_initial_s": 0.1,
    "reconnect_max_s": 0.5,
    "outage_after_failures": 2,
    "request_timeout_s": 0.5,
}
"""Short timings for the tests; the VTNs ask for a 1 s poll."""
POWER_KW = {"site-a": 40.0, "site-b": 10.0}

# -- a VTN that misbehaves, and one that answers polls as told ------------------------------

FaultMode = Literal["none", "http500", "garbage", "hang"]


@dataclass
class Faults:
    """Makes a simulated VTN misbehave at the HTTP layer; records when it answered polls.

    Install it before the VTN's first start (aiohttp freezes its middlewares then).
    """

    mode: FaultMode = "none"
    polls_at: list[float] = field(default_factory=list)
    """``time.monotonic()`` of every poll the VTN answered itself."""
    hung: int = 0
    """Requests held by "hang" so far."""
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self, vtn: SimulatedVtn) -> None:
        vtn.server.app.middlewares.append(self._middleware)

    def set(self, mode: FaultMode) -> None:
        self._release.set()  # requests held by "hang" get an error now
        self._release = asyncio.Event()
        self.mode = mode

    def polled_since(self, at: float) -> float | None:
        """When the first poll after ``at`` was answered; None before it."""
        return next((t for t in self.polls_at if t > at), None)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.mode == "http500":
            return web.Response(status=500, text="internal server error")
        if self.mode == "garbage":
            return web.Response(text="<oadrPayload><oadrSignedObject>", content_type="text/xml")
        if self.mode == "hang":
            self.hung += 1
            await self._release.wait()
            return web.Response(status=503)
        response = await handler(request)
        if request.path.endswith("/OadrPoll"):
            self.polls_at.append(time.monotonic())
        return response


class PollScript:
    """openleadr's external ``on_poll`` mode: ``answer(ven_id)`` gives the exception the VTN
    raises for a poll (openleadr turns it into the message: ``RequestReregistration`` into
    ``oadrRequestReregistration``, ``NotRegisteredOrAuthorizedError`` into 463), or None for
    the stock answer (the VEN's queued events, as openleadr's internal mode sends them)."""

    def __init__(self, vtn: SimulatedVtn, answer: Callable[[str], Exception | None]) -> None:
        self.vtn = vtn
        self.answer = answer
        self.answered: list[tuple[float, str]] = []
        """(``time.monotonic()``, exception name or "stock") for every poll."""
        vtn.server.add_handler("on_poll", self._on_poll)
        # add_handler switches the event service to external mode too; keep it stock.
        vtn.server.services["event_service"].polling_method = "internal"

    def count(self, kind: str) -> int:
        return sum(1 for _, answered in self.answered if answered == kind)

    async def _on_poll(self, ven_id: str) -> Any:
        problem = self.answer(ven_id)
        self.answered.append(
            (time.monotonic(), "stock" if problem is None else type(problem).__name__)
        )
        if problem is not None:
            raise problem
        polls = self.vtn.server.services["poll_service"]
        if polls.events_updated.get(ven_id):
            polls.events_updated[ven_id] = False
            return await self.vtn.server.services["event_service"].request_event({"ven_id": ven_id})
        return None


# -- helpers ------------------------------------------------------------------------------------


def port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def connection_to(
    url: str,
    clock: ManualClock,
    session_factory: sessionmaker[Session],
    sites: Sequence[Any] = SITES,
    **settings: Any,
) -> VenConnection:
    return VenConnection(
        VtnSettings(id=VTN_ID, url=url, ven_name="dr-gateway-reconnect", **{**TIMING, **settings}),
        sites,
        clock,
        session_factory,
        Planner(),
        POWER_KW.get,
        report_interval_s=1,
        rng=random.Random(4),
    )


@asynccontextmanager
async def vtn_with_faults(clock: ManualClock) -> AsyncIterator[tuple[SimulatedVtn, Faults]]:
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    faults = Faults()
    faults.install(vtn)
    await vtn.start()
    try:
        yield vtn, faults
    finally:
        faults.set("none")
        await vtn.stop()


OPENLEADR_HOUSEKEEPING = frozenset({"_poll", "_event_status_log", "_event_cleanup"})
"""The jobs every openleadr client schedules besides its report jobs."""


def report_jobs(client: Any) -> int:
    """The report jobs in a client's scheduler (openleadr: one per report request)."""
    return sum(
        1
        for job in client.scheduler.get_jobs()
        if getattr(job.func, "__name__", None) not in OPENLEADR_HOUSEKEEPING
    )


def readings_per_series(vtn: SimulatedVtn) -> dict[tuple[str | None, str, str | None], int]:
    counts: dict[tuple[str | None, str, str | None], int] = {}
    for reading in vtn.telemetry:
        key = (reading.ven_id, reading.measurement, reading.resource_id)
        counts[key] = counts.get(key, 0) + 1
    return counts


async def report_rate(vtn: SimulatedVtn, window_s: float) -> dict[Any, int]:
    """Readings the VTN received per series in ``window_s`` wall seconds."""
    before = readings_per_series(vtn)
    await asyncio.sleep(window_s)
    after = readings_per_series(vtn)
    return {key: count - before.get(key, 0) for key, count in after.items()}


def stored_ven_id(factory: sessionmaker[Session]) -> str | None:
    with unit_of_work(factory) as session:
        row = session.get(VenRegistration, VTN_ID)
        return None if row is None else row.ven_id


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("gateway.ven") and text in r.getMessage()
    ]


@pytest.fixture
def clock() -> ManualClock:
    """Simulated time starting at the present: openleadr judges event status on the wall."""
    return ManualClock(datetime.now(UTC))


# -- (1) an outage at runtime -------------------------------------------------------------------


async def test_rule_outage_at_runtime_is_logged_once_and_the_ven_comes_back_with_its_ven_id(
    clock: ManualClock, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ven")
    async with vtn_with_faults(clock) as (vtn, faults):
        port = port_of(vtn.url)
        connection = connection_to(vtn.url, clock, session_factory)
        try:
            await connection.start()
            ven_id = connection.ven_id
            assert ven_id is not None and connection.supervised
            await wait_for(lambda: vtn.telemetry, "the first reading")

            await vtn.stop()
            await wait_for(lambda: not connection.available, "the outage to be noticed")
            await asyncio.sleep(1.5)  # several failed attempts at the back-off's longest wait
            assert not connection.available and connection.supervised

            await vtn.start(port)  # the same VTN, back on the same port
            back_at = time.monotonic()
            await wait_for(
                lambda: connection.available and faults.polled_since(back_at), "polls again"
            )
            # Two failed polls make an outage (the back-off's cap is checked on its own below).
            (unavailable,) = messages(caplog, "is unavailable")
            assert "2 polls in a row failed" in unavailable, unavailable

            assert connection.ven_id == ven_id and stored_ven_id(session_factory) == ven_id
            assert list(vtn.registrations) == [ven_id]
            assert vtn.registration_count(ven_id) == 2
            event_id = vtn.add_event_now(event_spec(clock))
            await wait_for(lambda: vtn.opts_for(event_id), "the answer after the outage")
            readings = len(vtn.telemetry)
            await wait_for(lambda: len(vtn.telemetry) > readings, "readings after the outage")
        finally:
            await connection.stop()
    assert not connection.supervised
    assert len(messages(caplog, "is unavailable")) == 1, "logged once on the way down"
    assert len(messages(caplog, "is back")) == 1, "logged once on recovery"


async def test_a_vtn_that_restarted_empty_gets_the_same_ven_id_registered_again(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    first = SimulatedVtn(clock, poll_interval_s=1)
    await first.start()
    port = port_of(first.url)
    connection = connection_to(first.url, clock, session_factory)
    second: SimulatedVtn | None = None
    try:
        await connection.start()
        ven_id = connection.ven_id
        await first.stop()
        await wait_for(lambda: not connection.available, "the outage to be noticed")
        second = SimulatedVtn(clock, poll_interval_s=1)  # knows no VEN
        await second.start(port)
        await wait_for(lambda: connection.available, "the registration at the new VTN")
        assert list(second.registrations) == [ven_id]
        event_id = second.add_event_now(event_spec(clock))
        await wait_for(lambda: second is not None and second.opts_for(event_id), "the answer")
    finally:
        await connection.stop()
        if second is not None:
            await second.stop()


async def test_a_failed_start_retried_in_the_background_joins_a_vtn_that_comes_up(
    clock: ManualClock, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ven")
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    await vtn.start()
    url, port = vtn.url, port_of(vtn.url)
    await vtn.stop()
    connection = connection_to(url, clock, session_factory)
    try:
        with pytest.raises(GatewayError, match="not reachable"):
            await connection.start()
        assert not connection.supervised, "one attempt, nothing left running"
        connection.retry_in_background()
        await asyncio.sleep(1.0)
        await vtn.start(port)
        await wait_for(lambda: connection.available, "the late VTN to register us")
    finally:
        await connection.stop()
        await vtn.stop()
    assert len(messages(caplog, "is unavailable")) == 1


# -- (3) re-registration: a clean rebuild -------------------------------------------------------


async def test_rule_reregistration_rebuilds_the_client_with_exactly_one_set_of_report_jobs(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    async with vtn_with_faults(clock) as (vtn, _):
        connection = connection_to(vtn.url, clock, session_factory)
        try:
            await connection.start()
            ven_id = connection.ven_id
            assert ven_id is not None
            old = connection._client
            jobs = report_jobs(old)
            assert jobs >= 1, "a report job per report the VTN asked for"
            rate_before = await report_rate(vtn, 3.0)

            asked: list[str] = []

            def reregister_once(polling_ven_id: str) -> Exception | None:
                if asked:
                    return None
                asked.append(polling_ven_id)
                return errors.RequestReregistration(polling_ven_id)

            script = PollScript(vtn, reregister_once)
            await wait_for(
                lambda: connection.available and connection._client is not old,
                "the rebuilt client",
            )
            new = connection._client
            assert asked == [ven_id]
            assert not old.scheduler.running and old.client_session.closed
            assert old.report_queue_task.done()
            assert report_jobs(new) == jobs, "exactly one set of report jobs"
            assert connection.ven_id == ven_id and vtn.registration_count(ven_id) == 2

            await wait_for(lambda: script.count("stock") >= 2, "polls of the new client")
            rate_after = await report_rate(vtn, 3.0)
            event_id = vtn.add_event_now(event_spec(clock))
            await wait_for(lambda: vtn.opts_for(event_id), "the answer after the rebuild")
        finally:
            await connection.stop()
    series = {key for key, count in rate_before.items() if count > 0}
    assert series, "readings flowed before"
    for key in series:
        # 1 s reports over 3 s: three or four readings; twice that if jobs were duplicated.
        assert 1 <= rate_after.get(key, 0) <= max(rate_before[key], 4), (key, rate_after)


async def test_openleadrs_own_reregistration_duplicates_the_report_jobs(
    clock: ManualClock,
) -> None:
    """openadr-notes pitfall 9: why the gateway rebuilds instead."""
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    await vtn.start()
    client: Any = OpenADRClient(ven_name="plain-openleadr", vtn_url=vtn.url)
    client.add_report(
        callback=lambda: 1.0,
        resource_id="r1",
        measurement="REAL_POWER",
        unit="W",
        sampling_rate=timedelta(seconds=1),
        report_duration=timedelta(seconds=1),
    )
    try:
        await client.run()
        before = report_jobs(client)
        ven_id = client.ven_id
        PollScript(vtn, lambda v: errors.RequestReregistration(v) if v == ven_id else None)
        await wait_for(lambda: vtn.registration_count(ven_id) >= 2, "openleadr's re-registration")
        await wait_for(lambda: report_jobs(client) > before, "the report jobs it adds")
        assert before == 1 and report_jobs(client) >= 2 * before
    finally:
        await client.stop()
        await vtn.stop()


# -- (3b) a report registration without an answer -------------------------------------------


class HeldReportRegistration:
    """Holds the VEN's first ``oadrRegisterReport`` at the VTN until :meth:`release`, so the
    VEN's request times out; counts every ``oadrRegisterReport`` the VTN receives. Install it
    before the VTN's first start."""

    def __init__(self, vtn: SimulatedVtn) -> None:
        self.received = 0
        self._release = asyncio.Event()
        vtn.server.app.middlewares.append(self._middleware)

    def release(self) -> None:
        self._release.set()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/EiReport") and b"oadrRegisterReport" in await request.read():
            self.received += 1
            if self.received == 1:
                await self._release.wait()
                return web.Response(status=503)
        return await handler(request)


async def test_rule_a_report_registration_left_unanswered_is_sent_again_after_a_poll(
    clock: ManualClock, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """openleadr drops an ``oadrRegisterReport`` that got no answer: the VEN never reported
    (seen under load, with a 0.5 s request timeout). The VEN sends it again after the next
    poll; the connection stays up and is not rebuilt."""
    caplog.set_level(logging.INFO, logger="gateway.ven")
    vtn = SimulatedVtn(clock, poll_interval_s=1)
    held = HeldReportRegistration(vtn)
    await vtn.start()
    connection = connection_to(vtn.url, clock, session_factory)
    try:
        await connection.start()
        ven_id = connection.ven_id
        assert ven_id is not None
        await wait_for(lambda: vtn.telemetry, "readings once the reports are registered again")
        assert held.received == 2, "sent again once, after a poll"
        assert connection.available and vtn.registration_count(ven_id) == 1, "never rebuilt"
        assert len(messages(caplog, "no oadrRegisteredReport answer")) == 1
        assert len(messages(caplog, "took the VEN's reports")) == 1
        assert messages(caplog, "is unavailable") == []
        event_id = vtn.add_event_now(event_spec(clock))
        await wait_for(lambda: vtn.opts_for(event_id), "an answer on the same connection")
    finally:
        held.release()
        await connection.stop()
        await vtn.stop()


# -- (4) the endless 463 loop -------------------------------------------------------------------


async def test_rule_repeated_463_answers_to_polls_make_the_ven_register_again(
    clock: ManualClock, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """A VTN that lost its registrations and answers the VEN's polls with 463 (rather than
    asking it to register again) until the VEN registers: openleadr would poll for ever."""
    caplog.set_level(logging.INFO, logger="gateway.ven")
    async with vtn_with_faults(clock) as (vtn, _):
        connection = connection_to(vtn.url, clock, session_factory)
        try:
            await connection.start()
            ven_id = connection.ven_id
            assert ven_id is not None
            forgotten_at = vtn.registration_count(ven_id)

            def not_registered(polling_ven_id: str) -> Exception | None:
                if vtn.registration_count(polling_ven_id) > forgotten_at:
                    return None
                return errors.NotRegisteredOrAuthorizedError(
                    f"venID {polling_ven_id} is not registered here"
                )

            script = PollScript(vtn, not_registered)
            await wait_for(
                lambda: vtn.registration_count(ven_id) == forgotten_at + 1,
                "the registration after repeated 463",
            )
            await wait_for(
                lambda: connection.available and script.count("stock") >= 1,
                "a poll answered normally",
            )
            refused = script.count("NotRegisteredOrAuthorizedError")
            assert refused == TIMING["outage_after_failures"], "no more 463s than the threshold"
            assert connection.ven_id == ven_id, "the VTN accepted the same venID"
        finally:
            await connection.stop()
    assert any("463" in m for m in messages(caplog, "is unavailable"))


async def test_a_vtn_refusing_for_ever_is_retried_ever_more_slowly(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    async with vtn_with_faults(clock) as (vtn, _):
        connection = connection_to(
            vtn.url, clock, session_factory, reconnect_initial_s=0.2, reconnect_max_s=4.0
        )
        try:
            await connection.start()
            ven_id = connection.ven_id
            assert ven_id is not None
            refusing = True
            script = PollScript(
                vtn,
                lambda v: errors.NotRegisteredOrAuthorizedError() if refusing else None,
            )
            await wait_for(lambda: vtn.registration_count(ven_id) >= 4, "three rebuilds")
            # The first rebuild is at once (the VEN was healthy); each later one waits
            # longer, since no poll was answered normally in between.
            backoff = connection._reconnector.backoff
            assert backoff.attempts >= 2, "the delay was not reset between refusals"
            refusing = False
            await wait_for(
                lambda: connection.available and script.count("stock") >= 1,
                "a poll answered normally",
                timeout_s=12.0,
            )
        finally:
            await connection.stop()


async def test_rule_the_463_loop_after_a_mutual_tls_vtn_restart_is_broken(
    clock: ManualClock,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reproduced, not injected: an openleadr VTN with mutual TLS that restarts without its
    registrations asks the VEN to register again, then refuses the VEN's venID with 463
    (its signature check looks the venID up first). Stock openleadr repeats this at every
    poll for ever; the gateway registers as a new VEN at its next attempt."""
    from tests.integration.test_ven_tls import build_pki, ven_settings, vtn_tls

    caplog.set_level(logging.INFO, logger="gateway.ven")
    pki = build_pki(tmp_path, "ec")
    first = SimulatedVtn(clock, poll_interval_s=1, tls=vtn_tls(pki))
    await first.start()
    port = port_of(first.url)
    connection = VenConnection(
        ven_settings(pki, first.url, **TIMING),
        SITES,
        clock,
        session_factory,
        Planner(),
        POWER_KW.get,
        report_interval_s=1,
        rng=random.Random(5),
    )
    second = SimulatedVtn(clock, poll_interval_s=1, tls=vtn_tls(pki))  # knows no VEN
    faults = Faults()
    faults.install(second)
    try:
        await connection.start()
        old_ven_id = connection.ven_id
        assert old_ven_id is not None
        await first.stop()
        await second.start(port)
        back_at = time.monotonic()
        await wait_for(
            lambda: connection.available and connection.ven_id in second.registrations,
            "the registration at the restarted VTN",
        )
        new_ven_id = connection.ven_id
        assert new_ven_id != old_ven_id
        assert list(second.registrations) == [new_ven_id]
        assert stored_ven_id(session_factory) == new_ven_id
        await wait_for(lambda: faults.polled_since(back_at), "polls of the restarted VTN")
        event_id = second.add_event_now(event_spec(clock))
        await wait_for(lambda: second.opts_for(event_id), "the answer over mutual TLS")
    finally:
        await connection.stop()
        await second.stop()
        await first.stop()
    assert any(f"refused to register VEN id {old_ven_id} (463" in m for m in caplog.messages)


# -- the back-off and the loop on their own -----------------------------------------------------


BACKOFF_CASES = [
    pytest.param(1.0, 8.0, [1, 2, 4, 8, 8, 8], id="doubles up to the maximum"),
    pytest.param(0.1, 0.5, [0.1, 0.2, 0.4, 0.5, 0.5], id="short test timings"),
    pytest.param(5.0, 5.0, [5, 5, 5], id="initial equals maximum"),
]


@pytest.mark.parametrize(("initial_s", "max_s", "bases_s"), BACKOFF_CASES)
def test_backoff_doubles_with_jitter_of_half_either_way_never_above_the_maximum(
    initial_s: float, max_s: float, bases_s: list[float]
) -> None:
    for seed in range(50):
        backoff = Backoff(initial_s, max_s, random.Random(seed))
        for base_s in bases_s:
            delay_s = backoff.next_delay_s()
            assert 0.5 * base_s <= delay_s <= min(1.5 * base_s, max_s)
        backoff.reset()
        assert backoff.attempts == 0
        assert 0.5 * initial_s <= backoff.next_delay_s() <= min(1.5 * initial_s, max_s)


def test_backoff_jitter_spreads_the_delays() -> None:
    delays = {round(Backoff(1.0, 8.0, random.Random(seed)).next_delay_s(), 3) for seed in range(20)}
    assert len(delays) > 15


def test_backoff_refuses_a_maximum_below_the_first_delay() -> None:
    with pytest.raises(ValueError, match="initial_s <= max_s"):
        Backoff(2.0, 1.0)


class NoJitter(random.Random):
    """Jitter factor 1: the back-off's delays are its bases."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@dataclass
class Rig:
    """A Reconnector over scripted attempts and losses; the sleep records its delays."""

    outcomes: list[Exception | None]
    """What each connect attempt does: raise it, or succeed (None)."""
    losses: list[Loss]
    delays_s: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> None:
        outcome = self.outcomes.pop(0)
        self.events.append("connect" if outcome is None else type(outcome).__name__)
        if not self.outcomes:
            self.done.set()
        if outcome is not None:
            raise outcome

    async def disconnect(self) -> None:
        self.events.append("disconnect")

    async def lost(self) -> Loss:
        if not self.losses:
            self.done.set()
            await asyncio.Event().wait()
        return self.losses.pop(0)

    async def sleep(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)

    def went_down(self, why: str) -> None:
        self.events.append(f"down: {why}")


def outage(healthy: bool = True) -> Loss:
    return Loss("outage", "polls failed", healthy)


LOOP_CASES = [
    pytest.param(
        [GatewayError("x"), GatewayError("x"), None],
        [],
        False,
        [0.1, 0.2, 0.4],
        id="start failed: back-off before every attempt",
    ),
    pytest.param(
        [None],
        [Loss("reregistration", "asked", healthy=True)],
        True,
        [],
        id="re-registration after a healthy spell: rebuilt at once",
    ),
    pytest.param(
        [GatewayError("refused"), None],
        [Loss("unregistered", "463", healthy=True)],
        True,
        [0.1],
        id="lost registration: at once, then back-off",
    ),
    pytest.param(
        [None, None, None],
        [Loss("unregistered", "463", False)] * 3,
        True,
        [0.1, 0.2, 0.4],
        id="never healthy in between: ever longer waits",
    ),
    pytest.param(
        [None, None],
        [outage(healthy=False), outage(healthy=True)],
        True,
        [0.1, 0.1],
        id="an outage always waits; a healthy spell resets the delay",
    ),
]


@pytest.mark.parametrize(("outcomes", "losses", "connected", "delays_s"), LOOP_CASES)
async def test_reconnector_waits_the_back_off_it_should(
    outcomes: list[Exception | None],
    losses: list[Loss],
    connected: bool,
    delays_s: list[float],
) -> None:
    rig = Rig(list(outcomes), list(losses))
    reconnector = Reconnector(
        "T",
        rig.connect,
        rig.disconnect,
        rig.lost,
        rig.went_down,
        Backoff(0.1, 10.0, NoJitter()),
        sleep=rig.sleep,
    )
    reconnector.ensure_running(connected=connected)
    await asyncio.wait_for(rig.done.wait(), timeout=2.0)
    await asyncio.sleep(0)
    assert reconnector.running, "the loop goes on waiting for the next loss"
    await reconnector.cancel()
    assert not reconnector.running
    assert rig.delays_s == pytest.approx(delays_s)
    assert rig.events.count("disconnect") == len(losses)
    downs = [e for e in rig.events if e.startswith("down: ")]
    assert len(downs) == sum(1 for loss in losses if loss.kind != "reregistration")


async def test_reconnector_gives_up_on_a_configuration_error() -> None:
    rig = Rig([GatewayError("x"), ConfigError("wrong fingerprint"), None], [])
    reconnector = Reconnector(
        "T",
        rig.connect,
        rig.disconnect,
        rig.lost,
        rig.went_down,
        Backoff(0.1, 1.0),
        sleep=rig.sleep,
    )
    reconnector.ensure_running(connected=False)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reconnector.running
    assert rig.events == ["GatewayError", "ConfigError"]


# -- settings -----------------------------------------------------------------------------------

TIMING_CASES = [
    pytest.param(
        {"reconnect_initial_s": 10, "reconnect_max_s": 5},
        "vtn[0].reconnect_max_s: 5.0 is below reconnect_initial_s = 10.0",
        id="maximum below the first wait",
    ),
    pytest.param(
        {"outage_after_failures": 0},
        "vtn[0].outage_after_failures: Input should be greater than or equal to 1",
        id="no failure at all",
    ),
    pytest.param(
        {"request_timeout_s": 0},
        "vtn[0].request_timeout_s: Input should be greater than 0",
        id="no time to answer",
    ),
    pytest.param(
        {"reconnect_initial_s": -1},
        "vtn[0].reconnect_initial_s: Input should be greater than 0",
        id="negative wait",
    ),
]


@pytest.mark.parametrize(("changes", "message"), TIMING_CASES)
def test_bad_reconnection_settings_are_refused_naming_the_key(
    changes: dict[str, Any], message: str
) -> None:
    vtn = {"id": VTN_ID, "url": "http://127.0.0.1:8080/", "ven_name": "x", **changes}
    with pytest.raises(ConfigError) as exc:
        parse_settings({"vtn": [vtn]}, "gateway.toml")
    assert str(exc.value).startswith(f"gateway.toml: {message}"), exc.value
