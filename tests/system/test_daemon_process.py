"""``dr-gateway run`` as a process: it polls real site controllers, and SIGTERM or SIGINT
stop it cleanly with exit code 0, its data committed; with ``[web]`` enabled it logs the
dashboard's URL and serves ``/metrics`` behind the token."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from gateway.clock import SystemClock
from gateway.db import make_engine
from gateway.sites.records import JobSpec
from models import Job, SiteSample
from simulators.dashboard_data import WEB_TOKEN
from simulators.hang_guard import HANG_GUARD_S
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from tests.support.daemon import DaemonProcess, controller_site, gateway_settings
from tests.support.settings_files import write_toml

pytestmark = pytest.mark.integration

SITE_TOKEN = "token-of-only-site"


def _rows(url: str, model: type) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(model)) or 0)
    except Exception:
        return 0
    finally:
        engine.dispose()


@asynccontextmanager
async def only_site() -> AsyncIterator[str]:
    """A simulated site of 4 GPUs and 3 kW under 5 kW of renewable power, running one job,
    served on loopback; yields its URL."""
    site = SimulatedSite(
        site_id="only",
        token=SITE_TOKEN,
        clock=SystemClock(),
        trace=RenewableTrace.constant(5.0),
        gpus_total=4,
        it_power_max_kw=3.0,
        jobs=[JobSpec("job-a", 1, 0.6, 2.0, 10.0)],
    )
    runner, url = await start_site_server(site)
    try:
        yield url
    finally:
        await runner.cleanup()


def settings(database_url: str, site_url: str, **tables: Any) -> dict[str, Any]:
    """The daemon polling the only site every 0.2 s and planning every 0.5 s."""
    site = controller_site(
        "only", site_url, SITE_TOKEN, gpus_total=4, it_power_max_kw=3.0, wan_bandwidth_gbps=1.0
    )
    scheduler = {"poll_interval_s": 0.2, "plan_interval_s": 0.5}
    return gateway_settings(database_url, [site], scheduler=scheduler, **tables)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_stops_cleanly_on_signal(
    tmp_path: Path, empty_database_url: str, signum: signal.Signals
) -> None:
    daemon = DaemonProcess(tmp_path / "daemon.log")
    async with only_site() as url:
        config = write_toml(tmp_path / "gateway.toml", settings(empty_database_url, url))
        try:
            await daemon.start(config)
            await daemon.until(
                lambda: _rows(empty_database_url, SiteSample) >= 3, "three samples written"
            )
            await daemon.stop(signum)
        finally:
            await daemon.close()
    assert "stopping" in daemon.log_text()
    assert _rows(empty_database_url, Job) == 1


async def test_dr_gateway_run_logs_the_url_and_serves_metrics(
    tmp_path: Path, empty_database_url: str
) -> None:
    token_file = tmp_path / "web.token"
    token_file.write_text(WEB_TOKEN + "\n")
    daemon = DaemonProcess(tmp_path / "daemon.log")
    served = re.compile(r"dashboard, API and metrics at (http://\S+)/ ")
    async with only_site() as url:
        web = {"enabled": True, "port": 0, "token_file": str(token_file)}
        config = write_toml(tmp_path / "gateway.toml", settings(empty_database_url, url, web=web))
        try:
            await daemon.start(config)
            await daemon.until(lambda: served.search(daemon.log_text()), "the web URL in the log")
            match = next(m for m in map(served.search, daemon.log_text().splitlines()) if m)
            assert WEB_TOKEN not in match.string, "the line with the URL shows no token"
            web_url = match.group(1)
            bearer = {"Authorization": f"Bearer {WEB_TOKEN}"}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{web_url}/metrics") as response:
                    assert response.status == 401
                async with asyncio.timeout(HANG_GUARD_S):
                    while True:  # until the first ledger row is in
                        async with http.get(f"{web_url}/metrics", headers=bearer) as response:
                            assert response.status == 200
                            text = await response.text()
                        families = {f.name: f for f in text_string_to_metric_families(text)}
                        if families["dr_gateway_energy_captured_kwh"].samples[0].value > 0:
                            break
                        await asyncio.sleep(0.2)
                online = families["dr_gateway_sites_online"].samples
                assert {tuple(sorted(s.labels.items())): s.value for s in online} == {(): 1.0}
            await daemon.stop()
        finally:
            await daemon.close()
