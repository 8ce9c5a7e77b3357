"""Fetching tens of thousands of report rows into numpy columns, fast, per dialect.

A report by site and day over a year is 36,500 rows; through SQLAlchemy's rows the Python
objects cost more than the query. Here the rows come from a DB-API cursor of the caller's
connection (in its transaction), with the query's parameters rendered by SQLAlchemy as quoted
literals, and the driver's errors are raised as SQLAlchemy's, as from ``conn.execute``:

- :func:`rows` gives plain tuples (SQLite: about a third faster than SQLAlchemy's rows).
- :func:`site_period_columns` gives a rollup's rows by site and period as columns. On
  PostgreSQL it asks for one row per site holding an array per column and reads each binary
  ``float8[]`` straight into numpy (half the time of row by row, ``pg_arrays.py``); elsewhere
  it reads rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Select,
    Table,
    cast,
    extract,
    func,
    select,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import NullType

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


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
    rollup: Table,
    conditions: Sequence[ColumnElement[bool]],
    value_names: Sequence[str],
) -> tuple[np.ndarray[Any, Any], pd.Series, FloatArray]:
    """The rows of ``rollup`` that meet ``conditions``, ordered by site and period, as
    (site ids, period starts as aware UTC, values of ``value_names`` with shape (rows, k)).

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
    table = np.array(rows(conn, query), dtype=object).reshape(-1, 2 + len(value_names))
    periods = pd.Series(table[:, 1], dtype=object)
    if not periods.empty:
        periods = pd.Series(pd.to_datetime(periods, utc=True, format="ISO8601"))
    else:
        periods = pd.Series(pd.to_datetime(periods, utc=True))
    return table[:, 0], periods, table[:, 2:].astype(np.float64)


def _site_period_arrays(
    conn: Connection,
    rollup: Table,
    conditions: Sequence[ColumnElement[bool]],
    value_names: Sequence[str],
) -> tuple[np.ndarray[Any, Any], pd.Series, FloatArray]:
    """PostgreSQL: one row per site with an array per column, read into numpy.

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
    if not per_site:
        empty = np.empty((0, len(value_names)), dtype=np.float64)
        return np.empty(0, dtype=object), pd.Series(pd.to_datetime([], utc=True)), empty
    counts = [len(row[1]) for row in per_site]
    sites = np.repeat(np.array([row[0] for row in per_site], dtype=object), counts)
    epochs = np.concatenate([row[1] for row in per_site])
    values = np.column_stack(
        [np.concatenate([row[2 + k] for row in per_site]) for k in range(len(value_names))]
    )
    order = np.lexsort((epochs, np.repeat(np.arange(len(per_site)), counts)))
    periods = pd.Series(pd.to_datetime(epochs[order], unit="s", utc=True))
    return sites, periods, values[order]
