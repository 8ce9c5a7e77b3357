"""Fetching tens of thousands of report rows, fast, per dialect.

A report by site and day over a year is 36,500 rows; through SQLAlchemy's rows the Python
objects cost more than the query. Here the rows come from a DB-API cursor of the caller's
connection (in its transaction), with the query's parameters rendered by SQLAlchemy as quoted
literals, and the driver's errors are raised as SQLAlchemy's, as from ``conn.execute``:

- :func:`rows` gives plain tuples (SQLite: about a third faster than SQLAlchemy's rows).
- :func:`site_period_columns` gives a rollup's rows by site and period as columns. On
  PostgreSQL it asks for one row per site holding an array per column and reads each binary
  ``float8[]`` at once (half the time of row by row, ``pg_arrays.py``); elsewhere it reads
  rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Select,
    TableClause,
    cast,
    extract,
    func,
    select,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType

from gateway.reports.table import utc_datetime


@dataclass(frozen=True)
class SitePeriodColumns:
    """A rollup's rows ordered by site and period, as columns of equal length."""

    site_ids: list[str]
    period_starts: list[datetime]
    """The periods' starts [aware UTC]."""
    values: list[list[float]]
    """One list per value column asked for, in the order asked (a count column's integers
    as SQLite returns them)."""


@contextmanager
def _as_sqlalchemy_errors(conn: Connection, sql: str) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` and its
    subclasses), as ``conn.execute`` would."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error, dialect=conn.dialect) from exc


def rows(conn: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``query`` as plain tuples from a DB-API cursor of ``conn``."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cursor = conn.connection.cursor()
    try:
        with _as_sqlalchemy_errors(conn, sql):
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        cursor.close()


def site_period_columns(
    conn: Connection,
    rollup: TableClause,
    conditions: Sequence[ColumnElement[bool]],
    value_names: Sequence[str],
) -> SitePeriodColumns:
    """The rows of ``rollup`` that meet ``conditions``, ordered by site and period, as
    columns: site ids, period starts and the values of ``value_names`` as reals.

    The value columns must hold no NULLs.
    """
    if conn.dialect.name == "postgresql":
        return _site_period_arrays(conn, rollup, conditions, value_names)
    query = (
        select(
            rollup.c.site_id,
            type_coerce(rollup.c.period_start_at, NullType()),  # the stored text, parsed below
            *(rollup.c[name] for name in value_names),
        )
        .where(*conditions)
        .order_by(rollup.c.site_id, rollup.c.period_start_at)
    )
    fetched = rows(conn, query)
    texts = list(map(itemgetter(1), fetched))
    instants = {text: utc_datetime(text) for text in set(texts)}  # a period repeats per site
    return SitePeriodColumns(
        list(map(itemgetter(0), fetched)),
        [instants[text] for text in texts],
        [list(map(itemgetter(2 + k), fetched)) for k in range(len(value_names))],
    )


def _site_period_arrays(
    conn: Connection,
    rollup: TableClause,
    conditions: Sequence[ColumnElement[bool]],
    value_names: Sequence[str],
) -> SitePeriodColumns:
    """PostgreSQL: one row per site with an array per column.

    The arrays of one site are aligned (every aggregate sees the site's rows in the same
    order); the rows are fed in period order, and sorted again here, so that the result does
    not depend on that.
    """
    epoch = cast(extract("epoch", rollup.c.period_start_at), Float).label("epoch_s")
    ordered = (
        select(
            rollup.c.site_id,
            epoch,
            *(cast(rollup.c[name], Float).label(name) for name in value_names),
        )
        .where(*conditions)
        .order_by(rollup.c.site_id, rollup.c.period_start_at)
        .subquery("ordered")
    )
    query = (
        select(
            ordered.c.site_id,
            func.array_agg(ordered.c.epoch_s),
            *(func.array_agg(ordered.c[name]) for name in value_names),
        )
        .group_by(ordered.c.site_id)
        .order_by(ordered.c.site_id)
    )
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    from gateway.reports.pg_arrays import fetch_binary  # psycopg: only for PostgreSQL

    with _as_sqlalchemy_errors(conn, sql):
        per_site = fetch_binary(conn.connection.driver_connection, sql)
    columns = SitePeriodColumns([], [], [[] for _ in value_names])
    instants: dict[float, datetime] = {}
    for site_id, epochs, *arrays in per_site:
        if tuple(sorted(epochs)) != epochs:
            order = sorted(range(len(epochs)), key=epochs.__getitem__)
            epochs = tuple(epochs[i] for i in order)
            arrays = [tuple(array[i] for i in order) for array in arrays]
        for epoch in set(epochs).difference(instants):
            instants[epoch] = datetime.fromtimestamp(epoch, UTC)
        columns.site_ids.extend([site_id] * len(epochs))
        columns.period_starts.extend(map(instants.__getitem__, epochs))
        for column, array in zip(columns.values, arrays, strict=True):
            column.extend(array)
    return columns
