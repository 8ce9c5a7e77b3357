"""Renderings of a report's DataFrame: an aligned table, CSV, JSON and Parquet.

A report is a ``pandas.DataFrame`` whose column names carry their units (``load_kwh``,
``downtime_s``, ``start_at``; see ``docs/views.md``). The table turns those suffixes into
bracketed units in its headers and can end with a ``TOTAL`` row; CSV and JSON keep the column
names and full precision, with timestamps in ISO 8601 (UTC); Parquet keeps the column types
(timestamps stay timezone-aware). Nothing here prints: ``render_text`` returns text,
``write_parquet`` writes a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from gateway.errors import InputError

ReportFormat = Literal["table", "csv", "json", "parquet"]
REPORT_FORMATS: tuple[ReportFormat, ...] = get_args(ReportFormat)
TEXT_FORMATS: tuple[ReportFormat, ...] = ("table", "csv", "json")
"""The formats that can be written to standard output; Parquet is binary and needs a file."""

TOTAL_LABEL = "TOTAL"
MISSING = "-"
"""How the table shows an unknown value (NULL, NaN, NaT)."""


@dataclass(frozen=True)
class Ratio:
    """A column that the ``TOTAL`` row recomputes as sum(numerator) / sum(denominator), over
    the rows where both are known."""

    column: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class Totals:
    """How a report's table builds its ``TOTAL`` row.

    Columns in ``sums`` are added up over the rows whose value is known (the total is unknown
    only when no row's is), as a SQL ``SUM`` does, so that the total of a report by site and
    day equals the same report by nothing; each ``Ratio`` is recomputed from the summed
    columns (unknown where the denominator sums to 0); every other column is left blank, the
    first one reads ``TOTAL``.
    """

    sums: tuple[str, ...]
    ratios: tuple[Ratio, ...] = ()


# --- table ----------------------------------------------------------------------------------

ColumnText = Callable[[pd.Series], list[str]]
"""Renders a whole column at once (a report by site and day over a year has 36,500 rows)."""


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _numbers(pattern: str, scale: float = 1.0) -> ColumnText:
    """Numbers times ``scale`` written with ``pattern``; unknown values as ``MISSING``."""
    text_of = pattern.format

    def render(values: pd.Series) -> list[str]:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float) * scale
        return [MISSING if number != number else text_of(number) for number in numbers.tolist()]

    return render


@dataclass(frozen=True)
class _Unit:
    """A column-name suffix, the unit the table shows for it and how values are written."""

    suffix: str
    unit: str
    render: ColumnText
    keep_suffix: bool = False
    """Keep the suffix in the header (``renewable share [%]``, not ``renewable [%]``)."""


_UNITS: tuple[_Unit, ...] = (
    _Unit("_kwh", "kWh", _numbers("{:,.2f}")),
    _Unit("_kg", "kg", _numbers("{:,.2f}")),
    _Unit("_kw", "kW", _numbers("{:,.2f}")),
    _Unit("_share", "%", _numbers("{:.1f}", scale=100.0), keep_suffix=True),
    _Unit("_ratio", "%", _numbers("{:.1f}", scale=100.0), keep_suffix=True),
    _Unit("_bytes", "B", _numbers("{:,.0f}")),
    _Unit("_gb", "GB", _numbers("{:,.3f}")),
    _Unit("_s", "s", _numbers("{:,.0f}")),
)
"""Suffix to unit, one row per unit; the first matching suffix wins. Timestamps (``_at``) and
identifiers (``_id``) are handled by type, see ``_table_column``."""


def _header(name: str, unit: str | None) -> str:
    """``renewable_used_kwh`` -> ``renewable used [kWh]``; ``site_id`` -> ``site``."""
    stem = name
    for suffix in ("_id", "_at"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    for known in _UNITS:
        if stem.endswith(known.suffix):
            stem = stem if known.keep_suffix else stem[: -len(known.suffix)]
            break
    words = stem.replace("_", " ")
    return f"{words} [{unit}]" if unit else words


def _is_timestamp(values: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    return values.dtype == object and any(isinstance(v, datetime) for v in values)


def _utc_stamps(values: pd.Series) -> pd.Series:
    """Timestamps as aware UTC (naive ones are taken as UTC); unknown ones NaT."""
    return pd.Series(pd.to_datetime(values, utc=True), index=values.index)


def _timestamps(values: pd.Series) -> list[str]:
    """Dates alone when every timestamp is a UTC midnight, else minutes (seconds if needed)."""
    stamps = _utc_stamps(values)
    known = stamps.dropna()
    if ((known.dt.hour == 0) & (known.dt.minute == 0) & (known.dt.second == 0)).all() and (
        known.dt.microsecond == 0
    ).all():
        pattern = "%Y-%m-%d"
    elif ((known.dt.second == 0) & (known.dt.microsecond == 0)).all():
        pattern = "%Y-%m-%d %H:%M"
    else:
        pattern = "%Y-%m-%d %H:%M:%S"
    texts = stamps.dt.strftime(pattern).tolist()
    return [text if isinstance(text, str) else MISSING for text in texts]


def _plain_value(value: object) -> str:
    if _is_missing(value):
        return MISSING
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def _plain(values: pd.Series) -> list[str]:
    return [_plain_value(value) for value in values.tolist()]


@dataclass(frozen=True)
class _TableColumn:
    name: str
    header: str
    render: ColumnText
    align_left: bool


def _table_column(name: str, values: pd.Series) -> _TableColumn:
    if _is_timestamp(values):
        return _TableColumn(name, _header(name, "UTC"), _timestamps, False)
    for unit in _UNITS:
        if name.endswith(unit.suffix) and not name.endswith("_id"):
            return _TableColumn(name, _header(name, unit.unit), unit.render, False)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return _TableColumn(name, _header(name, None), _plain, not numeric)


def _sum_or_missing(values: pd.Series) -> float | None:
    """The sum of the known values; None when none is known."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().all():
        return None
    return float(numbers.sum(skipna=True))


def total_row(frame: pd.DataFrame, totals: Totals) -> dict[str, object]:
    """The ``TOTAL`` row of ``frame`` as a mapping of column name to value.

    :param frame: the report's rows.
    :param totals: which columns to sum and which ratios to recompute.
    """
    row: dict[str, object] = {name: None for name in frame.columns}
    for name in totals.sums:
        if name in frame.columns:
            row[name] = _sum_or_missing(frame[name])
    for ratio in totals.ratios:
        if ratio.column not in frame.columns:
            continue
        # Over the rows where both are known, so that a row still unmeasured (NULL
        # numerator) does not count in the denominator.
        numbers = frame[[ratio.numerator, ratio.denominator]].apply(pd.to_numeric, errors="coerce")
        known = numbers.dropna()
        numerator = _sum_or_missing(known[ratio.numerator])
        denominator = _sum_or_missing(known[ratio.denominator])
        if numerator is None or denominator is None or denominator == 0:
            row[ratio.column] = None
        else:
            row[ratio.column] = numerator / denominator
    return row


def format_table(
    frame: pd.DataFrame, totals: Totals | None = None, headers: Mapping[str, str] | None = None
) -> str:
    """An aligned plain-text table: units in the headers, shares in percent, timestamps in UTC.

    A ``TOTAL`` row follows when ``totals`` is given and there are at least two rows (with one
    row it would repeat it). An empty frame gives the headers and ``(no rows)``.

    :param frame: the report's rows.
    :param totals: how to build the ``TOTAL`` row; ``None`` for none.
    :param headers: column name -> header, for the columns whose header is not the one their
        name gives.
    """
    footer: dict[str, object] | None = None
    if totals is not None and len(frame) >= 2 and len(frame.columns) > 0:
        total = total_row(frame, totals)
        computed = {*totals.sums, *(ratio.column for ratio in totals.ratios)}
        footer = {name: value for name, value in total.items() if name in computed}
    return _table_text(frame, footer, headers or {}, note_empty=True)


def format_table_with_total(
    frame: pd.DataFrame, total: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> str:
    """An aligned plain-text table as :func:`format_table`, ending with a ``TOTAL`` row whose
    values the caller computed, however many rows there are (none too).

    :param frame: the report's rows.
    :param total: column name -> the ``TOTAL`` row's value; the first column reads ``TOTAL``,
        a column missing here is left blank.
    :param headers: column name -> header, as for :func:`format_table`.
    """
    return _table_text(frame, total, headers or {}, note_empty=False)


def _table_text(
    frame: pd.DataFrame,
    footer: Mapping[str, object] | None,
    headers: Mapping[str, str],
    *,
    note_empty: bool,
) -> str:
    """The table of ``frame``; ``footer`` the ``TOTAL`` row's values by column, or None;
    ``note_empty``: an empty frame ends with ``(no rows)``."""
    columns = [_table_column(str(name), frame[name]) for name in frame.columns]
    cells = [
        [headers.get(column.name, column.header), *column.render(frame[column.name])]
        for column in columns
    ]
    if footer is not None and columns:
        texts = [TOTAL_LABEL] + [
            column.render(pd.Series([footer[column.name]], dtype=object))[0]
            if column.name in footer
            else ""
            for column in columns[1:]
        ]
        for column_cells, text in zip(cells, texts, strict=True):
            column_cells.append(text)
    padded = []
    for column, column_cells in zip(columns, cells, strict=True):
        width = max(len(text) for text in column_cells)
        pad = str.ljust if column.align_left else str.rjust
        padded.append([pad(text, width) for text in column_cells])
    lines = ["  ".join(parts).rstrip() for parts in zip(*padded, strict=True)]
    rule = "  ".join("-" * len(column_cells[0]) for column_cells in padded)
    if footer is not None and columns:
        lines.insert(-1, rule)
    lines.insert(1, rule)
    if len(frame) == 0 and note_empty:
        lines.append("(no rows)")
    return "".join(f"{text}\n" for text in lines)


# --- CSV and JSON ---------------------------------------------------------------------------


def _iso_texts(values: pd.Series) -> list[str | None]:
    """Timestamps as ISO 8601 in UTC (``2026-06-01T00:00:00+00:00``, microseconds when any
    has them); unknown ones None."""
    stamps = _utc_stamps(values)
    fraction = ".%f" if (stamps.dropna().dt.microsecond != 0).any() else ""
    texts = stamps.dt.strftime(f"%Y-%m-%dT%H:%M:%S{fraction}+00:00").tolist()
    return [text if isinstance(text, str) else None for text in texts]


def _with_iso_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose timestamp columns are ISO 8601 strings in UTC (None if unknown)."""
    out = frame.copy()
    for name in out.columns:
        if _is_timestamp(out[name]):
            out[name] = pd.Series(_iso_texts(out[name]), index=out.index, dtype=object)
    return out


def format_csv(frame: pd.DataFrame) -> str:
    """CSV with a header row of column names; full precision; ISO 8601 UTC timestamps; an
    unknown value is an empty field. No total row.

    :param frame: the report's rows.
    """
    text: str = _with_iso_timestamps(frame).to_csv(index=False, lineterminator="\n")
    return text


def _json_default(value: object) -> object:
    """What the JSON encoder cannot write itself: numpy scalars."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as JSON")


def format_json(frame: pd.DataFrame, indent: int | None = None, ascii_only: bool = False) -> str:
    """A JSON list of records keyed by column name, one record per line; ISO 8601 UTC
    timestamps; an unknown value is ``null``. No total row.

    :param frame: the report's rows.
    :param indent: indent every key of every record by this many spaces per level instead
        (``json.dumps``'s layout); ``None`` for one record per line.
    :param ascii_only: escape every character beyond ASCII (``\\u00e9``).
    """
    converted = _with_iso_timestamps(frame)
    names = [str(name) for name in converted.columns]
    columns = [
        converted[name].astype(object).where(converted[name].notna(), None).tolist()
        for name in converted.columns
    ]
    records = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if indent is not None:
        return _json_text(records, indent, ascii_only) + "\n"
    if len(converted) == 0:
        return "[]\n"
    lines = (_json_text(record, None, ascii_only) for record in records)
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def _json_text(value: object, indent: int | None, ascii_only: bool) -> str:
    return json.dumps(
        value, default=_json_default, allow_nan=False, ensure_ascii=ascii_only, indent=indent
    )


_TEXT_FORMATTERS: dict[str, Callable[[pd.DataFrame, Totals | None], str]] = {
    "table": format_table,
    "csv": lambda frame, _totals: format_csv(frame),
    "json": lambda frame, _totals: format_json(frame),
}


def render_text(frame: pd.DataFrame, fmt: ReportFormat, totals: Totals | None = None) -> str:
    """``frame`` as ``table``, ``csv`` or ``json`` text, every line ending in a newline.

    :param frame: the report's rows.
    :param fmt: one of ``TEXT_FORMATS``.
    :param totals: the table's ``TOTAL`` row (ignored by CSV and JSON).
    """
    try:
        formatter = _TEXT_FORMATTERS[fmt]
    except KeyError:
        raise InputError(
            f"--format {fmt}: not a text format; choose one of {', '.join(TEXT_FORMATS)}"
        ) from None
    return formatter(frame, totals)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` as Parquet (pyarrow), keeping its column types.

    :param frame: the report's rows.
    :param path: the file to write (replaced if it exists).
    """
    frame.reset_index(drop=True).to_parquet(path, engine="pyarrow", index=False)
