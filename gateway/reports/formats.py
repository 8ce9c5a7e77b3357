"""Renderings of a report's table: an aligned table, CSV and JSON.

A report is a :class:`~gateway.reports.table.ReportTable` whose column names carry their
units (``load_kwh``, ``downtime_s``, ``start_at``; see ``docs/views.md``). The table turns
those suffixes into bracketed units in its headers and can end with a ``TOTAL`` row; CSV and
JSON keep the column names and full precision, with timestamps in ISO 8601 (UTC). Nothing
here prints: ``render_text`` returns text. Parquet, which keeps the column types, is written
from a DataFrame (``frames.py``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from gateway.errors import InputError
from gateway.reports.table import NUMERIC_KINDS, Column, ReportTable

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

    Columns in ``sums`` are added up, exactly (``math.fsum``), over the rows whose value is
    known (the total is unknown only when no row's is), as a SQL ``SUM`` does, so that the
    total of a report by site and day equals the same report by nothing; each ``Ratio`` is
    recomputed from the summed columns (unknown where the denominator sums to 0); every other
    column is left blank, the first one reads ``TOTAL``.
    """

    sums: tuple[str, ...]
    ratios: tuple[Ratio, ...] = ()


# --- table ----------------------------------------------------------------------------------

ColumnText = Callable[[Sequence[Any]], list[str]]
"""Renders a whole column at once (a report by site and day over a year has 36,500 rows)."""


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: object) -> float:
    """A value as a real number; NaN for an unknown value or one that is not a number."""
    if type(value) is float:
        return value
    if value is None or isinstance(value, datetime):
        return math.nan
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _numbers(pattern: str, scale: float = 1.0) -> ColumnText:
    """Numbers times ``scale`` written with ``pattern``; unknown values as ``MISSING``."""
    text_of = pattern.format

    def render(values: Sequence[Any]) -> list[str]:
        numbers = (_number(value) * scale for value in values)
        return [MISSING if number != number else text_of(number) for number in numbers]

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
identifiers (``_id``) are handled by their column's kind, see ``_table_column``."""


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


def _timestamps(values: Sequence[Any]) -> list[str]:
    """Dates alone when every timestamp is a UTC midnight, else minutes (seconds if needed).

    The values are aware UTC datetimes or ``None`` (a ``time`` column)."""
    known = [stamp for stamp in values if stamp is not None]
    if all(
        stamp.hour == 0 and stamp.minute == 0 and stamp.second == 0 and stamp.microsecond == 0
        for stamp in known
    ):
        pattern = "%Y-%m-%d"
    elif all(stamp.second == 0 and stamp.microsecond == 0 for stamp in known):
        pattern = "%Y-%m-%d %H:%M"
    else:
        pattern = "%Y-%m-%d %H:%M:%S"
    return _each_once(values, lambda stamp: stamp.strftime(pattern), MISSING)


def _each_once(values: Sequence[Any], text_of: Callable[[Any], str], missing: Any) -> list[Any]:
    """``text_of`` of each value, computed once per distinct value (a report by site and day
    repeats each day for every site); ``missing`` for an unknown one."""
    texts: dict[Any, Any] = {None: missing}
    out = []
    for value in values:
        text = texts.get(value, _NOT_YET)
        if text is _NOT_YET:
            text = texts[value] = text_of(value)
        out.append(text)
    return out


_NOT_YET = object()


def _plain_value(value: object) -> str:
    if _is_missing(value):
        return MISSING
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _plain(values: Sequence[Any]) -> list[str]:
    return [_plain_value(value) for value in values]


@dataclass(frozen=True)
class _TableColumn:
    name: str
    header: str
    render: ColumnText
    align_left: bool


def _table_column(column: Column) -> _TableColumn:
    name = column.name
    if column.kind == "time":
        return _TableColumn(name, _header(name, "UTC"), _timestamps, False)
    for unit in _UNITS:
        if name.endswith(unit.suffix) and not name.endswith("_id"):
            return _TableColumn(name, _header(name, unit.unit), unit.render, False)
    return _TableColumn(name, _header(name, None), _plain, column.kind not in NUMERIC_KINDS)


