"""A report's rows as named columns of plain Python values: what every report renders.

The command reads a report, renders it as a table, CSV or JSON and writes it without pandas
(which takes longer to import than the query takes to run); ``frames.py`` turns a table into
a ``pandas.DataFrame`` for Parquet, the plot and the dashboard.

Each column has one kind, the one pandas gives the same values when it reads them from the
database's rows, so that every rendering, and every frame, is what it was when the reports
were frames throughout:

- ``float``: real numbers (integers among them read as reals), ``None`` where unknown;
- ``int``: integers, none unknown; ``bool``: booleans, none unknown;
- ``time``: aware UTC datetimes, ``None`` where unknown (SQLite's timestamp text is parsed);
- ``text``: strings, ``None`` where unknown;
- ``object``: anything else (a mixture, decimals, a column of nothing but NULLs).

NaN is never stored: an unknown value is ``None`` whatever the column's kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ColumnKind = Literal["float", "int", "bool", "time", "text", "object"]
NUMERIC_KINDS: frozenset[ColumnKind] = frozenset(("float", "int"))
"""The kinds a table aligns to the right, as numbers."""

_INT64_MIN = -(2**63)
_UINT64_END = 2**64


@dataclass(frozen=True)
class Column:
    """One column of a report: its name, its kind and its values, ``None`` where unknown."""

    name: str
    kind: ColumnKind
    values: Sequence[Any]


@dataclass(frozen=True)
class ReportTable:
    """A report's rows as columns of equal length, in the report's column order."""

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        lengths = {len(column.values) for column in self.columns}
        if len(lengths) > 1:
            raise ValueError(f"columns of unequal length: {sorted(lengths)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def __len__(self) -> int:
        """The number of rows (0 for a table without columns)."""
        return len(self.columns[0].values) if self.columns else 0

    def __contains__(self, name: object) -> bool:
        return any(column.name == name for column in self.columns)

    def column(self, name: str) -> Column:
        """The column called ``name``; ``KeyError`` if there is none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def select(self, names: Iterable[str]) -> ReportTable:
        """The columns called ``names``, in that order."""
        return ReportTable(tuple(self.column(name) for name in names))


def table_of_rows(
    names: Sequence[str], rows: Sequence[Sequence[Any]], time_columns: Iterable[str] = ()
) -> ReportTable:
    """A table of database rows: the columns called ``time_columns`` as aware UTC times,
    every other column of the kind its values make (see :func:`infer_kind`).

    :param names: the columns' names, in the rows' order.
    :param rows: the rows as the driver returns them.
    :param time_columns: the timestamp columns (SQLite returns their text); a name not among
        ``names`` is ignored.
    """
    times = set(time_columns)
    columns = []
    for index, name in enumerate(names):
        values = [row[index] for row in rows]
        if name in times:
            columns.append(Column(name, "time", [utc_instant(value) for value in values]))
        else:
            columns.append(column_of(name, values))
    return ReportTable(tuple(columns))


def column_of(name: str, values: Sequence[Any]) -> Column:
    """A column of ``values`` as the database returned them, of their kind; integers in a
    ``float`` column become reals and NaN becomes ``None``."""
    kind = infer_kind(values)
    if kind == "float":
        return Column(name, kind, [_real_or_none(value) for value in values])
    if kind == "time":
        return Column(name, kind, [utc_instant(value) for value in values])
    return Column(name, kind, [None if _is_nan(value) else value for value in values])


def infer_kind(values: Sequence[Any]) -> ColumnKind:
    """The kind of a column of database values, as pandas infers its type from rows.

    Integers alone are ``int``, integers with reals or unknowns ``float``; booleans alone
    ``bool`` (with unknowns ``object``); strings with or without unknowns ``text``; datetimes
    with or without unknowns ``time``; nothing known, or a mixture, ``object``.
    """
    types = {type(value) for value in values if value is not None and not _is_nan(value)}
    has_nan = any(_is_nan(value) for value in values)
    unknown = has_nan or any(value is None for value in values)
    if not types:
        return "float" if has_nan else "object"
    if types == {bool}:
        return "object" if unknown else "bool"
    if types <= {int, float} and bool not in types:
        if float in types or has_nan or unknown:
            return "float"
        return "int" if _fits_int64(values) else "object"
    if types == {str}:
        return "text"
    if all(issubclass(kind, datetime) for kind in types):
        return "time"
    return "object"


def utc_instant(value: object) -> datetime | None:
    """A database timestamp as an aware UTC datetime (see :func:`utc_datetime`); ``None``
    (or NaN) stays ``None``."""
    if value is None or _is_nan(value):
        return None
    return utc_datetime(value)


def utc_datetime(value: object) -> datetime:
    """A database timestamp as an aware UTC datetime: a datetime (naive ones are UTC) or
    ISO 8601 text such as SQLite's ``2026-06-01 00:00:00.000000``."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a timestamp from the database, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _real_or_none(value: object) -> float | None:
    if value is None or _is_nan(value):
        return None
    return float(value)  # type: ignore[arg-type]


def _fits_int64(values: Sequence[Any]) -> bool:
    """Whether the integers fit one numpy integer type (int64, or uint64 if none is
    negative), as pandas needs to keep them integers."""
    low = min(values)
    high = max(values)
    if low < 0:
        return bool(low >= _INT64_MIN and high < 2**63)
    return bool(high < _UINT64_END)
