"""The ``carbon`` command: load grid carbon intensity from a CSV file into the database.

``dr-gateway carbon load --config FILE INTENSITY.csv`` stores the file's intervals
(``gateway/reports/carbon.py`` describes the format) and recomputes the energy rollups of the
days it covers, so that the reports and views show emissions for them. It may run while the
daemon runs: both write in transactions, and rows the daemon adds later get their emissions
from the stored intensity.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from gateway.clock import SystemClock
from gateway.db import ensure_schema, make_engine
from gateway.reports.carbon import read_intensity_csv, store_intensity
from gateway.settings import Settings


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``carbon`` subcommands; ``add_config`` adds the ``--config`` option."""
    parser = commands.add_parser(
        "carbon",
        help="grid carbon intensity for the emissions in reports: load a CSV file",
        description=(
            "Emissions in the energy reports and views are grid energy times the grid's "
            "carbon intensity in force at each ledger interval's start. Without a loaded "
            "intensity they are unknown (NULL), not zero."
        ),
    )
    actions = parser.add_subparsers(dest="carbon_command", required=True, metavar="ACTION")
    load = actions.add_parser(
        "load",
        help="store the intervals of a CSV file and recompute the rollups they cover",
        description=(
            "FILE is CSV with a header: start_at,end_at,g_co2_per_kwh and optionally site_id "
            "(empty: every site without its own). Times are ISO 8601 with a zone, e.g. "
            "2026-06-01T00:00:00Z; g_co2_per_kwh is g CO2 per kWh drawn from the grid. "
            "Intervals of one scope must not overlap; stored intervals of a scope that "
            "overlap the file's span for it are replaced."
        ),
    )
    add_config(load)
    load.add_argument("file", metavar="FILE", help="the carbon-intensity CSV file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the ``carbon`` subcommand in ``args``; the exit code."""
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
