"""``dr-gateway run`` as a process: it polls real site controllers, and SIGTERM or SIGINT
stop it cleanly with exit code 0, its data committed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.clock import SystemClock
from gateway.db import make_engine
from gateway.sites.records import JobSpec
from models import Job, SiteSample
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from tests.test_site_agent import HANG_GUARD_S

pytestmark = pytest.mark.integration


def _rows(url: str, model: type) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(model)) or 0)
    except Exception:
        return 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_stops_cleanly_on_signal(
    tmp_path: Path, empty_database_url: str, signum: signal.Signals
) -> None:
    site = SimulatedSite(
        site_id="only",
        token="token-of-only-site",
        clock=SystemClock(),
        trace=RenewableTrace.constant(5.0),
        gpus_total=4,
        it_power_max_kw=3.0,
        jobs=[JobSpec("job-a", 1, 0.6, 2.0, 10.0)],
    )
    runner, url = await start_site_server(site)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[database]
url = "{empty_database_url}"

[scheduler]
poll_interval_s = 0.2
plan_interval_s = 0.5

[[site]]
id = "only"
gpus_total = 4
it_power_max_kw = 3.0
wan_bandwidth_gbps = 1.0
controller_url = "{url}"
controller_token = "token-of-only-site"
"""
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + HANG_GUARD_S  # a hang guard
        while _rows(empty_database_url, SiteSample) < 3:
            assert process.returncode is None, (await process.communicate())[1].decode()
            assert time.monotonic() < deadline, "the daemon wrote no samples"
            await asyncio.sleep(0.1)
        process.send_signal(signum)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=HANG_GUARD_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await runner.cleanup()
    assert process.returncode == 0, stderr.decode()
    assert "stopping" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert _rows(empty_database_url, Job) == 1
