"""``dr-gateway report``: energy, migrations and events from the SQL rollups and views.

The kinds and their options are in :mod:`gateway.commands.report_kinds` and
:mod:`gateway.commands.report_options`; this module runs a report: the query of
``gateway/reports/queries.py`` that answers its kind, the rendering of
``gateway/reports/formats.py``, the file and the plot. The bare form (no kind) prints each
site's totals over all time from the ``site_report`` view (``gateway/reports/summary.py``), as
it always has; ``dr-gateway demo`` ends with it. Every bad option ends in
:class:`InputError` with one line that names the option (exit code 2).

A table, CSV or JSON report is read and written without pandas, numpy or the ORM
(``tests/test_report_tables.py`` checks what the command loads); pandas loads for Parquet and
the plot only (``gateway/reports/frames.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gateway.commands.report_kinds import KINDS_BY_NAME, LEVEL_KINDS, PERIODS, ReportKind
from gateway.commands.report_options import ReportRequest, on_boundary, request_from_args
from gateway.db import current_revision, head_revision, make_engine
from gateway.errors import GatewayError, InputError
from gateway.reports.formats import TEXT_FORMATS, Ratio, Totals, render_text
from gateway.reports.queries import (
    REPORT_BY_KEYS,
    energy_table,
    event_interval_table,
    event_table,
    migration_table,
    unknown_site_ids,
)
from gateway.reports.summary import format_report, site_report
from gateway.reports.table import ReportTable
from gateway.settings import Settings
from gateway.startup import load_checked_settings

Query = Callable[[Connection, ReportRequest], ReportTable]


def _energy(connection: Connection, request: ReportRequest) -> ReportTable:
    return energy_table(
        connection,
        since=request.since,
        until=request.until,
        site_ids=request.site_ids,
        by=request.by,
    )


def _migrations(connection: Connection, request: ReportRequest) -> ReportTable:
    return migration_table(
        connection, since=request.since, until=request.until, site_ids=request.site_ids
    )


def _events(connection: Connection, request: ReportRequest) -> ReportTable:
    return event_table(
        connection, since=request.since, until=request.until, site_ids=request.site_ids
    )


def _event_intervals(connection: Connection, request: ReportRequest) -> ReportTable:
    return event_interval_table(
        connection, since=request.since, until=request.until, site_ids=request.site_ids
    )


QUERIES: dict[str, Query] = {
    "energy": _energy,
    "migrations": _migrations,
    "events": _events,
    "event_intervals": _event_intervals,
}
"""Each query by the name a kind gives (``ReportKind.query``)."""


def kind_of(request: ReportRequest) -> ReportKind:
    """The kind that answers ``request``: its own, or that of its ``--by`` level."""
    level = request.by[0] if len(request.by) == 1 else None
    if level is not None and (request.kind, level) in LEVEL_KINDS:
        return LEVEL_KINDS[(request.kind, level)]
    return KINDS_BY_NAME[request.kind]


def totals(kind: ReportKind) -> Totals:
    """How the kind's table builds its ``TOTAL`` row."""
    return Totals(sums=kind.total_sums, ratios=tuple(Ratio(*ratio) for ratio in kind.total_ratios))


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
    kind = kind_of(request)
    engine = make_engine(settings.database.url)
    try:
        with engine.connect() as connection:
            _check_sites(connection, request.site_ids, settings.database.url)
            try:
                table = QUERIES[kind.query](connection, request)
                plot_table = _plot_table(connection, request, table)
            except InputError as exc:
                raise InputError(f"report {request.kind}: {exc}") from exc
    except DBAPIError as exc:
        raise _database_problem(engine, settings.database.url, exc) from exc
    finally:
        engine.dispose()
    _write(table, request, kind, out, err)
    if request.plot is not None and plot_table is not None:
        _plot(plot_table, request.plot, _plot_period(request), err)
    return 0


def _plot(table: ReportTable, path: Path, period: str, err: TextIO) -> None:
    """Draw the ``--plot`` PNG at ``path``; pandas and matplotlib load only now."""
    from gateway.reports.frames import to_frame
    from gateway.reports.plot import plot_energy

    try:
        summary = plot_energy(to_frame(table), path, period=PERIODS[period])
    except OSError as exc:
        raise InputError(f"--plot {path}: cannot write: {exc}") from exc
    print(summary.note(), file=err)


def table_view(table: ReportTable, kind: ReportKind) -> ReportTable:
    """The columns of ``table`` that the kind's table shows, in the table's order."""
    if kind.table_columns is None:
        return table
    return table.select(name for name in kind.table_columns if name in table)


def _write(
    table: ReportTable, request: ReportRequest, kind: ReportKind, out: TextIO, err: TextIO
) -> None:
    path = request.output
    shown = table_view(table, kind) if request.fmt == "table" else table
    try:
        if request.fmt not in TEXT_FORMATS:
            if path is None:
                raise InputError(f"--format {request.fmt}: give --output FILE")
            from gateway.reports.frames import write_parquet  # pandas loads only for Parquet

            write_parquet(table, path)
        elif path is None:
            out.write(render_text(shown, request.fmt, totals(kind)))
            return
        else:
            path.write_text(render_text(shown, request.fmt, totals(kind)), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--output {path}: cannot write: {exc}") from exc
    print(f"report {request.kind}: wrote {len(table)} rows to {path} ({request.fmt})", file=err)


def _plot_period(request: ReportRequest) -> str:
    """The plot's period: the ``--by`` period if there is one, else a day when the range
    lies on day boundaries, else an hour."""
    chosen = next((key for key in request.by if key in PERIODS), None)
    if chosen is not None:
        return chosen
    bounds = (at for at in (request.since, request.until) if at is not None)
    return "day" if all(on_boundary(at, "day") for at in bounds) else "hour"


def _plot_table(
    connection: Connection, request: ReportRequest, table: ReportTable
) -> ReportTable | None:
    """Energy per site and period for ``--plot``: the report itself when it is grouped so."""
    if request.plot is None:
        return None
    by = ("site", _plot_period(request))
    if set(request.by) == set(by):
        return table
    return _energy(connection, replace(request, by=by))


def _check_sites(connection: Connection, site_ids: Sequence[str] | None, url: str) -> None:
    if not site_ids:
        return
    unknown = unknown_site_ids(connection, site_ids)
    if unknown:
        raise InputError(f"--site {','.join(unknown)}: no such site in {_safe_url(url)}")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _database_problem(engine: Engine, url: str, exc: DBAPIError) -> GatewayError:
    """An error for a failed query: a schema below head (exit 2, says what to run), or the
    database's own first line (exit 1), e.g. a server that cannot be reached."""
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
