"""The ``carbon`` command: load grid carbon intensity from a CSV file into the database.

``dr-gateway carbon load --config FILE INTENSITY.csv`` stores the file's intervals
(``gateway/reports/carbon.py`` describes the format) and recomputes the energy rollups of the
days it covers, so that the reports and views show emissions for them. It may run while the
daemon runs: both write in transactions, and rows the daemon adds later get their emissions
from the stored intensity.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.clock import SystemClock
from gateway.db import ensure_schema, make_engine
from gateway.reports.carbon import read_intensity_csv, store_intensity
from gateway.startup import load_checked_settings


def run(args: argparse.Namespace) -> int:
    """Run the ``carbon`` subcommand in ``args``; the exit code."""
    settings = load_checked_settings(args.config)
    path = Path(args.file)
    intervals = read_intensity_csv(path, known_sites={s.id for s in settings.site})
    ensure_schema(settings.database.url, auto_upgrade=settings.database.auto_upgrade)
    engine = make_engine(settings.database.url)
    try:
        with engine.begin() as conn:
            result = store_intensity(conn, intervals, str(path), SystemClock().now())
    finally:
        engine.dispose()
    print(
        f"loaded {result.intervals} carbon-intensity intervals from {path} "
        f"(replacing {result.replaced}); rollups recomputed for "
        f"{result.rebuilt_since.date().isoformat()} to {result.rebuilt_until.date().isoformat()}"
        " (end exclusive)"
    )
    return 0
