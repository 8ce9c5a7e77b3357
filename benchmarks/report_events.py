"""Event delivery with programme baselines: how long the event views take.

Builds ``--sites`` sites x ``--days`` days of 5-minute ledger rows (random load), the rollups,
``--events`` LOAD_DISPATCH events of eight 15-minute intervals, each addressing three random
sites on a random day after the first two weeks, and one programme per baseline method
(events spread over them), then times ``event_report`` (``event_delivery``, one row per
event and site) and ``event_interval_report`` (``event_interval_delivery``, one row per
interval) and prints the median of ``--runs``.

    .venv/bin/python -m benchmarks.report_events                       # SQLite, temp file
    .venv/bin/python -m benchmarks.report_events --database postgresql+psycopg://...

A PostgreSQL database given with ``--database`` must exist and be empty; it is upgraded to
head. Both backends are analysed (``ANALYZE``) before the timing, as a database in use is.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, text

from gateway import fleet
from gateway.baselines import BaselineParams
from gateway.db import make_engine, make_session_factory, unit_of_work, upgrade
from gateway.events import DrEvent, EventInterval, EventSignal, EventTarget
from gateway.reports.frames import event_interval_report, event_report
from gateway.reports.rollups import rebuild_rollups
from gateway.settings import Settings, parse_settings
from gateway.ven import store as event_store
from models import LedgerRow

STEP = timedelta(minutes=5)
FIRST_DAY = datetime(2027, 1, 1, tzinfo=UTC)
VTN_ID = "bench"
PROGRAMMES = (
    ("urn:like-days", BaselineParams()),
    ("urn:meter", BaselineParams(method="meter-before-after")),
    ("urn:hour", BaselineParams(method="hour-before")),
)


def _settings(url: str, site_ids: list[str]) -> Settings:
    return parse_settings(
        {
            "database": {"url": url},
            "vtn": [{"id": VTN_ID, "url": "http://127.0.0.1:9/x", "ven_name": "bench"}],
            "site": [
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 20.0,
                    "pue": 1.2,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": f"http://127.0.0.1:9/{site_id}",
                    "controller_token": "bench-token",
                    "vtn": VTN_ID,
                }
                for site_id in site_ids
            ],
        },
        "benchmark",
    )


def _event(number: int, rng: random.Random, site_ids: list[str], days: int) -> DrEvent:
    start = FIRST_DAY + timedelta(days=rng.randrange(14, days), hours=rng.randrange(0, 22))
    intervals = tuple(EventInterval(i, 900.0, -1.0) for i in range(8))
    return DrEvent(
        vtn_id=VTN_ID,
        event_id=f"E{number:04d}",
        modification_number=0,
        status="far",
        market_context=PROGRAMMES[number % len(PROGRAMMES)][0],
        start_at=start,
        duration_s=8 * 900.0,
        signals=(EventSignal("s0", "LOAD_DISPATCH", "delta", intervals),),
        targets=tuple(EventTarget("resource_id", s) for s in rng.sample(site_ids, 3)),
    )


def build(url: str, sites: int, days: int, events: int, seed: int) -> None:
    """Fill an empty database at ``url`` with the ledger, rollups, programmes and events."""
    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(seed)
    site_ids = [f"site-{i:03d}" for i in range(sites)]
    settings = _settings(url, site_ids)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            fleet.sync_sites(session, settings.site, FIRST_DAY)
            fleet.sync_programmes(session, PROGRAMMES, FIRST_DAY)
        with engine.begin() as conn:
            for site_id in site_ids:
                rows = []
                for step in range(days * 288):
                    start_at = FIRST_DAY + step * STEP
                    load_kwh = rng.uniform(0.5, 1.5)
                    rows.append(
                        {
                            "site_id": site_id,
                            "interval_start_at": start_at,
                            "interval_end_at": start_at + STEP,
                            "load_kwh": load_kwh,
                            "renewable_kwh": 0.0,
                            "renewable_used_kwh": 0.0,
                            "grid_kwh": load_kwh,
                            "curtailed_kwh": 0.0,
                            "migration_kwh": 0.0,
                        }
                    )
                conn.execute(insert(LedgerRow), rows)
            rebuild_rollups(conn)
        with unit_of_work(make_session_factory(engine)) as session:
            for number in range(events):
                event_store.save_event(session, _event(number, rng, site_ids, days), FIRST_DAY)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'events.db'}"
        started = time.perf_counter()
        build(url, args.sites, args.days, args.events, args.seed)
        print(
            f"built {args.sites} sites x {args.days} days of 5-minute rows and {args.events} "
            f"events in {time.perf_counter() - started:.1f} s ({url.split(':')[0]})"
        )
        engine = make_engine(url)
        try:
            for report in (event_report, event_interval_report):
                times_s = []
                rows = 0
                for _run in range(args.runs):
                    with engine.connect() as conn:
                        started = time.perf_counter()
                        rows = len(report(conn))
                        times_s.append(time.perf_counter() - started)
                print(
                    f"{report.__name__}: {rows} rows, median {statistics.median(times_s):.2f} s "
                    f"(min {min(times_s):.2f} s, max {max(times_s):.2f} s, {args.runs} runs)"
                )
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
