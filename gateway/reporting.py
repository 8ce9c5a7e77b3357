"""Per-site reports read from the ``site_report`` SQL view, and their text renderings.

The view (defined in the initial Alembic revision, documented in ``docs/views.md``) does the
accounting; this module only reads it, adds fleet totals and formats rows. Nothing here prints:
the CLI prints what ``format_report`` returns.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal, get_args

from sqlalchemy import Connection, RowMapping, column, select, table
from sqlalchemy.orm import Session

from gateway.errors import InputError

ReportFormat = Literal["table", "csv", "json"]
REPORT_FORMATS: tuple[ReportFormat, ...] = get_args(ReportFormat)
TOTAL_SITE_ID = "TOTAL"


@dataclass(frozen=True, slots=True)
class SiteReportRow:
    """One row of the ``site_report`` view: a site's totals over all time.

    Field names are the view's column names.
    """

    site_id: str
    renewable_used_kwh: float
    """Renewable energy the site used [kWh]."""
    grid_kwh: float
    """Energy drawn from the grid [kWh]."""
    curtailed_kwh: float
    """Renewable energy the site's plant could have delivered but nobody used [kWh]."""
    load_kwh: float
    """Energy the site drew in total [kWh]."""
    renewable_share: float | None
    """renewable_used_kwh / load_kwh, ``None`` when the load is 0 [1]."""
    migration_kwh: float
    """Energy the ledger booked to migrations at this site [kWh]."""
    migrations_out: int
    """Migrations with this site as source, in any state [count]."""
    migrations_in: int
    """Migrations with this site as target, in any state [count]."""
    completed_migrations: int
    """Completed migrations out of this site [count]."""
    downtime_s: float
    """Downtime of the completed migrations out of this site [s]."""
    events: int
    """Demand-response events addressing the site [count]."""
    opted_in: int
    """Events whose latest answer is optIn [count]."""
    opted_out: int
    """Events whose latest answer is optOut [count]."""


REPORT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SiteReportRow))
"""The columns of ``site_report``, in the view's order."""

_SITE_REPORT_VIEW = table("site_report", *(column(name) for name in REPORT_COLUMNS))


def site_report(source: Session | Connection, site_id: str | None = None) -> list[SiteReportRow]:
    """Read the ``site_report`` view, ordered by site id.

    :param source: an open session or connection to the gateway's database.
    :param site_id: only this site (an empty list if it does not exist); ``None`` for all.
    """
    query = select(_SITE_REPORT_VIEW).order_by(_SITE_REPORT_VIEW.c.site_id)
    if site_id is not None:
        query = query.where(_SITE_REPORT_VIEW.c.site_id == site_id)
    result = source.execute(query)
    return [_row_from_mapping(mapping) for mapping in result.mappings()]


def _row_from_mapping(mapping: RowMapping) -> SiteReportRow:
    share = mapping["renewable_share"]
    return SiteReportRow(
        site_id=str(mapping["site_id"]),
        renewable_used_kwh=float(mapping["renewable_used_kwh"]),
        grid_kwh=float(mapping["grid_kwh"]),
        curtailed_kwh=float(mapping["curtailed_kwh"]),
        load_kwh=float(mapping["load_kwh"]),
        renewable_share=None if share is None else float(share),
        migration_kwh=float(mapping["migration_kwh"]),
        migrations_out=int(mapping["migrations_out"]),
        migrations_in=int(mapping["migrations_in"]),
        completed_migrations=int(mapping["completed_migrations"]),
        downtime_s=float(mapping["downtime_s"]),
        events=int(mapping["events"]),
        opted_in=int(mapping["opted_in"]),
        opted_out=int(mapping["opted_out"]),
    )


def fleet_totals(rows: Sequence[SiteReportRow]) -> SiteReportRow:
    """The sum of ``rows`` as one row with site id ``TOTAL``.

    Every column is summed except ``renewable_share``, which is recomputed from the summed
    energies (``None`` when the summed load is 0). Events count (site, event) pairs: an
    event that addresses three sites counts three times.

    :param rows: per-site rows, as ``site_report`` returns them.
    """
    load_kwh = sum(row.load_kwh for row in rows)
    renewable_used_kwh = sum(row.renewable_used_kwh for row in rows)
    return SiteReportRow(
        site_id=TOTAL_SITE_ID,
        renewable_used_kwh=renewable_used_kwh,
        grid_kwh=sum(row.grid_kwh for row in rows),
        curtailed_kwh=sum(row.curtailed_kwh for row in rows),
        load_kwh=load_kwh,
        renewable_share=renewable_used_kwh / load_kwh if load_kwh != 0 else None,
        migration_kwh=sum(row.migration_kwh for row in rows),
        migrations_out=sum(row.migrations_out for row in rows),
        migrations_in=sum(row.migrations_in for row in rows),
        completed_migrations=sum(row.completed_migrations for row in rows),
        downtime_s=sum(row.downtime_s for row in rows),
        events=sum(row.events for row in rows),
        opted_in=sum(row.opted_in for row in rows),
        opted_out=sum(row.opted_out for row in rows),
    )


