"""Keeping the energy rollups equal to the ledger: per row as it is written, or rebuilt.

A ledger row counts in the UTC hour and the UTC day in which its interval *starts*, whole
(a row from 10:58 to 11:03 counts in the 10:00 hour). What a row adds (its energies, its
captured surplus and its emissions) is read from the ``ledger_accounted`` view, the one
definition of both; the rollups are its sums per site and period.

:func:`add_to_rollups` runs in the session that adds the ledger row, so the row and its
rollups commit together or not at all. It upserts with ``INSERT ... ON CONFLICT DO UPDATE``
(SQLite and PostgreSQL dialect inserts). :func:`rebuild_rollups` recomputes the rollups of a
span of days from the ledger with the same statements as revision 0005's backfill, after
carbon intensities for past intervals are loaded, or for a benchmark's bulk-loaded ledger.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, column, delete, select, table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.errors import GatewayError
from models import EnergyRollupDay, EnergyRollupHour, UTCDateTime

SUMMED = (
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "migration_kwh",
    "captured_surplus_kwh",
    "emissions_kg",
    "ledger_rows",
    "emissions_rows",
)
"""Rollup columns that add up over ledger rows."""

_ENERGIES = SUMMED[:7]

LEDGER_ACCOUNTED = table(
    "ledger_accounted",
    column("site_id"),
    column("interval_start_at", UTCDateTime()),
    column("hour_start_at", UTCDateTime()),
    column("day_start_at", UTCDateTime()),
    *(column(name) for name in _ENERGIES),
    column("emissions_kg"),
)
"""The view (revision 0005) with each ledger row's period, captured surplus and emissions."""

_INSERTS: dict[str, Callable[[Any], sqlite.Insert | postgresql.Insert]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}
"""The dialect inserts that know ``ON CONFLICT DO UPDATE``."""

_ROLLUP_COLUMNS = (
    "site_id, period_start_at, ledger_rows, load_kwh, renewable_kwh, renewable_used_kwh, "
    "grid_kwh, curtailed_kwh, migration_kwh, captured_surplus_kwh, emissions_kg, emissions_rows"
)


REBUILD_HOURS_SQL = f"""
INSERT INTO energy_rollup_hour ({_ROLLUP_COLUMNS})
SELECT
    site_id,
    hour_start_at,
    COUNT(*),
    SUM(load_kwh),
    SUM(renewable_kwh),
    SUM(renewable_used_kwh),
    SUM(grid_kwh),
    SUM(curtailed_kwh),
    SUM(migration_kwh),
    SUM(captured_surplus_kwh),
    COALESCE(SUM(emissions_kg), 0.0),
    COUNT(emissions_kg)
FROM ledger_accounted
WHERE interval_start_at >= :since AND interval_start_at < :until
GROUP BY site_id, hour_start_at
"""
"""Revision 0005's backfill of the hourly rollup, for ledger rows in [:since, :until)."""

DAY_OF_PERIOD = {
    "sqlite": "strftime('%Y-%m-%d 00:00:00.000000', period_start_at)",
    "postgresql": "(date_trunc('day', period_start_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
}
"""The UTC day of an hourly rollup row, as stored, per dialect."""


def rebuild_days_sql(dialect: str) -> str:
    """Revision 0005's backfill of the daily rollup from the hourly one, for the hours in
    [:since, :until) (whole days)."""
    try:
        day = DAY_OF_PERIOD[dialect]
    except KeyError as exc:
        raise RollupError(f"no rollups for the {dialect} database") from exc
    return f"""
INSERT INTO energy_rollup_day ({_ROLLUP_COLUMNS})
SELECT
    site_id,
    {day},
    SUM(ledger_rows),
    SUM(load_kwh),
    SUM(renewable_kwh),
    SUM(renewable_used_kwh),
    SUM(grid_kwh),
    SUM(curtailed_kwh),
    SUM(migration_kwh),
    SUM(captured_surplus_kwh),
    SUM(emissions_kg),
    SUM(emissions_rows)
FROM energy_rollup_hour
WHERE period_start_at >= :since AND period_start_at < :until
GROUP BY site_id, {day}
"""


