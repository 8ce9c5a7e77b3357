"""``dr-gateway report``: energy, migrations and events from the SQL rollups and views.

    dr-gateway report energy     --config FILE [--since T] [--until T] [--site ID ...]
                                 [--by site,day] [--format F] [--output FILE] [--plot FILE.png]
    dr-gateway report migrations --config FILE [--since T] [--until T] [--site ID ...] [...]
    dr-gateway report events     --config FILE [--since T] [--until T] [--site ID ...]
                                 [--by event|interval] [...]
    dr-gateway report            --config FILE [--site ID] [--format table|csv|json]

The bare form (no kind) prints each site's totals over all time from the ``site_report``
view (``gateway/reporting.py``), as it always has; ``dr-gateway demo`` ends with it. Each kind
is one row of ``REPORT_KINDS``: the query of ``gateway/reports/queries.py`` that answers it and
how its table's ``TOTAL`` row is built. Every bad option ends in :class:`InputError` with one
line that names the option (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy import Connection, Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gateway.errors import GatewayError, InputError
from gateway.settings import Settings
from gateway.startup import load_checked_settings

if TYPE_CHECKING:  # pandas, pyarrow and matplotlib load when a report runs, not at start-up
    import pandas as pd

    from gateway.reports.formats import ReportFormat, Totals

FORMAT_NAMES = ("table", "csv", "json", "parquet")
"""The ``--format`` values (``gateway.reports.formats.REPORT_FORMATS``)."""

_TIME_EXAMPLE = "2026-06-01 or 2026-06-01T12:00:00Z"
DEFAULT_BY: tuple[str, ...] = ("site", "day")
NO_GROUPING = "none"
"""``--by none``: one row for the whole fleet and the whole range."""
PERIODS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
"""The ``--by`` keys that are periods of time, and their length."""


@dataclass(frozen=True)
class ReportRequest:
    """What one ``dr-gateway report KIND`` invocation asks for, validated."""

    kind: str
    since: datetime | None
    """Only periods (energy), migrations or events from this instant on [aware UTC]."""
    until: datetime | None
    """Only those before this instant [aware UTC]."""
    site_ids: tuple[str, ...] | None
    """Only these sites; ``None`` for every site."""
    by: tuple[str, ...]
    """Energy grouping keys, in ``REPORT_BY_KEYS``; ``()`` for one fleet-total row."""
    fmt: ReportFormat
    output: Path | None
    """Write the report here instead of standard output."""
    plot: Path | None
    """Also draw the energy report into this PNG."""


Query = Callable[[Connection, ReportRequest], "pd.DataFrame"]


def _energy(connection: Connection, request: ReportRequest) -> pd.DataFrame:
    from gateway.reports.queries import energy_report

    return energy_report(
        connection,
        since=request.since,
        until=request.until,
        site_ids=request.site_ids,
        by=request.by,
    )


def _migrations(connection: Connection, request: ReportRequest) -> pd.DataFrame:
    from gateway.reports.queries import migration_report

    return migration_report(
        connection, since=request.since, until=request.until, site_ids=request.site_ids
    )


def _events(connection: Connection, request: ReportRequest) -> pd.DataFrame:
    from gateway.reports.queries import event_report

    return event_report(
        connection, since=request.since, until=request.until, site_ids=request.site_ids
    )


def _event_intervals(connection: Connection, request: ReportRequest) -> pd.DataFrame:
    from gateway.reports.queries import event_interval_report

    return event_interval_report(
        connection, since=request.since, until=request.until, site_ids=request.site_ids
    )


@dataclass(frozen=True)
class ReportKind:
    """One ``dr-gateway report KIND``: its help, its query and its table's total row."""

    name: str
    help: str
    description: str
    query: Query
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

    def totals(self) -> Totals:
        """How the kind's table builds its ``TOTAL`` row."""
        from gateway.reports.formats import Ratio, Totals

        return Totals(
            sums=self.total_sums, ratios=tuple(Ratio(*ratio) for ratio in self.total_ratios)
        )


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
        query=_energy,
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
        query=_migrations,
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
        query=_events,
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
        query=_event_intervals,
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