def _kwh(energy_kwh: float) -> str:
    return f"{energy_kwh:,.2f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}"


def _seconds(duration_s: float) -> str:
    return f"{duration_s:,.0f}"


@dataclass(frozen=True)
class _TableColumn:
    header: str
    """The table header, with the unit in brackets."""
    render: Callable[[SiteReportRow], str]
    align_left: bool = False


_TABLE_COLUMNS: tuple[_TableColumn, ...] = (
    _TableColumn("site", lambda row: row.site_id, align_left=True),
    _TableColumn("load [kWh]", lambda row: _kwh(row.load_kwh)),
    _TableColumn("renewable used [kWh]", lambda row: _kwh(row.renewable_used_kwh)),
    _TableColumn("grid [kWh]", lambda row: _kwh(row.grid_kwh)),
    _TableColumn("curtailed [kWh]", lambda row: _kwh(row.curtailed_kwh)),
    _TableColumn("share [%]", lambda row: _percent(row.renewable_share)),
    _TableColumn("migration [kWh]", lambda row: _kwh(row.migration_kwh)),
    _TableColumn("migrations out", lambda row: str(row.migrations_out)),
    _TableColumn("migrations in", lambda row: str(row.migrations_in)),
    _TableColumn("completed", lambda row: str(row.completed_migrations)),
    _TableColumn("downtime [s]", lambda row: _seconds(row.downtime_s)),
    _TableColumn("events", lambda row: str(row.events)),
    _TableColumn("opted in", lambda row: str(row.opted_in)),
    _TableColumn("opted out", lambda row: str(row.opted_out)),
)
"""The plain-text table, one entry per column, in the view's order but load first."""


def _format_table(rows: Sequence[SiteReportRow]) -> str:
    body = [[col.render(row) for col in _TABLE_COLUMNS] for row in rows]
    total = [col.render(fleet_totals(rows)) for col in _TABLE_COLUMNS]
    headers = [col.header for col in _TABLE_COLUMNS]
    widths = [max(len(cells[i]) for cells in [headers, *body, total]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.ljust(width) if col.align_left else cell.rjust(width)
            for cell, width, col in zip(cells, widths, _TABLE_COLUMNS, strict=True)
        )
        return "  ".join(padded)

    rule = "  ".join("-" * width for width in widths)
    lines = [line(headers), rule, *(line(cells) for cells in body), rule, line(total)]
    return "".join(f"{text}\n" for text in lines)


def _format_csv(rows: Sequence[SiteReportRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for row in rows:
        writer.writerow(["" if value is None else value for value in asdict(row).values()])
    return buffer.getvalue()


def _format_json(rows: Sequence[SiteReportRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2) + "\n"


_FORMATTERS: dict[ReportFormat, Callable[[Sequence[SiteReportRow]], str]] = {
    "table": _format_table,
    "csv": _format_csv,
    "json": _format_json,
}


def format_report(rows: Sequence[SiteReportRow], fmt: ReportFormat) -> str:
    """Render ``rows`` as text, every line ending in a newline (print it with ``end=""``).

    - ``table``: aligned plain text for people, units in the headers, renewable share in
      percent, and a ``TOTAL`` row (see ``fleet_totals``).
    - ``csv``: a header with the view's column names, then one line per site at full
      precision; an unknown share is an empty field. No total row.
    - ``json``: a list of objects keyed by the view's column names; an unknown share is
      ``null``. No total row.

    :param rows: per-site rows, as ``site_report`` returns them.
    :param fmt: ``table``, ``csv`` or ``json``.
    """
    try:
        formatter = _FORMATTERS[fmt]
    except KeyError:
        raise InputError(
            f"unknown report format {fmt!r}; choose one of {', '.join(REPORT_FORMATS)}"
        ) from None
    return formatter(rows)
