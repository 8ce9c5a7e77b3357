"""Nothing heavy on the event loop (issue 12, finding 3): while the planner decides a
distribution of 100 events from one VTN, the loop keeps serving: a second VTN keeps being
polled, ``/healthz`` keeps answering, a probe task keeps running.

One ``Gateway`` (the daemon's object) with two ``[[vtn]]`` against two scripted openleadr
VTNs asking for a 1 s poll, two simulated site controllers and the dashboard, on SQLite and
PostgreSQL. VTN A distributes 100 new events at once. The test holds the planner inside its
decision on them (a gate in ``Decider.decide``) and, while it is held, waits for two more
polls of B, three answers of ``/healthz`` and ten rounds of a probe task on the loop; then it
releases the gate and waits for the 100 answers at A. Nothing is timed: the held decision is
the state the test names, and the loop serving through it is the behaviour. Had the decision
run on the event loop (the code before issue 12), it would have blocked in the gate on the
loop's own thread: the gate records the thread it was entered on, and the test fails naming
it instead of hanging.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.daemon.gateway import Gateway
from gateway.settings import parse_settings
from simulators.hang_guard import HANG_GUARD_S
from simulators.scripted_vtn import ScriptedVtn, event_dict
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

EVENTS = 100
PROBE_S = 0.02
TOKEN = "loop-rhythm-token-0123456789"


class DecisionGate:
    """Holds ``Decider.decide`` in whichever thread calls it until :meth:`release`; records
    the calls (events per call) and whether one came on the event loop's thread. A call on
    the loop's thread is not held: holding it would block the loop that must release it."""

    def __init__(self, decide: Any, loop_thread_id: int) -> None:
        self._decide = decide
        self._loop_thread_id = loop_thread_id
        self._open = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []
        self.on_loop_thread = False

    def __call__(self, events: Any, statuses: Any) -> Any:
        self.calls.append(len(events))
        if threading.get_ident() == self._loop_thread_id:
            self.on_loop_thread = True
        else:
            self.entered.set()
            if not self._open.wait(HANG_GUARD_S):
                raise TimeoutError("the decision gate was never released")
        return self._decide(events, statuses)

    def release(self) -> None:
        self._open.set()


async def test_rule_a_distribution_of_100_events_does_not_stall_the_loop(
    session_factory: sessionmaker[Session], database_url: str
) -> None:
    clock = ManualClock(datetime.now(UTC))
    runners: list[web.AppRunner] = []
    vtns: dict[str, ScriptedVtn] = {}
    polls_b: list[float] = []
    sites: list[dict[str, Any]] = []
    try:
        for name in ("a", "b"):
            token = f"token-of-site-{name}-0123"
            site = SimulatedSite(
                site_id=f"site-{name}",
                token=token,
                clock=clock,
                trace=RenewableTrace.constant(5.0),
                gpus_total=8,
                it_power_max_kw=6.0,
            )
            runner, url = await start_site_server(site)
            runners.append(runner)
            vtn = ScriptedVtn(f"UTILITY-{name.upper()}", poll_interval_s=1)
            if name == "b":
                vtn.server.app.middlewares.insert(0, _recorder(polls_b))
            await vtn.start()
            vtns[name] = vtn
            sites.append(
                {
                    "id": f"site-{name}",
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "wan_bandwidth_gbps": 1.0,
                    "controller_url": url,
                    "controller_token": token,
                    "vtn": f"utility-{name}",
                }
            )
        settings = parse_settings(
            {
                "database": {"url": database_url},
                "web": {"enabled": True, "port": 0, "token": TOKEN},
                "vtn": [
                    {
                        "id": f"utility-{name}",
                        "url": vtn.url,
                        "ven_name": "dr-gateway-rhythm",
                        "report_interval_s": 60,
                    }
                    for name, vtn in vtns.items()
                ],
                "site": sites,
            },
            "test",
        )
        gateway = Gateway(settings, clock, session_factory)
        gate = DecisionGate(gateway.decider.decide, threading.get_ident())
        gateway.decider.decide = gate  # type: ignore[method-assign]
        try:
            await gateway.start(schedule=False)
            assert gateway.web is not None and gateway.web.url is not None
            await wait_for(lambda: len(polls_b) >= 2, "B polled", HANG_GUARD_S)

            a = vtns["a"]
            start_at = clock.now() + timedelta(hours=2)
            a.distribute([event_dict(f"E{i}", start_at=start_at) for i in range(EVENTS)])
            await wait_for(
                lambda: gate.entered.is_set() or gate.on_loop_thread,
                "the planner to start deciding A's distribution",
                HANG_GUARD_S,
            )
            assert not gate.on_loop_thread, "the planner decided on the event loop's thread"
            # Held inside the decision: the loop serves B, /healthz and a probe task.
            polls_before = len(polls_b)
            probes: list[float] = []
            healthz: list[int] = []
            tasks = [
                asyncio.create_task(_probe_loop(probes)),
                asyncio.create_task(_probe_healthz(gateway.web.url, healthz)),
            ]
            try:
                await wait_for(
                    lambda: (
                        len(polls_b) >= polls_before + 2 and len(healthz) >= 3 and len(probes) >= 10
                    ),
                    lambda: (
                        f"B polled {len(polls_b) - polls_before} times, /healthz answered "
                        f"{healthz}, the probe ran {len(probes)} times while the planner is held"
                    ),
                    HANG_GUARD_S,
                )
                assert not a.responses, "no answer went out before the planner decided"
            finally:
                for task in tasks:
                    task.cancel()
                gate.release()
            await wait_for(lambda: len(a.responses) >= EVENTS, "A's answers", HANG_GUARD_S)
        finally:
            gate.release()
            await gateway.stop()
    finally:
        for vtn in vtns.values():
            await vtn.stop()
        for runner in runners:
            await runner.cleanup()

    # The planner decided the 100 new versions in one call, in a worker thread.
    assert gate.calls == [EVENTS]
    assert set(healthz) == {200}
    assert {r.event_id for r in a.responses} == {f"E{i}" for i in range(EVENTS)}
    assert all(r.response_code == 200 for r in a.responses)


def _recorder(polls_at: list[float]) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/OadrPoll"):
            polls_at.append(time.monotonic())
        response: web.StreamResponse = await handler(request)
        return response

    return record


async def _probe_loop(rounds_at: list[float]) -> None:
    while True:
        await asyncio.sleep(PROBE_S)
        rounds_at.append(time.monotonic())


async def _probe_healthz(url: str, statuses: list[int]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG_GUARD_S)) as http:
        while True:
            async with http.get(f"{url}/healthz", headers=headers) as response:
                await response.read()
            statuses.append(response.status)
            await asyncio.sleep(0.1)