def kind_of(request: ReportRequest) -> ReportKind:
    """The kind that answers ``request``: its own, or that of its ``--by`` level."""
    level = request.by[0] if len(request.by) == 1 else None
    if level is not None and (request.kind, level) in LEVEL_KINDS:
        return LEVEL_KINDS[(request.kind, level)]
    return KINDS_BY_NAME[request.kind]


# --- parser ---------------------------------------------------------------------------------


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``report`` command and its kinds; ``add_config`` adds a required ``--config``."""
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
        help=f"from this instant, ISO 8601, UTC when no zone is given, e.g. {_TIME_EXAMPLE}",
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


# --- options --------------------------------------------------------------------------------


def parse_time(option: str, text: str) -> datetime:
    """An aware UTC instant from an ISO 8601 date or date-time; UTC when no zone is given.

    :param option: the option's name, for the error message (``--since``).
    :param text: e.g. ``2026-06-01``, ``2026-06-01T12:00``, ``2026-06-01T14:00+02:00``.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{option} {text}: not an ISO 8601 date or date-time such as {_TIME_EXAMPLE}"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_sites(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Site ids from repeated ``--site`` options, each possibly a comma list, in order.

    :param values: the options' values; ``None`` (no option) for every site.
    """
    if values is None:
        return None
    site_ids: list[str] = []
    for value in values:
        for part in value.split(","):
            site_id = part.strip()
            if not site_id:
                raise InputError(f"--site {value!r}: an empty site id")
            if site_id not in site_ids:
                site_ids.append(site_id)
    return tuple(site_ids)


def parse_by(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """Grouping keys from a ``--by`` comma list; ``none`` for no grouping.

    :param text: e.g. ``site,day``.
    :param allowed: the keys the energy report knows (``REPORT_BY_KEYS``).
    """
    if text.strip() == NO_GROUPING:
        return ()
    keys = tuple(part.strip() for part in text.split(","))
    for key in keys:
        if key not in allowed:
            raise InputError(
                f"--by {text}: unknown key {key!r}; use a comma list of "
                f"{', '.join(allowed)}, or {NO_GROUPING}"
            )
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise InputError(f"--by {text}: {', '.join(duplicates)} given more than once")
    periods = [key for key in keys if key in PERIODS]
    if len(periods) > 1:
        raise InputError(f"--by {text}: choose one of {' and '.join(periods)}")
    return keys


def parse_level(text: str, levels: Sequence[str]) -> str:
    """The ``--by`` level of a kind that reports at several levels (``events``).

    :param text: e.g. ``interval``.
    :param levels: the kind's levels (``ReportKind.levels``).
    """
    level = text.strip()
    if level not in levels:
        raise InputError(f"--by {text}: unknown level; choose one of {', '.join(levels)}")
    return level


def parse_format(text: str) -> ReportFormat:
    """The ``--format`` value, checked against ``REPORT_FORMATS``."""
    from gateway.reports.formats import REPORT_FORMATS

    for fmt in REPORT_FORMATS:
        if text == fmt:
            return fmt
    raise InputError(f"--format {text}: unknown format; choose one of {', '.join(REPORT_FORMATS)}")


def request_from_args(args: argparse.Namespace, allowed_by: Sequence[str]) -> ReportRequest:
    """The validated request of a ``report KIND`` command line.

    :param args: the parsed command line.
    :param allowed_by: the energy report's grouping keys (``REPORT_BY_KEYS``).
    """
    kind = KINDS_BY_NAME[args.report_kind]
    since = None if args.since is None else parse_time("--since", args.since)
    until = None if args.until is None else parse_time("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise InputError(
            f"--until {args.until}: must be after --since {args.since} "
            f"({until.isoformat()} <= {since.isoformat()})"
        )
    fmt = parse_format(args.format)
    output = None if args.output is None else Path(args.output)
    if fmt == "parquet" and output is None:
        raise InputError(
            f"--format {fmt}: a binary format, not written to standard output; give --output FILE"
        )
    plot = Path(args.plot) if kind.grouped and args.plot is not None else None
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot {plot}: the plot is a PNG; name the file *.png")
    if plot is not None and output is not None and plot.resolve() == output.resolve():
        raise InputError(f"--plot {plot}: the same file as --output")
    for option, path in (("--output", output), ("--plot", plot)):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{option} {path}: the directory {path.parent} does not exist")
    by = parse_by(args.by, allowed_by) if kind.grouped else ()
    if kind.levels:
        by = (parse_level(args.by, kind.levels),)
    if kind.grouped:
        _check_boundaries(by, (("--since", args.since, since), ("--until", args.until, until)))
    return ReportRequest(
        kind=kind.name,
        since=since,
        until=until,
        site_ids=parse_sites(args.site),
        by=by,
        fmt=fmt,
        output=output,
        plot=plot,
    )


def on_boundary(at: datetime, period: str) -> bool:
    """Whether ``at`` starts a UTC hour or day (``period`` in ``PERIODS``)."""
    return (at - datetime(2000, 1, 1, tzinfo=UTC)) % PERIODS[period] == timedelta(0)


def _check_boundaries(
    by: Sequence[str], bounds: Sequence[tuple[str, str | None, datetime | None]]
) -> None:
    """The energy rollups answer whole periods: the ``--by`` period's, else whole hours."""
    period = next((key for key in by if key in PERIODS), None)
    for option, text, at in bounds:
        if at is None:
            continue
        if period is not None and not on_boundary(at, period):
            raise InputError(
                f"{option} {text}: not on a {period} boundary (UTC), which --by {period} needs"
            )
        if not on_boundary(at, "hour"):
            raise InputError(
                f"{option} {text}: not on an hour boundary (UTC); energy is kept per whole hour"
            )


