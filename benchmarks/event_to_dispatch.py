"""Benchmark: an event reaching the VEN -> its opt answer -> its migrations dispatched.

Run: .venv/bin/python -m benchmarks.event_to_dispatch [--sites 100] [--events 20]
     [--database-url URL]

A fleet of ``--sites`` simulated site controllers (aiohttp, each on its own loopback port),
half of them without renewable power and running migratable jobs, half with room; the real
daemon (:class:`gateway.daemon.gateway.Gateway`) with its VEN connected to a real openleadr VTN in
external ``on_poll`` mode (:class:`simulators.scripted_vtn.ScriptedVtn`); a real database
(SQLite in a temporary file by default, or ``--database-url``, upgraded first; a PostgreSQL
database is emptied at the end).

Each round the VTN distributes one curtailment event (LOAD_DISPATCH delta) for another
loaded site, starting now (a shed is carried out at its start, so the round the optIn triggers
dispatches it at once), and the VEN polls once. Timed from the moment the parsed
``oadrDistributeEvent`` reaches the gateway (the poll itself excluded) to:
- the opt answer acknowledged by the VTN (``oadrCreatedEvent`` round trip included), and
- the planning round the optIn triggers having dispatched its migrations (each one created
  and advanced as far as its first site-controller calls go: reservation at the target,
  checkpoint at the source). The offers and opt review that follow in the same round are
  not included.
Prints the median, 90th percentile and worst of each, and how many migrations were made.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from gateway.clock import ManualClock
from gateway.daemon.gateway import Gateway
from gateway.db import make_engine, make_session_factory, unit_of_work, upgrade
from gateway.settings import parse_settings
from gateway.sites.records import JobSpec
from models import Migration
from simulators.scripted_vtn import ScriptedVtn, event_dict
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace

TOKEN = "benchmark-site-token"
JOBS_PER_LOADED_SITE = 3


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(n_sites: int, n_events: int, database_url: str) -> None:
    clock = ManualClock(datetime.now(UTC))
    loaded = [f"site-{i:03d}" for i in range(0, n_sites, 2)]
    sites: dict[str, SimulatedSite] = {}
    for i in range(n_sites):
        site_id = f"site-{i:03d}"
        site = SimulatedSite(
            site_id=site_id,
            token=TOKEN,
            clock=clock,
            trace=RenewableTrace.constant(0.0 if site_id in loaded else 20.0),
            gpus_total=8,
            it_power_max_kw=6.0,
        )
        if site_id in loaded:
            for j in range(JOBS_PER_LOADED_SITE):
                site.add_job(JobSpec(f"{site_id}-job-{j}", 2, 1.3, 4.88, 100.0, migratable=True))
        sites[site_id] = site
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    for site_id, site in sites.items():
        runner, urls[site_id] = await start_site_server(site)
        runners.append(runner)
    vtn = ScriptedVtn("BENCH-VTN", poll_interval_s=3600)  # the benchmark polls itself
    await vtn.start()
    settings = parse_settings(
        {
            "database": {"url": database_url},
            "planner": {"min_residence_s": 0.0},
            "vtn": [{"id": "utility", "url": vtn.url, "ven_name": "gateway-benchmark"}],
            "site": [
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "pue": 1.2,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": url,
                    "controller_token": TOKEN,
                    "vtn": "utility",
                }
                for site_id, url in urls.items()
            ],
        },
        "benchmark",
    )
    engine = make_engine(database_url)
    gateway = Gateway(settings, clock, make_session_factory(engine))
    answer_s: list[float] = []
    dispatch_s: list[float] = []
    migrations: list[int] = []
    try:
        await gateway.start(schedule=False)
        (connection,) = gateway.vens
        client: Any = connection._client
        marks: dict[str, float] = {}
        handle: Callable[[Any, Any], Awaitable[None]] = client._gateway_on_distribution

        async def timed(owner: Any, message: Any) -> None:
            marks["received"] = time.perf_counter()
            await handle(owner, message)
            marks["answered"] = time.perf_counter()

        client._gateway_on_distribution = timed
        plan_and_dispatch = gateway._plan_and_dispatch

        async def timed_plan() -> Any:
            result = await plan_and_dispatch()
            marks["dispatched"] = time.perf_counter()
            return result

        gateway._plan_and_dispatch = timed_plan  # type: ignore[method-assign]
        for round_ in range(n_events):
            target = loaded[round_ % len(loaded)]
            before = _count(gateway)
            vtn.distribute(
                [
                    event_dict(
                        f"EVT-{round_:04d}",
                        start_at=clock.now(),
                        duration=timedelta(hours=2),
                        intervals=((timedelta(hours=2), -1.0),),
                        signal_name="LOAD_DISPATCH",
                        signal_type="delta",
                        targets=[{"resource_id": target}],
                    )
                ]
            )
            await client._poll()
            task = gateway._plan_task
            if task is not None:
                await task  # the round the optIn triggered: dispatch, then offers and review
            answered = vtn.responses_to(f"EVT-{round_:04d}")
            if not answered or answered[-1].opt_type != "optIn":
                raise SystemExit(f"round {round_}: the VEN did not opt in: {answered}")
            answer_s.append(marks["answered"] - marks["received"])
            dispatch_s.append(marks["dispatched"] - marks["received"])
            migrations.append(_count(gateway) - before)
            clock.advance(60)
            await gateway.poll_once()
    finally:
        await gateway.stop()
        await vtn.stop()
        for runner in runners:
            await runner.cleanup()
        engine.dispose()

    print(f"{n_sites} sites ({len(loaded)} loaded, {len(loaded) * JOBS_PER_LOADED_SITE} jobs), "
          f"{n_events} events, database {make_url(database_url).get_backend_name()}")  # fmt: skip
    for label, values in (
        ("opt answer acknowledged", answer_s),
        ("migrations dispatched", dispatch_s),
    ):
        ms = [v * 1000 for v in values]
        print(
            f"event -> {label}: median {statistics.median(ms):.1f} ms, "
            f"p90 {_percentile(ms, 0.9):.1f} ms, worst {max(ms):.1f} ms"
        )
    print(f"migrations per event: {statistics.mean(migrations):.2f} (min {min(migrations)}, "
          f"max {max(migrations)})")  # fmt: skip


def _count(gateway: Gateway) -> int:
    with unit_of_work(gateway._sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Migration)) or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=100, help="sites in the fleet (default 100)")
    parser.add_argument("--events", type=int, default=20, help="events to time (default 20)")
    parser.add_argument(
        "--database-url",
        help="an empty database to use (default: SQLite in a temporary directory)",
    )
    args = parser.parse_args()
    if args.sites < 2 or args.events < 1:
        parser.error("--sites must be at least 2 and --events at least 1")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("openleadr").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'benchmark.db'}"
        upgrade(url)
        try:
            asyncio.run(run(args.sites, args.events, url))
        finally:
            if args.database_url:
                _empty(url)


def _empty(url: str) -> None:
    """Drop what the benchmark wrote to a database it was given (PostgreSQL: the schema)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


if __name__ == "__main__":
    main()
