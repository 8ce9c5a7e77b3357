"""Benchmark: a running example job migrated back and forth between two site agents.

Run: .venv/bin/python -m benchmarks.agent_migration [--width 256] [--migrations 10]
     [--throttle-gbps G]

Two site agents (``gateway.agent``) on loopback, each on an OS-assigned port with its own data
directory in a temporary directory, run the example training job (``--width`` hidden units);
the gateway's Dispatcher on a temporary SQLite database moves it from one agent to the other
``--migrations`` times, each time as soon as the previous move completed. Unthrottled unless
``--throttle-gbps`` is given (then each transfer is paced to that bandwidth).

Prints the checkpoint's size and, as median and worst over the migrations: the time the job
took to write its checkpoint (as it logs it), the checkpoint operation (SIGTERM to the file
hashed on disk), the transfer and restore operations (as the agents report them) and the whole
migration as the Dispatcher drives it (reserve, checkpoint, transfer, restore, release).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.agent.config import AgentSettings, parse_agent_settings
from gateway.agent.controller import SiteAgent
from gateway.agent.server import AGENT_KEY, start_agent_server
from gateway.clock import SystemClock
from gateway.db import make_engine, make_session_factory, unit_of_work, upgrade
from gateway.migration.dispatch import Dispatcher
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import JobSpec, OperationKind
from models import FINAL_STATES, Migration
from simulators.loopback_agents import (
    SiteSize,
    agent_data,
    example_command,
    job_table,
    seed_database,
)

TOKENS = {"alpha": "benchmark-token-alpha", "beta": "benchmark-token-beta"}
JOB = JobSpec("bench-job", gpus=1, power_kw=0.6, checkpoint_gb=0.001, work_remaining_gpu_h=100.0)
JOB_ID = JOB.job_id
_WRITE_LINE = re.compile(r"checkpoint at step \d+ written to \S+ \((\d+) bytes in ([0-9.]+) s\)")


def _size(throttle_gbps: float | None) -> SiteSize:
    """The agents' sites: unthrottled, a 100 Gbit/s WAN link; throttled, that bandwidth."""
    return SiteSize(gpus_total=2, it_power_max_kw=2.0, wan_bandwidth_gbps=throttle_gbps or 100.0)


def _settings(root: Path, site_id: str, width: int, throttle_gbps: float | None) -> AgentSettings:
    jobs = []
    if site_id == "alpha":
        command = example_command(100_000_000, step_sleep_s=0.001, width=width)
        jobs.append(job_table(JOB, command))
    data = agent_data(root, site_id, TOKENS, _size(throttle_gbps), jobs)
    data["throttle_transfers"] = throttle_gbps is not None
    return parse_agent_settings(data, "benchmark")


def _seed(database_url: str, urls: dict[str, str], throttle_gbps: float | None) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    seed_database(make_session_factory(engine), urls, _size(throttle_gbps), JOB, "alpha")
    engine.dispose()


def _summary(name: str, values_s: list[float]) -> str:
    median_ms = statistics.median(values_s) * 1e3
    return f"{name:<26} median {median_ms:8.1f} ms   worst {max(values_s) * 1e3:8.1f} ms"


async def run(width: int, migrations: int, throttle_gbps: float | None) -> None:
    with tempfile.TemporaryDirectory(prefix="agent-migration-") as directory:
        root = Path(directory)
        runners: dict[str, web.AppRunner] = {}
        urls: dict[str, str] = {}
        for site_id in TOKENS:
            settings = _settings(root, site_id, width, throttle_gbps)
            runners[site_id], urls[site_id] = await start_agent_server(settings)
        agents: dict[str, SiteAgent] = {s: r.app[AGENT_KEY] for s, r in runners.items()}
        database_url = f"sqlite:///{root / 'gateway.db'}"
        _seed(database_url, urls, throttle_gbps)
        engine = make_engine(database_url)
        sessions = make_session_factory(engine)
        times: dict[str, list[float]] = {
            "job writes checkpoint": [],
            "checkpoint operation": [],
            "transfer operation": [],
            "restore operation": [],
            "whole migration": [],
        }
        size_bytes = 0
        try:
            log_path = agents["alpha"].job_paths(JOB_ID).log_path
            while "started at step 0" not in (log_path.read_text() if log_path.exists() else ""):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as http:
                clients = {
                    s: SiteControllerClient(s, urls[s], TOKENS[s], http, timeout_s=30)
                    for s in TOKENS
                }
                dispatcher = Dispatcher(sessions, clients, SystemClock())
                source, target = "alpha", "beta"
                for _ in range(migrations):
                    decision = MigrationDecision(JOB_ID, source, target, "benchmark", 5.0, 1e-3)
                    migration_id = dispatcher.create(decision)
                    assert migration_id is not None
                    started = asyncio.get_running_loop().time()
                    while await dispatcher.advance(migration_id) not in FINAL_STATES:
                        await asyncio.sleep(0.005)
                    times["whole migration"].append(asyncio.get_running_loop().time() - started)
                    with unit_of_work(sessions) as session:
                        migration = session.get(Migration, migration_id)
                        assert migration is not None and migration.state == "completed"
                    steps: tuple[tuple[OperationKind, SiteAgent], ...] = (
                        ("checkpoint", agents[source]),
                        ("transfer", agents[source]),
                        ("restore", agents[target]),
                    )
                    for kind, agent in steps:
                        op = agent.operation(migration_id, kind)
                        duration_s = (op.done_at - op.started_at).total_seconds()
                        times[f"{kind} operation"].append(duration_s)
                    source_log = agents[source].job_paths(JOB_ID).log_path.read_text()
                    size, write_s = _WRITE_LINE.findall(source_log)[-1]
                    size_bytes = int(size)
                    times["job writes checkpoint"].append(float(write_s))
                    await asyncio.sleep(0.2)  # let the job train a little at its new site
                    source, target = target, source
        finally:
            engine.dispose()
            for runner in runners.values():
                await runner.cleanup()
    pace = f"throttled to {throttle_gbps} Gbit/s" if throttle_gbps else "unthrottled"
    print(
        f"example job, width {width}: checkpoint {size_bytes / 1e6:.3f} MB; "
        f"{migrations} migrations between two agents on loopback, {pace}"
    )
    for name, values in times.items():
        print(_summary(name, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256, help="hidden units of the job (256)")
    parser.add_argument("--migrations", type=int, default=10, help="moves to time (10)")
    parser.add_argument("--throttle-gbps", type=float, help="pace transfers [Gbit/s]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args.width, args.migrations, args.throttle_gbps))


if __name__ == "__main__":
    main()
