"""Reports as DataFrames: energy from the rollup tables, migrations and events from the views.

Every function takes an open SQLAlchemy ``Connection`` and returns a ``pandas.DataFrame``
whose columns are documented, with their units, in ``docs/views.md``. Timestamps come back
timezone-aware (UTC) on SQLite and PostgreSQL alike. Bad arguments raise
:class:`gateway.errors.InputError` naming the argument.

``energy_report`` reads ``energy_rollup_hour`` or ``energy_rollup_day`` (never the raw ledger),
so a year of 5-minute ledger rows for 100 sites answers in milliseconds.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
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
from models import EnergyRollupDay, EnergyRollupHour, Site, UTCDateTime

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
"""The value columns of :func:`energy_report`, in order, after its key columns."""

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

_ROLLUPS = {"hour": EnergyRollupHour, "day": EnergyRollupDay}
_KEY_COLUMNS = {"site": "site_id", "hour": "period_start_at", "day": "period_start_at"}
"""The column each ``by`` key reads."""


def energy_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
    by: Sequence[str] = ("site", "day"),
) -> pd.DataFrame:
    """Energy per site and/or period from the rollups.

    Columns: the ``by`` keys present, as ``site_id`` and ``period_start_at`` (start of the
    hour or day, aware UTC), then :data:`ENERGY_COLUMNS`: energies [kWh], ``renewable_share``
    [0-1] (NaN where the load is 0) and ``emissions_kg`` [kg CO2] (NaN where no carbon
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
    rollup = typing.cast(Table, _ROLLUPS[granularity].__table__)
    names = [_KEY_COLUMNS[key] for key in ("site", granularity) if key in keys]
    conditions = _period_filter(rollup.c, since, until, site_ids)
    data: dict[str, Any]
    if len(names) == 2:  # the rollup's own key: one stored row per result row
        sites, periods, sums = fetch.site_period_columns(conn, rollup, conditions, ROLLUP_SUMS)
        data = {"site_id": sites, "period_start_at": periods}
    else:
        group = [rollup.c[name] for name in names]
        # SUM over no rows is NULL: the fleet total of an empty range is 0
        values = [func.coalesce(func.sum(rollup.c[name]), 0) for name in ROLLUP_SUMS]
        query = select(*group, *values).where(*conditions)
        if group:
            query = query.group_by(*group).order_by(*group)
        rows = conn.execute(query).all()
        table = np.array(rows, dtype=object).reshape(-1, len(group) + len(values))
        data = {name: table[:, i] for i, name in enumerate(names)}
        if "period_start_at" in data:
            data["period_start_at"] = _utc(pd.Series(data["period_start_at"], dtype=object))
        sums = table[:, len(group) :].astype(np.float64)
    for i, name in enumerate(ROLLUP_SUMS):
        data[name] = sums[:, i]
    load = data["load_kwh"]
    with np.errstate(divide="ignore", invalid="ignore"):
        data["renewable_share"] = np.where(
            load > 0, data["renewable_used_kwh"] / np.where(load > 0, load, 1.0), np.nan
        )
    # emissions are unknown (NaN), not 0, where no ledger row summed had an intensity
    data["emissions_kg"] = np.where(data["emissions_rows"] > 0, data["emissions_kg"], np.nan)
    return pd.DataFrame({name: data[name] for name in (*names, *ENERGY_COLUMNS)})


def migration_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per migration from the ``migration_timeline`` view, by ``planned_at``.

    since, until: only migrations planned in [since, until) [aware UTC].
    site_ids: only migrations with one of these sites as source or target; None for all.
    """
    _check_range(since, until)
    view = table(
        "migration_timeline",
        column("planned_at", UTCDateTime()),
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
    return _frame(conn, query, MIGRATION_TIME_COLUMNS)


def event_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (event, site) from the ``event_delivery`` view: requested against
    delivered energy with the baseline it was measured against.

    since, until: only events whose (randomised) start lies in [since, until) [aware UTC].
    site_ids: only these sites; None for all.
    """
    return _delivery_rows(conn, "event_delivery", (), since, until, site_ids)


def event_interval_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
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
) -> pd.DataFrame:
    """The rows of a delivery view in [since, until) at ``site_ids``, by start, VTN, event,
    site and then the ``finer`` columns."""
    _check_range(since, until)
    keys = ("vtn_id", "event_id", "site_id", *finer)
    view = table(view_name, column("start_at", UTCDateTime()), *(column(k) for k in keys))
    conditions = _in_range(view.c.start_at, since, until)
    if site_ids is not None:
        conditions.append(view.c.site_id.in_(list(site_ids)))
    query: Select[Any] = (
        select(literal_column("*"))
        .select_from(view)
        .where(*conditions)
        .order_by(view.c.start_at, *(view.c[k] for k in keys))
    )
    return _frame(conn, query, EVENT_TIME_COLUMNS)


def energy_captured_kwh(conn: Connection) -> float:
    """The fleet's captured surplus over all time, from the daily rollup [kWh]."""
    total = conn.execute(
        select(func.coalesce(func.sum(EnergyRollupDay.captured_surplus_kwh), 0.0))
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
        conditions.append(at >= bindparam("since", since, UTCDateTime()))
    if until is not None:
        conditions.append(at < bindparam("until", until, UTCDateTime()))
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
        conditions.append(columns.period_start_at >= since)
    if until is not None:
        conditions.append(columns.period_start_at < until)
    if site_ids is not None:
        conditions.append(columns.site_id.in_(list(site_ids)))
    elif conditions:
        conditions.append(columns.site_id.in_(select(Site.id)))
    return [and_(*conditions)] if conditions else []


def _frame(conn: Connection, query: Select[Any], time_columns: Sequence[str]) -> pd.DataFrame:
    """The rows of a view as a DataFrame, its timestamp columns aware UTC.

    On SQLite the views' timestamps come back as text; both backends end up the same.
    """
    result = conn.execute(query)
    frame = pd.DataFrame.from_records(result.all(), columns=list(result.keys()))
    for name in time_columns:
        if name in frame:
            frame[name] = _utc(frame[name])
    return frame


def _utc(values: pd.Series) -> pd.Series:
    """Datetimes or SQLite timestamp text (``YYYY-MM-DD HH:MM:SS[.fff...]``) as aware UTC."""
    if values.empty:
        return pd.Series(pd.to_datetime(values, utc=True), index=values.index)
    if isinstance(values.dropna().iloc[0] if values.notna().any() else None, str):
        return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601"), index=values.index)
    return pd.Series(pd.to_datetime(values, utc=True), index=values.index)
