"""The reports as ``pandas.DataFrame``: for Parquet, the plot, the dashboard and notebooks.

The queries of ``queries.py`` return tables of plain values; here each becomes a frame whose
columns have the types pandas gives the database's rows (reals ``float64`` with NaN where
unknown, integers ``int64``, timestamps ``datetime64`` in UTC, strings ``str``), and a frame
shaped like a report becomes a table again (:func:`table_of_frame`), to be rendered by
``formats.py``. Only what needs pandas imports this module: a report written as a table,
CSV or JSON does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from gateway.reports.queries import (
    energy_table,
    event_interval_table,
    event_table,
    migration_table,
)
from gateway.reports.table import Column, ColumnKind, ReportTable, utc_instant


def to_frame(table: ReportTable) -> pd.DataFrame:
    """``table`` as a frame, each column typed by its kind."""
    return pd.DataFrame({column.name: _series(column) for column in table.columns})


def _series(column: Column) -> pd.Series:
    values = list(column.values)
    if column.kind == "float":
        return pd.Series(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
    if column.kind == "time":
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True))
    if column.kind == "bool":
        return pd.Series(np.array(values, dtype=np.bool_))
    if column.kind == "int":
        large = bool(values) and max(values) >= 2**63
        return pd.Series(np.array(values, dtype=np.uint64 if large else np.int64))
    # strings become pandas' str type, as they do when pandas reads them from rows
    return pd.Series(np.array(values, dtype=object))


def table_of_frame(frame: pd.DataFrame) -> ReportTable:
    """A frame shaped like a report (``docs/views.md``) as a table, to render it."""
    return ReportTable(tuple(_column(str(name), frame[name]) for name in frame.columns))


def _column(name: str, values: pd.Series) -> Column:
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        return Column(name, "time", [None if pd.isna(at) else at.to_pydatetime() for at in stamps])
    plain = values.astype(object).where(values.notna(), None).tolist()
    kind = _KINDS.get(values.dtype.kind)
    if kind == "float":
        return Column(name, kind, [None if value is None else float(value) for value in plain])
    if kind is not None:
        return Column(name, kind, plain)
    if any(isinstance(value, datetime) for value in plain):
        return Column(name, "time", [utc_instant(value) for value in plain])
    if all(value is None or isinstance(value, str) for value in plain):
        return Column(name, "text", plain)
    return Column(name, "object", plain)


_KINDS: dict[str, ColumnKind] = {"f": "float", "i": "int", "u": "int", "b": "bool"}
"""numpy's kind letter of a column -> the table's kind."""


def write_parquet(table: ReportTable, path: Path) -> None:
    """Write ``table`` to ``path`` as Parquet (pyarrow), keeping its column types.

    :param table: the report's rows.
    :param path: the file to write (replaced if it exists).
    """
    to_frame(table).to_parquet(path, engine="pyarrow", index=False)


def energy_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
    by: Sequence[str] = ("site", "day"),
) -> pd.DataFrame:
    """:func:`gateway.reports.queries.energy_table` as a frame: the ``by`` keys present
    (``site_id``, ``period_start_at``), then ``ENERGY_COLUMNS``; unknown shares and
    emissions NaN."""
    return to_frame(energy_table(conn, since=since, until=until, site_ids=site_ids, by=by))


def migration_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`gateway.reports.queries.migration_table` as a frame."""
    return to_frame(migration_table(conn, since=since, until=until, site_ids=site_ids))


def event_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`gateway.reports.queries.event_table` as a frame."""
    return to_frame(event_table(conn, since=since, until=until, site_ids=site_ids))


def event_interval_report(
    conn: Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    site_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`gateway.reports.queries.event_interval_table` as a frame."""
    return to_frame(event_interval_table(conn, since=since, until=until, site_ids=site_ids))