def _sum_or_missing(values: Iterable[Any]) -> float | None:
    """The sum of the known values; None when none is known."""
    numbers = [number for number in map(_number, values) if number == number]
    if not numbers:
        return None
    return math.fsum(numbers)


def total_row(table: ReportTable, totals: Totals) -> dict[str, object]:
    """The ``TOTAL`` row of ``table`` as a mapping of column name to value.

    :param table: the report's rows.
    :param totals: which columns to sum and which ratios to recompute.
    """
    row: dict[str, object] = {name: None for name in table.names}
    for name in totals.sums:
        if name in table:
            row[name] = _sum_or_missing(table.column(name).values)
    for ratio in totals.ratios:
        if ratio.column not in table:
            continue
        # Over the rows where both are known, so that a row still unmeasured (NULL
        # numerator) does not count in the denominator.
        pairs = zip(
            map(_number, table.column(ratio.numerator).values),
            map(_number, table.column(ratio.denominator).values),
            strict=True,
        )
        known = [(top, bottom) for top, bottom in pairs if top == top and bottom == bottom]
        numerator = _sum_or_missing(top for top, _bottom in known)
        denominator = _sum_or_missing(bottom for _top, bottom in known)
        if numerator is None or denominator is None or denominator == 0:
            row[ratio.column] = None
        else:
            row[ratio.column] = numerator / denominator
    return row


def format_table(
    table: ReportTable, totals: Totals | None = None, headers: Mapping[str, str] | None = None
) -> str:
    """An aligned plain-text table: units in the headers, shares in percent, timestamps in UTC.

    A ``TOTAL`` row follows when ``totals`` is given and there are at least two rows (with one
    row it would repeat it). An empty table gives the headers and ``(no rows)``.

    :param table: the report's rows.
    :param totals: how to build the ``TOTAL`` row; ``None`` for none.
    :param headers: column name -> header, for the columns whose header is not the one their
        name gives.
    """
    footer: dict[str, object] | None = None
    if totals is not None and len(table) >= 2 and table.columns:
        total = total_row(table, totals)
        computed = {*totals.sums, *(ratio.column for ratio in totals.ratios)}
        footer = {name: value for name, value in total.items() if name in computed}
    return _table_text(table, footer, headers or {}, note_empty=True)


