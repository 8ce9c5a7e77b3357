"""Each site's totals over all time, read from the ``site_report`` SQL view, and their text.

The view (defined in the initial Alembic revision, documented in ``docs/views.md``) does the
accounting; this module only reads it, adds fleet totals and renders the rows with the
report formats of :mod:`gateway.reports.formats`. This is what the bare ``dr-gateway report``
and the demo print. Nothing here prints: the command prints what ``format_report`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Literal, get_args

from sqlalchemy import Connection, RowMapping, column, select, table

from gateway.errors import InputError
from gateway.reports.formats import format_csv, format_json, format_table_with_total
from gateway.reports.table import Column, ColumnKind, ReportTable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SummaryFormat = Literal["table", "csv", "json"]
SUMMARY_FORMATS: tuple[SummaryFormat, ...] = get_args(SummaryFormat)
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


TABLE_COLUMNS: tuple[str, ...] = (
    "site_id",
    "load_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "renewable_share",
    "migration_kwh",
    "migrations_out",
    "migrations_in",
    "completed_migrations",
    "downtime_s",
    "events",
    "opted_in",
    "opted_out",
)
"""The table's columns: the view's, load first."""
TABLE_HEADERS: dict[str, str] = {
    "renewable_share": "share [%]",
    "completed_migrations": "completed",
}
"""The table's headers that are not the ones their column names give."""
COUNT_COLUMNS = frozenset(
    ("migrations_out", "migrations_in", "completed_migrations", "events", "opted_in", "opted_out")
)
"""The columns that count [count] (integers); the others but the site id are real numbers,
an unknown share ``None``."""


def _kind(name: str) -> ColumnKind:
    if name == "site_id":
        return "text"
    return "int" if name in COUNT_COLUMNS else "float"


def _table(rows: Sequence[SiteReportRow]) -> ReportTable:
    """``rows`` as a table in the view's column order, each column of its field's kind."""
    return ReportTable(
        tuple(
            Column(name, _kind(name), [getattr(row, name) for row in rows])
            for name in REPORT_COLUMNS
        )
    )


def _format_table(rows: Sequence[SiteReportRow]) -> str:
    total = asdict(fleet_totals(rows))
    return format_table_with_total(_table(rows).select(TABLE_COLUMNS), total, TABLE_HEADERS)


def _format_csv(rows: Sequence[SiteReportRow]) -> str:
    return format_csv(_table(rows))


def _format_json(rows: Sequence[SiteReportRow]) -> str:
    return format_json(_table(rows), indent=2, ascii_only=True)


_FORMATTERS: dict[SummaryFormat, Callable[[Sequence[SiteReportRow]], str]] = {
    "table": _format_table,
    "csv": _format_csv,
    "json": _format_json,
}


def format_report(rows: Sequence[SiteReportRow], fmt: SummaryFormat) -> str:
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
            f"unknown report format {fmt!r}; choose one of {', '.join(SUMMARY_FORMATS)}"
        ) from None
    return formatter(rows)