BULK_SETTINGS = {"postgresql": ("SET LOCAL jit = off",)}
"""Per dialect, for the rest of the transaction that rebuilds: PostgreSQL's JIT spends
seconds compiling the views' expressions, more than it saves on a year of ledger rows."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class RollupError(GatewayError):
    """The rollups cannot be updated (the schema lacks them, or the ledger row is missing)."""


def add_to_rollups(session: Session, site_id: str, interval_start_at: datetime) -> None:
    """Add the ledger row of ``site_id`` starting at ``interval_start_at`` [aware UTC], just
    added to ``session``, to its hour's and its day's rollup, in the same transaction.

    Flushes the session first, so that the view sees the row.
    """
    session.flush()
    row = (
        session.execute(
            select(LEDGER_ACCOUNTED).where(
                LEDGER_ACCOUNTED.c.site_id == site_id,
                LEDGER_ACCOUNTED.c.interval_start_at == interval_start_at,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise RollupError(
            f"no ledger row of site {site_id} starting at {interval_start_at.isoformat()} "
            "to add to the rollups"
        )
    covered = row["emissions_kg"] is not None
    sums: dict[str, Any] = {name: float(row[name]) for name in _ENERGIES}
    sums["emissions_kg"] = float(row["emissions_kg"]) if covered else 0.0
    sums["ledger_rows"] = 1
    sums["emissions_rows"] = 1 if covered else 0
    connection = session.connection()
    dialect = connection.dialect.name
    for model, period_start_at in (
        (EnergyRollupHour, row["hour_start_at"]),
        (EnergyRollupDay, row["day_start_at"]),
    ):
        connection.execute(
            _upsert(dialect, model),
            {"site_id": site_id, "period_start_at": period_start_at, **sums},
        )


@functools.cache
def _upsert(dialect: str, model: type[EnergyRollupHour] | type[EnergyRollupDay]) -> Any:
    """INSERT one row's sums, or ON CONFLICT add them to the period's row; one statement per
    dialect and rollup, built once (parameters: the rollup's columns)."""
    try:
        insert = _INSERTS[dialect]
    except KeyError as exc:
        raise RollupError(
            f"no upsert for the {dialect} database; expected {set(_INSERTS)}"
        ) from exc
    names = ("site_id", "period_start_at", *SUMMED)
    statement = insert(model).values({name: bindparam(name) for name in names})
    return statement.on_conflict_do_update(
        index_elements=[model.site_id, model.period_start_at],
        set_={name: getattr(model, name) + getattr(statement.excluded, name) for name in SUMMED},
    )


def day_span(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """[since, until) widened to whole UTC days; None for the beginning or end of time."""
    start = EARLIEST if since is None else since.astimezone(UTC)
    end = LATEST if until is None else until.astimezone(UTC)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    end_day = end.replace(hour=0, minute=0, second=0, microsecond=0)
    if end_day < end:
        end_day += timedelta(days=1)
    return start, end_day


def rebuild_rollups(
    conn: Connection, since: datetime | None = None, until: datetime | None = None
) -> tuple[datetime, datetime]:
    """Recompute the hourly and daily rollups of every site for the UTC days that overlap
    [since, until) [aware UTC] (None: from the first / to the last ledger row) from the
    ledger (the hours from ``ledger_accounted``, the days from the hours); the span rebuilt.
    Runs in the caller's transaction."""
    start, end = day_span(since, until)
    for statement in BULK_SETTINGS.get(conn.dialect.name, ()):
        conn.execute(text(statement))
    params = [
        bindparam("since", start, type_=UTCDateTime()),
        bindparam("until", end, type_=UTCDateTime()),
    ]
    for model, insert_sql in (
        (EnergyRollupHour, REBUILD_HOURS_SQL),
        (EnergyRollupDay, rebuild_days_sql(conn.dialect.name)),
    ):
        conn.execute(
            delete(model).where(and_(model.period_start_at >= start, model.period_start_at < end))
        )
        conn.execute(text(insert_sql).bindparams(*params))
    return start, end
