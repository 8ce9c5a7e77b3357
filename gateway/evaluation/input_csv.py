"""CSV reading shared by the evaluation's trace and job files: columns, line numbers, timestamps.

Every problem raises :class:`~gateway.errors.InputError` whose message names the file, where in
it and what is wrong. Positions are *line numbers*: the header is line 1, the first data row
line 2 (blank lines are skipped but counted). A file whose name ends in ``.gz`` is read as gzip.

Timestamps are ISO 8601 with an explicit UTC offset (``2001-06-21T12:00:00Z`` or
``...+00:00``); any offset is accepted and converted to UTC, a timestamp without one is
rejected, since its instant is ambiguous.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from gateway.errors import InputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read as columns of stripped strings, with the line number of each row."""

    file: Path
    header: tuple[str, ...]
    lines: tuple[int, ...]
    """The line number of each data row."""
    columns: dict[str, list[str]]

    def error(self, row: int, column: str, problem: str) -> InputError:
        """An :class:`InputError` naming the file, the row's line and the column."""
        return InputError(f"{self.file}: line {self.lines[row]}, column {column!r}: {problem}")


def _open_text(file: Path) -> TextIO:
    """A text stream of the file, decompressed when its name ends in ``.gz``; BOM dropped."""
    if file.name.lower().endswith(".gz"):
        return gzip.open(file, "rt", encoding="utf-8-sig", newline="")
    return file.open(encoding="utf-8-sig", newline="")


def read_csv_table(file: Path) -> CsvTable:
    """A CSV file (gzipped when its name ends in ``.gz``) as columns of stripped strings."""
    try:
        with _open_text(file) as stream:
            reader = csv.reader(stream)
            header: list[str] | None = None
            lines: list[int] = []
            rows: list[list[str]] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [cell.strip() for cell in row]
                    continue
                if len(row) != len(header):
                    raise InputError(
                        f"{file}: line {reader.line_num}: {len(row)} fields, "
                        f"expected {len(header)} as in the header"
                    )
                lines.append(reader.line_num)
                rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise InputError(f"{file}: cannot read the CSV file: {exc}") from exc
    if header is None:
        raise InputError(f"{file}: empty file, expected a header line")
    for i, name in enumerate(header):
        if not name:
            raise InputError(f"{file}: line 1: column {i + 1} has no name")
        if header.index(name) != i:
            raise InputError(f"{file}: line 1: column {name!r} appears twice")
    columns = {name: [row[i].strip() for row in rows] for i, name in enumerate(header)}
    return CsvTable(file, tuple(header), tuple(lines), columns)


def parse_utc_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with an offset, in UTC; ValueError says what is wrong."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 timestamp ({text!r}); write e.g. 2001-06-21T12:00:00Z"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset; write e.g. {text}Z")
    return at.astimezone(UTC)


def iso_utc(at: datetime) -> str:
    """``at`` in UTC as ISO 8601 with a ``Z``."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def timestamp_column(table: CsvTable, column: str) -> list[datetime]:
    """A column of timestamps with an offset, in UTC; a bad one names its line."""
    out: list[datetime] = []
    for row, text in enumerate(table.columns[column]):
        try:
            out.append(parse_utc_timestamp(text))
        except ValueError as exc:
            raise table.error(row, column, str(exc)) from None
    return out


def number_column(table: CsvTable, column: str, unit: str, *, positive: bool) -> FloatArray:
    """A column of finite numbers >= 0 (> 0 when ``positive``)."""
    texts = table.columns[column]
    try:
        values = np.array(texts, dtype=np.float64)
    except ValueError:
        for row, text in enumerate(texts):
            try:
                float(text)
            except ValueError:
                problem = "empty value" if not text else f"not a number ({text!r})"
                raise table.error(row, column, problem) from None
        raise  # unreachable: numpy and float() reject the same strings
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise table.error(row, column, f"not a finite number ({texts[row]!r})")
    low = (values <= 0) if positive else (values < 0)
    bad = np.flatnonzero(low)
    if bad.size:
        row = int(bad[0])
        expected = "> 0" if positive else ">= 0"
        raise table.error(row, column, f"must be {expected} (got {texts[row]} {unit})")
    return values
