"""Several utilities in one daemon: one VTN misbehaving does not touch the other.

One gateway daemon (``Gateway``) with two ``[[vtn]]`` and a site behind each, against two real
simulated VTNs (openleadr) and two simulated site controllers on OS-assigned ports, on SQLite
and PostgreSQL. Utility A goes down, answers HTTP 500, answers garbage or hangs; while A stays in
that state, utility B's events are still answered and its reports still flow, and B is never
rebuilt. A hanging A holds every request until the test releases it, so a daemon whose start or
whose polls of B waited on A would hang the test rather than pass it. When A is back, the VEN
polls it again, with the same venID. Short timings: 1 s polls, two failed polls make an
outage, 0.5 s request timeout, back-off 0.1 s to 0.5 s.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.daemon.gateway import Gateway
from gateway.settings import parse_settings
from gateway.ven.client import VenConnection
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from simulators.vtn import SimulatedVtn
from tests.integration.test_ven_reconnect import TIMING, FaultMode, Faults, port_of
from tests.support.ven import event_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

POLL_S = 1.0
UTILITIES = ("utility-a", "utility-b")


@dataclass
class Utility:
    """One VTN of the rig, with the site it serves."""

    vtn: SimulatedVtn
    faults: Faults
    port: int
    site: SimulatedSite


@dataclass
class World:
    clock: ManualClock
    gateway: Gateway
    utilities: dict[str, Utility]

    def ven(self, vtn_id: str) -> VenConnection:
        (connection,) = [c for c in self.gateway.vens if c.vtn_id == vtn_id]
        return connection


@asynccontextmanager
async def two_utilities(
    session_factory: sessionmaker[Session],
    database_url: str,
    fault_at_start: FaultMode = "none",
) -> AsyncIterator[World]:
    """A daemon serving two utilities; utility A misbehaves with ``fault_at_start`` at first."""
    clock = ManualClock(datetime.now(UTC))
    runners: list[web.AppRunner] = []
    utilities: dict[str, Utility] = {}
    site_settings: list[dict[str, Any]] = []
    try:
        for vtn_id in UTILITIES:
            site_id = f"site-{vtn_id[-1]}"
            token = f"token-of-{site_id}"
            site = SimulatedSite(
                site_id=site_id,
                token=token,
                clock=clock,
                trace=RenewableTrace.constant(5.0),
                gpus_total=8,
                it_power_max_kw=6.0,
            )
            runner, site_url = await start_site_server(site)
            runners.append(runner)
            vtn = SimulatedVtn(clock, vtn_id=vtn_id.upper(), poll_interval_s=POLL_S)
            faults = Faults()
            faults.install(vtn)
            await vtn.start()
            utilities[vtn_id] = Utility(vtn, faults, port_of(vtn.url), site)
            site_settings.append(
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "wan_bandwidth_gbps": 1.0,
                    "controller_url": site_url,
                    "controller_token": token,
                    "vtn": vtn_id,
                }
            )
        utilities["utility-a"].faults.set(fault_at_start)
        settings = parse_settings(
            {
                "database": {"url": database_url},
                "vtn": [
                    {
                        "id": vtn_id,
                        "url": u.vtn.url,
                        "ven_name": "dr-gateway-multi",
                        "report_interval_s": 1,
                        **TIMING,
                    }
                    for vtn_id, u in utilities.items()
                ],
                "site": site_settings,
            },
            "test",
        )
        gateway = Gateway(settings, clock, session_factory)
        try:
            await gateway.start(schedule=False)
            yield World(clock, gateway, utilities)
        finally:
            await gateway.stop()
    finally:
        for utility in utilities.values():
            utility.faults.set("none")
            await utility.vtn.stop()
        for runner in runners:
            await runner.cleanup()


def unavailable_logs(caplog: pytest.LogCaptureFixture, vtn_id: str) -> list[str]:
    return [
        m for m in caplog.messages if m.startswith(f"VTN {vtn_id} at ") and "is unavailable" in m
    ]


Misbehaviour = Literal["down", "http500", "garbage", "hang"]


@pytest.mark.parametrize("misbehaviour", ["down", "http500", "garbage", "hang"])
async def test_rule_one_vtn_misbehaving_does_not_touch_the_other(
    misbehaviour: Misbehaviour,
    session_factory: sessionmaker[Session],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="gateway")
    async with two_utilities(session_factory, database_url) as world:
        a, b = world.utilities["utility-a"], world.utilities["utility-b"]
        ven_a, ven_b = world.ven("utility-a"), world.ven("utility-b")
        assert ven_a.available and ven_b.available
        ven_id_a, ven_id_b = ven_a.ven_id, ven_b.ven_id
        assert ven_id_a in a.vtn.registrations and ven_id_b in b.vtn.registrations
        await wait_for(lambda: a.vtn.telemetry and b.vtn.telemetry, "readings at both VTNs")

        if misbehaviour == "down":
            await a.vtn.stop()
        else:
            a.faults.set(misbehaviour)
        event_b = b.vtn.add_event_now(event_spec(world.clock))
        await wait_for(lambda: b.vtn.opts_for(event_b), "B's answer while A misbehaves")
        await wait_for(lambda: not ven_a.available, "A's outage to be noticed")
        readings_b = len(b.vtn.telemetry)
        await wait_for(lambda: len(b.vtn.telemetry) >= readings_b + 2, "B's readings flow on")

        assert ven_b.available and ven_b.ven_id == ven_id_b
        assert b.vtn.registration_count(str(ven_id_b)) == 1, "B was never rebuilt"

        if misbehaviour == "down":
            await a.vtn.start(a.port)
        else:
            a.faults.set("none")
        back_at = time.monotonic()
        await wait_for(lambda: ven_a.available and a.faults.polled_since(back_at), "A polled again")
        event_a = a.vtn.add_event_now(event_spec(world.clock))
        await wait_for(lambda: a.vtn.opts_for(event_a), "A's answer after its recovery")
        assert ven_a.ven_id == ven_id_a
    assert len(unavailable_logs(caplog, "utility-a")) == 1
    assert unavailable_logs(caplog, "utility-b") == []


async def test_a_vtn_hanging_at_start_does_not_hold_up_the_others(
    session_factory: sessionmaker[Session], database_url: str
) -> None:
    async with two_utilities(session_factory, database_url, fault_at_start="hang") as world:
        a, b = world.utilities["utility-a"], world.utilities["utility-b"]
        ven_a, ven_b = world.ven("utility-a"), world.ven("utility-b")
        assert ven_b.available and not ven_a.available
        assert ven_a.supervised, "A is retried in the background"
        # A's requests hang until the test releases them (below): the daemon started, and
        # B answers, while A holds what it was asked, so neither waited on A.
        await wait_for(lambda: a.faults.hung >= 1, "A to hold a request")
        event_b = b.vtn.add_event_now(event_spec(world.clock))
        await wait_for(lambda: b.vtn.opts_for(event_b), "B's answer while A hangs")

        a.faults.set("none")
        await wait_for(lambda: ven_a.available, "A registering once it answers")
        assert ven_a.ven_id in a.vtn.registrations