def format_table_with_total(
    table: ReportTable, total: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> str:
    """An aligned plain-text table as :func:`format_table`, ending with a ``TOTAL`` row whose
    values the caller computed, however many rows there are (none too).

    :param table: the report's rows.
    :param total: column name -> the ``TOTAL`` row's value; the first column reads ``TOTAL``,
        a column missing here is left blank.
    :param headers: column name -> header, as for :func:`format_table`.
    """
    return _table_text(table, total, headers or {}, note_empty=False)


def _table_text(
    table: ReportTable,
    footer: Mapping[str, object] | None,
    headers: Mapping[str, str],
    *,
    note_empty: bool,
) -> str:
    """The table of ``table``; ``footer`` the ``TOTAL`` row's values by column, or None;
    ``note_empty``: an empty table ends with ``(no rows)``."""
    columns = [_table_column(column) for column in table.columns]
    cells = [
        [headers.get(column.name, column.header), *column.render(values.values)]
        for column, values in zip(columns, table.columns, strict=True)
    ]
    if footer is not None and columns:
        texts = [TOTAL_LABEL] + [
            column.render([footer[column.name]])[0] if column.name in footer else ""
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
    if len(table) == 0 and note_empty:
        lines.append("(no rows)")
    return "".join(f"{text}\n" for text in lines)


# --- CSV and JSON ---------------------------------------------------------------------------


def _iso_texts(values: Sequence[Any]) -> list[str | None]:
    """Timestamps as ISO 8601 in UTC (``2026-06-01T00:00:00+00:00``, microseconds when any
    has them); unknown ones None."""
    if any(stamp is not None and stamp.microsecond != 0 for stamp in values):
        return _each_once(values, lambda stamp: stamp.isoformat(timespec="microseconds"), None)
    return _each_once(values, lambda stamp: stamp.isoformat(timespec="seconds"), None)


def _written_values(column: Column) -> Sequence[Any]:
    """A column's values as JSON (and a lone CSV column) writes them: timestamps as ISO 8601
    text."""
    return _iso_texts(column.values) if column.kind == "time" else column.values


def format_csv(table: ReportTable) -> str:
    """CSV with a header row of column names; full precision; ISO 8601 UTC timestamps; an
    unknown value is an empty field. No total row.

    The fields are those of the ``csv`` module (quoted only where they must be, reals as
    ``repr`` writes them), written a column at a time: 36,500 rows by 11 columns take a
    third of the time the module takes.

    :param table: the report's rows.
    """
    if len(table.columns) < 2:  # the module writes a lone empty field as ""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(table.names)
        writer.writerows(zip(*(_written_values(column) for column in table.columns), strict=True))
        return text.getvalue()
    header = ",".join(map(_csv_field, table.names))
    lines = map(",".join, zip(*(_csv_fields(column) for column in table.columns), strict=True))
    return "\n".join((header, *lines)) + "\n"


def _csv_fields(column: Column) -> list[str]:
    """A column's CSV fields: ``repr`` of a real, ``str`` of an integer or boolean, ISO 8601
    of a timestamp, text quoted where it must be; an empty field where unknown."""
    values = column.values
    if column.kind == "time":
        return [text or "" for text in _iso_texts(values)]
    if column.kind == "float":
        if None in values:
            return ["" if value is None else repr(value) for value in values]
        return list(map(float.__repr__, values))
    if column.kind in ("int", "bool"):
        return list(map(str, values))
    if column.kind == "text":
        return _each_once(values, _csv_field, "")
    return ["" if value is None else _csv_field(value) for value in values]


def _csv_field(value: object) -> str:
    """One field as the ``csv`` module writes it (minimal quoting, ``\\n`` line ends)."""
    text = repr(value) if isinstance(value, float) else str(value)
    if "," in text or '"' in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _json_default(value: object) -> object:
    """What the JSON encoder cannot write: nothing a report holds."""
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as JSON")


def format_json(table: ReportTable, indent: int | None = None, ascii_only: bool = False) -> str:
    """A JSON list of records keyed by column name, one record per line; ISO 8601 UTC
    timestamps; an unknown value is ``null``. No total row.

    :param table: the report's rows.
    :param indent: indent every key of every record by this many spaces per level instead
        (``json.dumps``'s layout); ``None`` for one record per line.
    :param ascii_only: escape every character beyond ASCII (``\\u00e9``).
    """
    names = table.names
    columns = [_written_values(column) for column in table.columns]
    records = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if indent is not None:
        return _json_text(records, indent, ascii_only) + "\n"
    if len(table) == 0:
        return "[]\n"
    lines = (_json_text(record, None, ascii_only) for record in records)
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def _json_text(value: object, indent: int | None, ascii_only: bool) -> str:
    return json.dumps(
        value, default=_json_default, allow_nan=False, ensure_ascii=ascii_only, indent=indent
    )


_TEXT_FORMATTERS: dict[str, Callable[[ReportTable, Totals | None], str]] = {
    "table": format_table,
    "csv": lambda table, _totals: format_csv(table),
    "json": lambda table, _totals: format_json(table),
}


def render_text(table: ReportTable, fmt: ReportFormat, totals: Totals | None = None) -> str:
    """``table`` as ``table``, ``csv`` or ``json`` text, every line ending in a newline.

    :param table: the report's rows.
    :param fmt: one of ``TEXT_FORMATS``.
    :param totals: the table's ``TOTAL`` row (ignored by CSV and JSON).
    """
    try:
        formatter = _TEXT_FORMATTERS[fmt]
    except KeyError:
        raise InputError(
            f"--format {fmt}: not a text format; choose one of {', '.join(TEXT_FORMATS)}"
        ) from None
    return formatter(table, totals)
