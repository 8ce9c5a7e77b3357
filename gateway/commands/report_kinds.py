"""The kinds of ``dr-gateway report`` and its command line.

    dr-gateway report energy     --config FILE [--since T] [--until T] [--site ID ...]
                                 [--by site,day] [--format F] [--output FILE] [--plot FILE.png]
    dr-gateway report migrations --config FILE [--since T] [--until T] [--site ID ...] [...]
    dr-gateway report events     --config FILE [--since T] [--until T] [--site ID ...]
                                 [--by event|interval] [...]
    dr-gateway report            --config FILE [--site ID] [--format table|csv|json]

Each kind is one row of ``REPORT_KINDS``: its help, the query that answers it (by name, in
``gateway.commands.report.QUERIES``) and how its table's ``TOTAL`` row is built. The parser
imports this module for every command, so it imports no SQL, pandas or OpenADR code.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import timedelta

from gateway.commands.options import add_config

FORMAT_NAMES = ("table", "csv", "json", "parquet")
"""The ``--format`` values (``gateway.reports.formats.REPORT_FORMATS``)."""

TIME_EXAMPLE = "2026-06-01 or 2026-06-01T12:00:00Z"
DEFAULT_BY: tuple[str, ...] = ("site", "day")
NO_GROUPING = "none"
"""``--by none``: one row for the whole fleet and the whole range."""
PERIODS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
"""The ``--by`` keys that are periods of time, and their length."""


@dataclass(frozen=True)
class ReportKind:
    """One ``dr-gateway report KIND``: its help, its query and its table's total row."""

    name: str
    help: str
    description: str
    query: str
    """The name of the query that answers it (``gateway.commands.report.QUERIES``)."""
    total_sums: tuple[str, ...]
    """Columns the table's ``TOTAL`` row sums."""
    total_ratios: tuple[tuple[str, str, str], ...] = ()
    """(column, numerator, denominator): ratios the ``TOTAL`` row recomputes from sums."""
    table_columns: tuple[str, ...] | None = None
    """The columns the table shows (a readable width); CSV, JSON and Parquet carry all of
    them. ``None``: every column."""
    grouped: bool = False
    """Takes ``--by`` and ``--plot`` (the energy report only)."""
    levels: tuple[str, ...] = ()
    """The ``--by`` choices of a kind that reports at several levels of detail, the default
    first; ``LEVEL_KINDS`` holds each other level's kind."""


_ENERGY_SUMS = (
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "captured_surplus_kwh",
    "emissions_kg",
    "migration_kwh",
)

REPORT_KINDS: tuple[ReportKind, ...] = (
    ReportKind(
        name="energy",
        help="energy per site and hour or day: load, renewable, grid, curtailed, captured",
        description=(
            "Energy from the rollup tables, per the --by keys (default site,day): load, "
            "renewable available, renewable used, grid, curtailed renewable, captured "
            "surplus [kWh], renewable share [1], emissions [kg CO2] where a grid carbon "
            "intensity is known, and migration energy [kWh]. --since and --until select "
            "periods by their start and must lie on the boundaries of the --by period. "
            "docs/views.md defines every column."
        ),
        query="energy",
        total_sums=_ENERGY_SUMS,
        total_ratios=(("renewable_share", "renewable_used_kwh", "load_kwh"),),
        grouped=True,
    ),
    ReportKind(
        name="migrations",
        help="one row per migration: states and their times, checkpoint, downtime, energy",
        description=(
            "One row per migration from the per-migration view: job, source and target "
            "site, state and outcome, the time of each state, checkpoint size, downtime [s] "
            "and energy [kWh]. --site matches the source or the target; --since and --until "
            "select migrations by when they were planned. docs/views.md defines every column."
        ),
        query="migrations",
        total_sums=("checkpoint_gb", "expected_kwh", "downtime_s", "migration_kwh", "total_s"),
        table_columns=(
            "migration_id",
            "job_id",
            "source_site_id",
            "target_site_id",
            "outcome",
            "planned_at",
            "ended_at",
            "checkpoint_gb",
            "total_s",
            "downtime_s",
            "expected_kwh",
            "migration_kwh",
        ),
    ),
    ReportKind(
        name="events",
        help="per event and site, or per interval: requested against delivered, and the ratio",
        description=(
            "One row per demand-response event and site (--by event, the default) or per "
            "event, site and interval (--by interval): signal, start and end, requested, "
            "baseline, actual and delivered energy [kWh] (per interval also power [kW]), the "
            "delivery ratio, the programme's baseline method and the site's answer. --since "
            "and --until select events, or intervals, by their start. docs/views.md defines "
            "the baseline methods and every column."
        ),
        query="events",
        total_sums=("requested_kwh", "baseline_kwh", "actual_kwh", "delivered_kwh"),
        total_ratios=(("delivery_ratio", "delivered_kwh", "requested_kwh"),),
        levels=("event", "interval"),
        table_columns=(
            "vtn_id",
            "event_id",
            "site_id",
            "signal",
            "direction",
            "start_at",
            "end_at",
            "opt",
            "baseline_method",
            "requested_kwh",
            "baseline_kwh",
            "actual_kwh",
            "delivered_kwh",
            "delivery_ratio",
        ),
    ),
)
KINDS_BY_NAME = {kind.name: kind for kind in REPORT_KINDS}

