"""The dashboard in a real browser: Debian's headless Chromium, driven over the Chrome
DevTools Protocol with aiohttp's websocket client.

The daemon runs with its web server on an OS-assigned loopback port, two simulated site
controllers behind it. The browser opens the page with ``?token=`` (the server trades it for
a cookie), the page lists the sites, and after the real planner and dispatcher move a job the
page shows the migration in flight and then completed. Without ``/usr/bin/chromium`` the test
is skipped, except under ``CI=true`` where that is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock, next_midnight_utc
from gateway.daemon.gateway import Gateway
from gateway.db import unit_of_work
from gateway.settings import parse_settings
from gateway.sites.records import JobSpec
from models import Migration
from simulators.hang_guard import HANG_GUARD_S
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from tests.support.daemon import controller_site, gateway_settings
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
WEB_TOKEN = "browser-test-token-0123456789"
SITE_TOKENS = {"dark": "token-of-dark-site", "sunny": "token-of-sunny-site"}
WAIT_S = HANG_GUARD_S
"""Bound of a wait on the browser or the page: a hang guard, never reached when things work."""


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium; yields the browser's DevTools websocket URL."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    process = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Chromium writes "PORT\n/devtools/browser/ID" once it listens.
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + HANG_GUARD_S
        while not (active_port.exists() and len(active_port.read_text().splitlines()) >= 2):
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium wrote no DevToolsActivePort"
            time.sleep(0.05)
        port, path = active_port.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


class DevTools:
    """A minimal Chrome DevTools Protocol client: one page, commands and its events."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            payload = json.loads(message.data)
            future = self._waiting.pop(payload.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(payload)
            elif "method" in payload:
                self.events.append(payload)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if self.session_id is not None and not method.startswith("Target."):
            message["sessionId"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        await self._socket.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout=WAIT_S)
        if "error" in answer:
            raise AssertionError(f"DevTools {method} failed: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def open_page(self) -> None:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session_id = attached["sessionId"]
        await self.send("Runtime.enable")
        await self.send("Log.enable")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, what: str) -> Any:
        """Evaluate ``expression`` until it is truthy (at most WAIT_S [s]); returns its value. A
        failure shows the page's text."""
        try:
            return await wait_for(
                lambda: self.evaluate(expression), f"the page to show {what}", WAIT_S, 0.1
            )
        except AssertionError as failure:
            text = await self.evaluate("document.body ? document.body.innerText : ''")
            raise AssertionError(f"{failure}:\n{text}") from None

    def problems(self) -> list[str]:
        """Script exceptions and browser log errors (a Content-Security-Policy refusal, a
        failed load) seen so far."""
        out = []
        for event in self.events:
            if event["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(event["params"]["exceptionDetails"])[:500])
            if event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                entry = event["params"]["entry"]
                out.append(f"{entry['text']} ({entry.get('url', 'no URL')})")
        return out

    async def close(self) -> None:
        await self._socket.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@dataclass
class Fleet:
    clock: ManualClock
    gateway: Gateway
    sessions: sessionmaker[Session]
    url: str


@pytest.fixture
async def fleet(session_factory: sessionmaker[Session], database_url: str) -> AsyncIterator[Fleet]:
    """The daemon with its web server, a dark site holding a job and a sunny one."""
    clock = ManualClock(next_midnight_utc(datetime.now(UTC)) + timedelta(days=1))
    sites = {
        site_id: SimulatedSite(
            site_id=site_id,
            token=SITE_TOKENS[site_id],
            clock=clock,
            trace=RenewableTrace.constant(kw),
            gpus_total=8,
            it_power_max_kw=6.0,
        )
        for site_id, kw in {"dark": 0.0, "sunny": 20.0}.items()
    }
    sites["dark"].add_job(JobSpec("job-1", 2, 1.3, 4.88, work_remaining_gpu_h=100.0))
    runners: list[web.AppRunner] = []
    urls = {}
    for site_id, site in sites.items():
        runner, urls[site_id] = await start_site_server(site)
        runners.append(runner)
    sites_settings = [
        controller_site(
            site_id,
            url,
            SITE_TOKENS[site_id],
            gpus_total=8,
            it_power_max_kw=6.0,
            wan_bandwidth_gbps=10.0,
        )
        for site_id, url in urls.items()
    ]
    settings = parse_settings(
        gateway_settings(
            database_url,
            sites_settings,
            planner={"min_residence_s": 0.0},
            web={"enabled": True, "port": 0, "token": WEB_TOKEN, "refresh_s": 0.2},
        ),
        "test",
    )
    gateway = Gateway(settings, clock, session_factory)
    try:
        await gateway.start(schedule=False, connect_vens=False)
        assert gateway.web is not None and gateway.web.url is not None
        yield Fleet(clock, gateway, session_factory, gateway.web.url)
    finally:
        await gateway.stop()
        for runner in runners:
            await runner.cleanup()


def _migration_state(sessions: sessionmaker[Session], migration_id: str) -> str:
    with unit_of_work(sessions) as session:
        migration = session.get(Migration, migration_id)
        assert migration is not None
        return migration.state


ROW_STATES = (
    "Array.from(document.querySelectorAll('{table} tbody tr'))"
    ".map(tr => [tr.dataset.{key}, tr.dataset.state || tr.dataset.online])"
)


async def test_dashboard_lists_sites_and_shows_a_migration(chromium: str, fleet: Fleet) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(chromium, max_msg_size=0) as ws:
        browser = DevTools(ws)
        try:
            await browser.open_page()
            await browser.send("Page.navigate", url=f"{fleet.url}/?token={WEB_TOKEN}")

            # The token was traded for a cookie: it is no longer in the address bar.
            location = await browser.until(
                "document.readyState === 'complete' && location.href", "the page"
            )
            assert location == f"{fleet.url}/"
            sites = await browser.until(
                ROW_STATES.format(table="#sites", key="siteId")
                + ".filter(r => r[0]).length === 2 && "
                + ROW_STATES.format(table="#sites", key="siteId"),
                "both sites",
            )
            assert sites == [["dark", "true"], ["sunny", "true"]]
            assert (
                await browser.evaluate(
                    ROW_STATES.format(table="#migrations-in-flight", key="migrationId")
                )
                == []
            )
            jobs = await browser.evaluate(ROW_STATES.format(table="#jobs", key="jobId"))
            assert jobs == [["job-1", "running"]]

            # The real planner and dispatcher move the job off the dark site.
            fleet.clock.advance(60)
            await fleet.gateway.poll_once()
            [migration_id] = await fleet.gateway.plan_once()
            state = _migration_state(fleet.sessions, migration_id)
            assert state not in ("completed", "aborted")
            in_flight = await browser.until(
                f"{ROW_STATES.format(table='#migrations-in-flight', key='migrationId')}"
                f".filter(r => r[0] === '{migration_id}' && r[1] === '{state}').length === 1 && "
                f"document.querySelector('#migrations-in-flight tbody tr').innerText",
                f"migration {migration_id} in state {state}",
            )
            assert "job-1" in in_flight and "dark" in in_flight and "sunny" in in_flight

            for _ in range(40):
                if _migration_state(fleet.sessions, migration_id) == "completed":
                    break
                fleet.clock.advance(30)
                await fleet.gateway.poll_once()
            assert _migration_state(fleet.sessions, migration_id) == "completed"
            await browser.until(
                f"{ROW_STATES.format(table='#migrations-recent', key='migrationId')}"
                f".some(r => r[0] === '{migration_id}' && r[1] === 'completed') && "
                f"{ROW_STATES.format(table='#migrations-in-flight', key='migrationId')}"
                ".length === 0",
                f"migration {migration_id} completed",
            )
            # The job is shown at its new site, the summary counts the fleet.
            await browser.until(
                "Array.from(document.querySelectorAll('#jobs tbody tr[data-job-id=\"job-1\"] td'))"
                ".map(td => td.innerText).slice(0, 3).join(' ') === 'job-1 sunny running'",
                "job-1 running at sunny",
            )
            assert await browser.evaluate("document.getElementById('sites-online').innerText") == (
                "2 / 2"
            )
            status = await browser.evaluate("document.getElementById('status').className")
            assert "bad" not in status
            assert browser.problems() == []
        finally:
            await browser.close()
