"""The reports as tables: energy from the rollup tables, migrations and events from the views.

Every function takes an open SQLAlchemy ``Connection`` and returns a
:class:`~gateway.reports.table.ReportTable` whose columns are documented, with their units,
in ``docs/views.md``; ``frames.py`` gives the same reports as ``pandas.DataFrame``.
Timestamps come back timezone-aware (UTC) on SQLite and PostgreSQL alike. Bad arguments raise
:class:`gateway.errors.InputError` naming the argument.

``energy_table`` reads ``energy_rollup_hour`` or ``energy_rollup_day`` (never the raw ledger),
so a year of 5-minute ledger rows for 100 sites answers in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Select,
    TableClause,
    and_,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
)

from gateway.errors import InputError
from gateway.reports import fetch
from gateway.reports.table import Column, ReportTable, table_of_rows, utc_instant

REPORT_BY_KEYS = ("site", "hour", "day")
"""The keys an energy report can be grouped by (``--by``)."""

Granularity = Literal["hour", "day"]
PERIOD_LENGTH: dict[Granularity, timedelta] = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}

ENERGY_SUMS = (
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "captured_surplus_kwh",
    "migration_kwh",
)
"""Rollup columns an energy report sums [kWh]."""

ROLLUP_SUMS = (*ENERGY_SUMS, "emissions_kg", "emissions_rows")
"""Rollup columns an energy report reads."""

ENERGY_COLUMNS = (
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "captured_surplus_kwh",
    "renewable_share",
    "emissions_kg",
    "migration_kwh",
)
"""The value columns of :func:`energy_table`, in order, after its key columns."""

MIGRATION_TIME_COLUMNS = (
    "planned_at",
    "target_reserved_at",
    "checkpointing_at",
    "transferring_at",
    "restoring_at",
    "completed_at",
    "aborted_at",
    "ended_at",
)
EVENT_TIME_COLUMNS = ("start_at", "end_at")

UTC_TIME = DateTime(timezone=True)
"""How a report binds an instant, converted to UTC first: PostgreSQL gets a ``timestamptz``,
SQLite the UTC wall time as ``models.UTCDateTime`` stores it (SQLite's DATETIME text has no
zone)."""


def _rollup(name: str) -> TableClause:
    return table(
        name,
        column("site_id"),
        column("period_start_at", UTC_TIME),
        *(column(value) for value in ROLLUP_SUMS),
    )


ROLLUP_TABLES: dict[Granularity, TableClause] = {
    "hour": _rollup("energy_rollup_hour"),
    "day": _rollup("energy_rollup_day"),
}
"""The rollups' columns that the reports read, by name: ``models.EnergyRollupHour`` and
``models.EnergyRollupDay`` define the tables. A report names them instead of importing the
models, which would load the ORM and every model (0.15 s of a command's start-up);
``tests/test_report_tables.py`` checks that each name is the models'."""
SITES_TABLE = table("sites", column("id"))
"""The site ids, by name (``models.Site`` defines the table)."""
_KEY_COLUMNS = {"site": "site_id", "hour": "period_start_at", "day": "period_start_at"}
"""The column each ``by`` key reads."""


def energy_table(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
    by: Sequence[str] = ("site", "day"),
) -> ReportTable:
    """Energy per site and/or period from the rollups.

    Columns: the ``by`` keys present, as ``site_id`` and ``period_start_at`` (start of the
    hour or day, aware UTC), then :data:`ENERGY_COLUMNS`: energies [kWh], ``renewable_share``
    [0-1] (unknown where the load is 0) and ``emissions_kg`` [kg CO2] (unknown where no carbon
    intensity covers any of the rows summed). ``by=()`` gives one fleet-total row.

    since, until: only periods starting in [since, until) [aware UTC]; with ``hour`` in
        ``by`` they must lie on hour boundaries, with ``day`` on day boundaries (UTC). Without
        a period key the daily rollup answers when both lie on day boundaries, else the
        hourly one.
    site_ids: only these sites; None for every site.
    """
    keys = _by_keys(by)
    _check_range(since, until)
    granularity = _granularity(keys, since, until)
    rollup = ROLLUP_TABLES[granularity]
    names = [_KEY_COLUMNS[key] for key in ("site", granularity) if key in keys]
    conditions = _period_filter(rollup.c, since, until, site_ids)
    key_columns: list[Column]
    if len(names) == 2:  # the rollup's own key: one stored row per result row
        fetched = fetch.site_period_columns(conn, rollup, conditions, ROLLUP_SUMS)
        key_columns = [
            Column("site_id", "text", fetched.site_ids),
            Column("period_start_at", "time", fetched.period_starts),
        ]
        sums = dict(zip(ROLLUP_SUMS, fetched.values, strict=True))
    else:
        key_columns, sums = _grouped_sums(conn, rollup, names, conditions)
    load = sums["load_kwh"]
    used = sums["renewable_used_kwh"]
    values: dict[str, list[float | None]] = {name: list(sums[name]) for name in ENERGY_SUMS}
    values["renewable_share"] = [
        used_kwh / load_kwh if load_kwh > 0 else None
        for used_kwh, load_kwh in zip(used, load, strict=True)
    ]
    # emissions are unknown, not 0, where no ledger row summed had an intensity
    values["emissions_kg"] = [
        emissions if rows > 0 else None
        for emissions, rows in zip(sums["emissions_kg"], sums["emissions_rows"], strict=True)
    ]
    return ReportTable(
        (*key_columns, *(Column(name, "float", values[name]) for name in ENERGY_COLUMNS))
    )


def _grouped_sums(
    conn: Connection,
    rollup: TableClause,
    names: Sequence[str],
    conditions: Sequence[ColumnElement[bool]],
) -> tuple[list[Column], dict[str, list[float]]]:
    """The rollup's sums grouped by the columns ``names`` (none: one fleet-total row), as
    the key columns and the sums by name."""
    group = [rollup.c[name] for name in names]
    # SUM over no rows is NULL: the fleet total of an empty range is 0
    totals = [func.coalesce(func.sum(rollup.c[name]), 0) for name in ROLLUP_SUMS]
    query = select(*group, *totals).where(*conditions)
    if group:
        query = query.group_by(*group).order_by(*group)
    fetched = conn.execute(query).all()
    key_columns = [
        Column(name, "time", [utc_instant(row[i]) for row in fetched])
        if name == "period_start_at"
        else Column(name, "text", [row[i] for row in fetched])
        for i, name in enumerate(names)
    ]
    sums = {
        name: [float(row[len(group) + k]) for row in fetched] for k, name in enumerate(ROLLUP_SUMS)
    }
    return key_columns, sums


def migration_table(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> ReportTable:
    """One row per migration from the ``migration_timeline`` view, by ``planned_at``.

    since, until: only migrations planned in [since, until) [aware UTC].
    site_ids: only migrations with one of these sites as source or target; None for all.
    """
    _check_range(since, until)
    view = table(
        "migration_timeline",
        column("planned_at", UTC_TIME),
        column("source_site_id"),
        column("target_site_id"),
        column("migration_id"),
    )
    conditions = _in_range(view.c.planned_at, since, until)
    if site_ids is not None:
        conditions.append(
            or_(view.c.source_site_id.in_(list(site_ids)), view.c.target_site_id.in_(site_ids))
        )
    query: Select[Any] = (
        select(literal_column("*"))
        .select_from(view)
        .where(*conditions)
        .order_by(view.c.planned_at, view.c.migration_id)
    )
    return _view_rows(conn, query, MIGRATION_TIME_COLUMNS)


def event_table(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> ReportTable:
    """One row per (event, site) from the ``event_delivery`` view: requested against
    delivered energy with the baseline it was measured against.

    since, until: only events whose (randomised) start lies in [since, until) [aware UTC].
    site_ids: only these sites; None for all.
    """
    return _delivery_rows(conn, "event_delivery", (), since, until, site_ids)


def event_interval_table(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> ReportTable:
    """One row per (event, site, interval) from the ``event_interval_delivery`` view:
    requested against delivered energy per interval, with the programme's baseline.

    since, until: only intervals whose start lies in [since, until) [aware UTC].
    site_ids: only these sites; None for all.
    """
    return _delivery_rows(
        conn, "event_interval_delivery", ("interval_index",), since, until, site_ids
    )


def _delivery_rows(
    conn: Connection,
    view_name: str,
    finer: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    site_ids: Sequence[str] | None,
) -> ReportTable:
    """The rows of a delivery view in [since, until) at ``site_ids``, by start, VTN, event,
    site and then the ``finer`` columns."""
    _check_range(since, until)
    keys = ("vtn_id", "event_id", "site_id", *finer)
    view = table(view_name, column("start_at", UTC_TIME), *(column(k) for k in keys))
    conditions = _in_range(view.c.start_at, since, until)
    if site_ids is not None:
        conditions.append(view.c.site_id.in_(list(site_ids)))
    query: Select[Any] = (
        select(literal_column("*"))
        .select_from(view)
        .where(*conditions)
        .order_by(view.c.start_at, *(view.c[k] for k in keys))
    )
    return _view_rows(conn, query, EVENT_TIME_COLUMNS)


def unknown_site_ids(conn: Connection, site_ids: Sequence[str]) -> list[str]:
    """The ids among ``site_ids`` that name no site, in the order given."""
    ids = SITES_TABLE.c.id
    known = set(conn.scalars(select(ids).where(ids.in_(list(site_ids)))))
    return [site_id for site_id in site_ids if site_id not in known]


def energy_captured_kwh(conn: Connection) -> float:
    """The fleet's captured surplus over all time, from the daily rollup [kWh]."""
    total = conn.execute(
        select(func.coalesce(func.sum(ROLLUP_TABLES["day"].c.captured_surplus_kwh), 0.0))
    ).scalar_one()
    return float(total)


def _by_keys(by: Sequence[str]) -> tuple[str, ...]:
    if isinstance(by, str):
        raise InputError(f"by: expected a sequence of keys from {REPORT_BY_KEYS}, got {by!r}")
    keys = tuple(by)
    for key in keys:
        if key not in REPORT_BY_KEYS:
            raise InputError(f"by: unknown key {key!r}; expected keys from {REPORT_BY_KEYS}")
    if len(set(keys)) != len(keys):
        raise InputError(f"by: a key is repeated in {keys}")
    if "hour" in keys and "day" in keys:
        raise InputError("by: choose hour or day, not both")
    return keys


def _in_range(
    at: ColumnElement[Any], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """Conditions that keep rows whose ``at`` lies in [since, until) (None: unbounded)."""
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(at >= bindparam("since", since.astimezone(UTC), UTC_TIME))
    if until is not None:
        conditions.append(at < bindparam("until", until.astimezone(UTC), UTC_TIME))
    return conditions


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InputError(f"{name}: {value.isoformat()} has no time zone; expected UTC")
    if since is not None and until is not None and since >= until:
        raise InputError(
            f"since {since.isoformat()} is not before until {until.isoformat()}: empty range"
        )


def _on_boundary(at: datetime, granularity: Granularity) -> bool:
    offset = at.astimezone(UTC) - datetime(2000, 1, 1, tzinfo=UTC)
    return offset % PERIOD_LENGTH[granularity] == timedelta(0)


def _granularity(
    keys: Sequence[str], since: datetime | None, until: datetime | None
) -> Granularity:
    """The rollup that answers: the period key's, else the coarsest the range allows."""
    bounds = [("since", since), ("until", until)]
    for granularity in ("hour", "day"):
        if granularity in keys:
            for name, value in bounds:
                if value is not None and not _on_boundary(value, granularity):
                    raise InputError(
                        f"{name}: {value.isoformat()} is not on a {granularity} boundary (UTC), "
                        f"which a report by {granularity} needs"
                    )
            return granularity
    if all(value is None or _on_boundary(value, "day") for _name, value in bounds):
        return "day"
    for name, value in bounds:
        if value is not None and not _on_boundary(value, "hour"):
            raise InputError(
                f"{name}: {value.isoformat()} is not on an hour boundary (UTC); the rollups "
                "answer whole hours and days"
            )
    return "hour"


def _period_filter(
    columns: Any,
    since: datetime | None,
    until: datetime | None,
    site_ids: Sequence[str] | None,
) -> list[ColumnElement[bool]]:
    """Conditions on a rollup's ``period_start_at`` and ``site_id`` (``table.c``).

    A time range without a site list names every site (``IN (SELECT id FROM sites)``): then
    SQLite searches the primary key (site, period) site by site and returns the rows in
    order, instead of the period index and a sort.
    """
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(columns.period_start_at >= since.astimezone(UTC))
    if until is not None:
        conditions.append(columns.period_start_at < until.astimezone(UTC))
    if site_ids is not None:
        conditions.append(columns.site_id.in_(list(site_ids)))
    elif conditions:
        conditions.append(columns.site_id.in_(select(SITES_TABLE.c.id)))
    return [and_(*conditions)] if conditions else []


def _view_rows(conn: Connection, query: Select[Any], time_columns: Sequence[str]) -> ReportTable:
    """The rows of a view as a table, its timestamp columns aware UTC.

    On SQLite the views' timestamps come back as text; both backends end up the same.
    """
    result = conn.execute(query)
    return table_of_rows(list(result.keys()), result.all(), time_columns)
