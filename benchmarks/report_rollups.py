"""Energy reports at a year of data: rollups against a plain GROUP BY over the ledger.

Builds a ledger of ``--sites`` sites x ``--days`` days of 5-minute rows (100 x 365: 10.5 million
rows) in an empty database, bulk-loaded in one transaction (multi-row ``executemany`` on SQLite,
``COPY`` on PostgreSQL), with a year of hourly grid carbon intensity, then builds the rollups with
the statement of revision 0005's backfill (``rebuild_rollups``, the sums of the ``ledger_accounted``
view that the per-row upsert also reads). Renewable power comes from the bundled traces
(``benchmarks/synthetic_fleet.py``), the load is random around half of each site's maximum.

It then times ``energy_table`` (``gateway/reports/queries.py``, what ``dr-gateway report
energy`` runs) by site and day over the whole span, by site, and by site and hour over the
last 30 days, and for comparison the plain GROUP BY over the ledger by site and day, and
prints the figures. The target: every report under 100 ms.

    .venv/bin/python -m benchmarks.report_rollups                       # SQLite, temp file
    .venv/bin/python -m benchmarks.report_rollups --database postgresql+psycopg://...
    .venv/bin/python -m benchmarks.report_rollups --sites 10 --days 30  # a quick look

A PostgreSQL database given with ``--database`` must exist; its schema is upgraded to head.
``--reuse`` times a database built by an earlier run instead of building it again.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, select, text

from benchmarks.synthetic_fleet import synthetic_fleet
from gateway.db import make_engine, upgrade
from gateway.reports.carbon import IntensityInterval, store_intensity
from gateway.reports.queries import energy_table
from models import EnergyRollupHour, LedgerRow, Site

STEP_S = 300.0
"""Ledger interval [s]."""
LEDGER_COLUMNS = (
    "site_id",
    "interval_start_at",
    "interval_end_at",
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "migration_kwh",
)
PLAIN_GROUP_BY = {
    "sqlite": (
        "SELECT site_id, substr(interval_start_at, 1, 10) AS day, SUM(load_kwh), "
        "SUM(renewable_kwh), SUM(renewable_used_kwh), SUM(grid_kwh), SUM(curtailed_kwh), "
        "SUM(migration_kwh) FROM ledger GROUP BY site_id, day"
    ),
    "postgresql": (
        "SELECT site_id, date_trunc('day', interval_start_at AT TIME ZONE 'UTC') AS day, "
        "SUM(load_kwh), SUM(renewable_kwh), SUM(renewable_used_kwh), SUM(grid_kwh), "
        "SUM(curtailed_kwh), SUM(migration_kwh) FROM ledger GROUP BY site_id, day"
    ),
}
"""The report by site and day straight from the ledger, per dialect."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report_rollups",
        description=(
            "Build a ledger of SITES x DAYS of 5-minute rows and its rollups, then time the "
            "energy reports from the rollups against a plain GROUP BY over the ledger."
        ),
    )
    parser.add_argument("--sites", type=int, default=100, help="sites (default 100)")
    parser.add_argument("--days", type=int, default=365, help="days of ledger (default 365)")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="an empty database (default: a new SQLite file in a temporary directory)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="time the ledger an earlier run left in --database"
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per report (default 7)")
    parser.add_argument(
        "--group-by-runs", type=int, default=2, help="timed runs of the plain GROUP BY (2)"
    )
    return parser


def _ledger_blocks(
    n_sites: int, days: int, seed: int = 0
) -> Iterator[tuple[str, datetime, np.ndarray, np.ndarray]]:
    """Per site: (id, start, load [kWh], renewable [kWh]) per 5-minute interval."""
    specs, traces = synthetic_fleet(n_sites, seed=seed)
    rng = np.random.default_rng(seed)
    steps = days * 86400 // int(STEP_S)
    per_hour = int(3600 // STEP_S)
    for i, spec in enumerate(specs):
        renewable_kw = np.repeat(traces.renewable_kw[:, i], per_hour)[:steps]
        if renewable_kw.shape[0] < steps:
            raise SystemExit(f"--days {days}: the bundled traces cover fewer days")
        load_kw = np.clip(
            rng.normal(0.5, 0.2, steps) * spec.it_power_max_kw * spec.pue,
            0.0,
            spec.it_power_max_kw * spec.pue,
        )
        hours = STEP_S / 3600.0
        yield spec.id, traces.start_at, load_kw * hours, renewable_kw * hours


def _site_rows(n_sites: int) -> list[dict[str, Any]]:
    specs, _traces = synthetic_fleet(n_sites)
    now = datetime.now(UTC)
    return [
        {
            "id": s.id,
            "gpus_total": s.gpus_total,
            "it_power_max_kw": s.it_power_max_kw,
            "pue": s.pue,
            "wan_bandwidth_gbps": s.wan_bandwidth_gbps,
            "controller_url": f"http://127.0.0.1:9/{s.id}",
            "vtn_id": None,
            "resource_id": s.id,
            "online": False,
            "updated_at": now,
        }
        for s in specs
    ]


def _columns(load: np.ndarray, renewable: np.ndarray) -> list[np.ndarray]:
    used = np.minimum(load, renewable)
    return [load, renewable, used, load - used, renewable - used, np.zeros_like(load)]


def _bulk_sqlite(engine: Engine, n_sites: int, days: int) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        sql = f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) VALUES ({', '.join('?' * 9)})"
        cursor.execute("BEGIN")
        stamps: list[str] | None = None
        for site_id, start, load, renewable in _ledger_blocks(n_sites, days):
            if stamps is None:
                times = [start + timedelta(seconds=STEP_S * k) for k in range(len(load) + 1)]
                stamps = [t.strftime("%Y-%m-%d %H:%M:%S.%f") for t in times]
            values = [c.tolist() for c in _columns(load, renewable)]
            cursor.executemany(
                sql,
                zip([site_id] * len(load), stamps[:-1], stamps[1:], *values, strict=True),
            )
        raw.commit()
    finally:
        raw.close()