LEVEL_KINDS: dict[tuple[str, str], ReportKind] = {
    ("events", "interval"): ReportKind(
        name="events",
        help="one row per event, site and interval",
        description="",
        query="event_intervals",
        total_sums=("requested_kwh", "baseline_kwh", "actual_kwh", "delivered_kwh"),
        total_ratios=(("delivery_ratio", "delivered_kwh", "requested_kwh"),),
        table_columns=(
            "vtn_id",
            "event_id",
            "site_id",
            "interval_index",
            "start_at",
            "end_at",
            "kind",
            "opt",
            "baseline_method",
            "requested_kw",
            "baseline_kw",
            "requested_kwh",
            "baseline_kwh",
            "actual_kwh",
            "delivered_kwh",
            "delivery_ratio",
        ),
    ),
}
"""(kind, ``--by`` level) -> the kind that answers it, for the levels other than the first."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``report`` command and its kinds."""
    report = commands.add_parser(
        "report",
        help="energy, migrations and events from SQL (report KIND --help for each)",
        description=(
            "Without a KIND: each site's totals over all time (site_report view) and a TOTAL "
            "row. With a KIND: that report over a time range, as a table, CSV, JSON or "
            "Parquet. docs/operator-reports.md has examples."
        ),
    )
    # The bare report's options; their dests differ from the kinds' so that one given before
    # a KIND is caught instead of silently replaced by the kind's default.
    report.add_argument(
        "--config",
        metavar="FILE",
        dest="summary_config",
        help="the gateway's TOML configuration (required)",
    )
    report.add_argument("--site", dest="summary_site", metavar="ID", help="only this site id")
    report.add_argument(
        "--format",
        dest="summary_format",
        choices=["table", "csv", "json"],
        help="the summary's format (default table)",
    )
    kinds = report.add_subparsers(dest="report_kind", metavar="[KIND]", required=False)
    for kind in REPORT_KINDS:
        parser = kinds.add_parser(kind.name, help=kind.help, description=kind.description)
        add_config(parser)
        _add_kind_options(parser, kind)


def _add_kind_options(parser: argparse.ArgumentParser, kind: ReportKind) -> None:
    parser.add_argument(
        "--since",
        metavar="TIME",
        help=f"from this instant, ISO 8601, UTC when no zone is given, e.g. {TIME_EXAMPLE}",
    )
    parser.add_argument("--until", metavar="TIME", help="before this instant (as --since)")
    parser.add_argument(
        "--site",
        action="append",
        metavar="ID",
        help="only these sites: repeat the option or give a comma list (default: all)",
    )
    if kind.grouped:
        parser.add_argument(
            "--by",
            default=",".join(DEFAULT_BY),
            metavar="KEYS",
            help=(
                "comma list of site, hour, day (at most one of hour and day); "
                f"'{NO_GROUPING}' for one fleet-total row (default {','.join(DEFAULT_BY)})"
            ),
        )
    if kind.levels:
        parser.add_argument(
            "--by",
            default=kind.levels[0],
            metavar="LEVEL",
            help=(
                f"one row per {' or per '.join(kind.levels)} (default {kind.levels[0]}); "
                "docs/views.md defines the columns of each"
            ),
        )
    parser.add_argument(
        "--format",
        default="table",
        metavar="{" + ",".join(FORMAT_NAMES) + "}",
        help="table (units in the headers, a TOTAL row), csv, json or parquet (default table)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE (default: standard output; parquet needs a file)",
    )
    if kind.grouped:
        parser.add_argument(
            "--plot",
            metavar="FILE.png",
            help=(
                "also draw renewable used, grid and curtailed energy per site over time into "
                "a PNG (per hour with --by hour, else per day; the 8 largest sites by name, "
                "the others summed)"
            ),
        )