# --- running --------------------------------------------------------------------------------


def run(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``dr-gateway report [KIND]`` as parsed into ``args``; the exit code.

    :param args: the parsed command line.
    :param stdout: where text reports go (default ``sys.stdout``).
    :param stderr: where notes about written files go (default ``sys.stderr``).
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    if args.report_kind is None:
        return _run_summary(args, out)
    given = [
        option
        for option, value in (
            ("--config", args.summary_config),
            ("--site", args.summary_site),
            ("--format", args.summary_format),
        )
        if value is not None
    ]
    if given:
        raise InputError(
            f"{given[0]}: given before '{args.report_kind}'; put the options of "
            f"'report {args.report_kind}' after it"
        )
    from gateway.reports.queries import REPORT_BY_KEYS

    request = request_from_args(args, REPORT_BY_KEYS)
    settings = load_checked_settings(args.config, connect=False)
    return run_request(request, settings, out, err)


def run_request(request: ReportRequest, settings: Settings, out: TextIO, err: TextIO) -> int:
    """Query, render and write one report (and its plot); the exit code.

    :param request: the validated request.
    :param settings: the gateway's configuration (for the database URL).
    :param out: where text reports go when no ``--output`` is given.
    :param err: where notes about written files go.
    """
    from gateway.db import make_engine

    kind = kind_of(request)
    engine = make_engine(settings.database.url)
    try:
        with engine.connect() as connection:
            _check_sites(connection, request.site_ids, settings.database.url)
            try:
                frame = kind.query(connection, request)
                plot_frame = _plot_frame(connection, request, frame)
            except InputError as exc:
                raise InputError(f"report {request.kind}: {exc}") from exc
    except DBAPIError as exc:
        raise _database_problem(engine, settings.database.url, exc) from exc
    finally:
        engine.dispose()
    _write(frame, request, kind, out, err)
    if request.plot is not None and plot_frame is not None:
        from gateway.reports.plot import plot_energy

        try:
            summary = plot_energy(plot_frame, request.plot, period=PERIODS[_plot_period(request)])
        except OSError as exc:
            raise InputError(f"--plot {request.plot}: cannot write: {exc}") from exc
        print(summary.note(), file=err)
    return 0


def table_view(frame: pd.DataFrame, kind: ReportKind) -> pd.DataFrame:
    """The columns of ``frame`` that the kind's table shows, in the table's order."""
    if kind.table_columns is None:
        return frame
    return frame[[name for name in kind.table_columns if name in frame.columns]]


def _write(
    frame: pd.DataFrame, request: ReportRequest, kind: ReportKind, out: TextIO, err: TextIO
) -> None:
    from gateway.reports.formats import TEXT_FORMATS, render_text, write_parquet

    path = request.output
    shown = table_view(frame, kind) if request.fmt == "table" else frame
    try:
        if request.fmt not in TEXT_FORMATS:
            if path is None:
                raise InputError(f"--format {request.fmt}: give --output FILE")
            write_parquet(frame, path)
        elif path is None:
            out.write(render_text(shown, request.fmt, kind.totals()))
            return
        else:
            path.write_text(render_text(shown, request.fmt, kind.totals()), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--output {path}: cannot write: {exc}") from exc
    print(f"report {request.kind}: wrote {len(frame)} rows to {path} ({request.fmt})", file=err)


def _plot_period(request: ReportRequest) -> str:
    """The plot's period: the ``--by`` period if there is one, else a day when the range
    lies on day boundaries, else an hour."""
    chosen = next((key for key in request.by if key in PERIODS), None)
    if chosen is not None:
        return chosen
    bounds = (at for at in (request.since, request.until) if at is not None)
    return "day" if all(on_boundary(at, "day") for at in bounds) else "hour"


def _plot_frame(
    connection: Connection, request: ReportRequest, frame: pd.DataFrame
) -> pd.DataFrame | None:
    """Energy per site and period for ``--plot``: the report itself when it is grouped so."""
    if request.plot is None:
        return None
    by = ("site", _plot_period(request))
    if set(request.by) == set(by):
        return frame
    return _energy(connection, replace(request, by=by))


def _check_sites(connection: Connection, site_ids: Sequence[str] | None, url: str) -> None:
    if not site_ids:
        return
    from models import Site

    known = set(connection.scalars(select(Site.id).where(Site.id.in_(site_ids))))
    unknown = [site_id for site_id in site_ids if site_id not in known]
    if unknown:
        raise InputError(f"--site {','.join(unknown)}: no such site in {_safe_url(url)}")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _database_problem(engine: Engine, url: str, exc: DBAPIError) -> GatewayError:
    """An error for a failed query: a schema below head (exit 2, says what to run), or the
    database's own first line (exit 1), e.g. a server that cannot be reached."""
    from gateway.db import current_revision, head_revision

    first_line = str(exc.orig or exc).strip().splitlines()[0]
    try:
        current = current_revision(engine)
    except DBAPIError:
        return GatewayError(f"report: cannot read the database at {_safe_url(url)}: {first_line}")
    head = head_revision()
    if current != head:
        return InputError(
            f"the database at {_safe_url(url)} is at schema revision {current or '(empty)'}, "
            f"not {head}: run dr-gateway db upgrade --config FILE"
        )
    return GatewayError(f"report: the database at {_safe_url(url)} failed: {first_line}")


# --- the bare report ------------------------------------------------------------------------


def _run_summary(args: argparse.Namespace, out: TextIO) -> int:
    """``dr-gateway report --config FILE [--site ID] [--format F]``: the ``site_report`` view."""
    from gateway.db import make_engine
    from gateway.reporting import format_report, site_report

    if args.summary_config is None:
        raise InputError("report: --config FILE is required")
    settings = load_checked_settings(args.summary_config, connect=False)
    engine = make_engine(settings.database.url)
    try:
        with engine.connect() as connection:
            rows = site_report(connection, args.summary_site)
    finally:
        engine.dispose()
    if args.summary_site and not rows:
        raise InputError(
            f"--site {args.summary_site}: no such site in {_safe_url(settings.database.url)}"
        )
    out.write(format_report(rows, args.summary_format or "table"))
    return 0