def _bulk_postgresql(engine: Engine, n_sites: int, days: int) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        stamps: list[str] | None = None
        copy_sql = f"COPY ledger ({', '.join(LEDGER_COLUMNS)}) FROM STDIN"
        for site_id, start, load, renewable in _ledger_blocks(n_sites, days):
            if stamps is None:
                times = [start + timedelta(seconds=STEP_S * k) for k in range(len(load) + 1)]
                stamps = [t.strftime("%Y-%m-%d %H:%M:%S+00") for t in times]
            block = io.StringIO()
            columns = [[repr(v) for v in c.tolist()] for c in _columns(load, renewable)]
            for k, row in enumerate(zip(*columns, strict=True)):
                block.write("\t".join((site_id, stamps[k], stamps[k + 1], *row)) + "\n")
            with cursor.copy(copy_sql) as copy:
                copy.write(block.getvalue())
        raw.commit()
    finally:
        raw.close()


BULK_LOADERS: dict[str, Callable[[Engine, int, int], None]] = {
    "sqlite": _bulk_sqlite,
    "postgresql": _bulk_postgresql,
}


def _intensity(start: datetime, days: int) -> list[IntensityInterval]:
    """Hourly grid carbon intensity for every site: 250-450 g/kWh, lowest at midday."""
    hours = days * 24
    return [
        IntensityInterval(
            None,
            start + timedelta(hours=h),
            start + timedelta(hours=h + 1),
            350.0 - 100.0 * float(np.cos(2 * np.pi * ((h % 24) - 1) / 24)),
            h + 2,
        )
        for h in range(hours)
    ]


def build(engine: Engine, n_sites: int, days: int) -> dict[str, float]:
    """Load sites, ledger and intensity, then build the rollups; seconds per step."""
    dialect = engine.dialect.name
    timings = {}
    with engine.begin() as conn:
        if conn.scalar(select(func.count()).select_from(LedgerRow)):
            raise SystemExit("the database already holds ledger rows: give an empty one")
        conn.execute(insert(Site), _site_rows(n_sites))
    t0 = time.perf_counter()
    BULK_LOADERS[dialect](engine, n_sites, days)
    timings["ledger bulk load"] = time.perf_counter() - t0
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    with engine.begin() as conn:
        start = conn.scalar(select(func.min(LedgerRow.interval_start_at)))
        if start is None:
            raise SystemExit("the bulk load stored no ledger rows")
        t0 = time.perf_counter()
        store_intensity(conn, _intensity(start, days), "benchmark", datetime.now(UTC))
        timings["intensity + rollups (rebuild_rollups)"] = time.perf_counter() - t0
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    return timings


def _time(run: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    out = []
    result = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = run()
        out.append(time.perf_counter() - t0)
    return out, result


def measure(conn: Connection, runs: int, group_by_runs: int) -> list[tuple[str, list[float], int]]:
    """(what, seconds per run, rows) for each report."""
    last = conn.scalar(select(func.max(EnergyRollupHour.period_start_at)))
    if last is None:
        raise SystemExit("the database holds no rollups: build it first (without --reuse)")
    month_until = last.replace(hour=0) + timedelta(days=1)
    month_since = month_until - timedelta(days=30)
    reports: list[tuple[str, Callable[[], Any], int]] = [
        ("energy_table(by=site,day), all days", lambda: energy_table(conn), runs),
        ("energy_table(by=site), all days", lambda: energy_table(conn, by=("site",)), runs),
        (
            "energy_table(by=site,hour), last 30 days",
            lambda: energy_table(conn, since=month_since, until=month_until, by=("site", "hour")),
            runs,
        ),
        ("energy_table(by=()), fleet total", lambda: energy_table(conn, by=()), runs),
        (
            "plain GROUP BY site, day over the ledger",
            lambda: conn.execute(text(PLAIN_GROUP_BY[conn.dialect.name])).all(),
            group_by_runs,
        ),
    ]
    out = []
    for what, run, n in reports:
        run()  # warm the caches once
        seconds, result = _time(run, n)
        out.append((what, seconds, len(result)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sites < 1 or args.days < 1 or args.runs < 1:
        raise SystemExit("--sites, --days and --runs must be at least 1")
    if args.reuse and not args.database:
        raise SystemExit("--reuse needs the --database an earlier run built")
    with tempfile.TemporaryDirectory(prefix="report-rollups-") as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        try:
            if not args.reuse:
                for step, seconds in build(engine, args.sites, args.days).items():
                    print(f"build: {step}: {seconds:.1f} s")
            with engine.connect() as conn:
                rows = conn.scalar(select(func.count()).select_from(LedgerRow))
                print(
                    f"{engine.dialect.name}: {rows:,} ledger rows "
                    f"({args.sites} sites x {args.days} days of 5-minute intervals)"
                )
                for what, seconds, result_rows in measure(conn, args.runs, args.group_by_runs):
                    ms = [1000.0 * s for s in seconds]
                    print(
                        f"  {what:<45} median {statistics.median(ms):9.1f} ms  "
                        f"min {min(ms):9.1f} ms  max {max(ms):9.1f} ms  "
                        f"({len(ms)} runs, {result_rows:,} rows)"
                    )
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
