"""Grid carbon intensity: read from a CSV file, stored in ``grid_carbon_intensity``.

The file has a header row and one interval per line::

    start_at,end_at,g_co2_per_kwh,site_id
    2026-06-01T00:00:00Z,2026-06-01T01:00:00Z,412.5,
    2026-06-01T00:00:00Z,2026-06-01T01:00:00Z,118.0,site-a

``start_at`` and ``end_at`` are ISO 8601 instants with a time zone, ``g_co2_per_kwh`` the
emissions of one kWh drawn from the grid over [start_at, end_at) [g CO2/kWh], ``site_id``
(optional column, may be empty) the site it is for; empty means every site without an
intensity of its own. Intervals of one scope must not overlap. Loading replaces the stored
intervals of each scope that overlap the file's span for that scope, then recomputes the
rollups of the days the file covers, so emissions of past ledger rows appear at once. Every
problem is an :class:`InputError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, and_, delete, insert, text

from gateway.errors import InputError
from gateway.reports.rollups import rebuild_rollups
from models import CarbonIntensity

REQUIRED_COLUMNS = ("start_at", "end_at", "g_co2_per_kwh")
OPTIONAL_COLUMNS = ("site_id",)
_EXAMPLE_AT = "2026-06-01T00:00:00Z"


@dataclass(frozen=True)
class IntensityInterval:
    """Grid carbon intensity over [start_at, end_at) for one site or (None) every site."""

    site_id: str | None
    start_at: datetime
    """[aware UTC]"""
    end_at: datetime
    """[aware UTC]"""
    g_co2_per_kwh: float
    """[g CO2/kWh]"""
    line: int
    """Line of the file it came from (the header is line 1)."""


@dataclass(frozen=True)
class LoadResult:
    intervals: int
    """Intervals stored [count]."""
    replaced: int
    """Stored intervals removed because the file's span covered them [count]."""
    rebuilt_since: datetime
    rebuilt_until: datetime
    """The UTC days whose rollups were recomputed: [rebuilt_since, rebuilt_until)."""


def read_intensity_csv(
    path: Path, known_sites: Collection[str] | None = None
) -> list[IntensityInterval]:
    """The intervals of a carbon-intensity CSV file, checked.

    known_sites: the site ids a ``site_id`` may name; None accepts any.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            intervals = _parse(path, csv.reader(handle), known_sites)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise InputError(f"{path}: not CSV: {exc}") from exc
    if not intervals:
        raise InputError(f"{path}: no intervals after the header")
    _check_overlaps(path, intervals)
    return intervals


def _parse(
    path: Path, reader: Iterator[list[str]], known_sites: Collection[str] | None
) -> list[IntensityInterval]:
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise InputError(
            f"{path}:1: expected a header row with the columns "
            f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
        )
    names = [cell.strip() for cell in header]
    for name in names:
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise InputError(
                f"{path}:1: column {name!r}: unknown column; expected "
                f"{', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
            )
        if names.count(name) > 1:
            raise InputError(f"{path}:1: column {name!r}: appears twice")
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise InputError(f"{path}:1: column {name!r}: missing from the header")
    out = []
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        if len(cells) != len(names):
            raise InputError(
                f"{path}:{line}: expected {len(names)} fields ({', '.join(names)}), "
                f"got {len(cells)}"
            )
        record = dict(zip(names, (cell.strip() for cell in cells), strict=True))
        out.append(_interval(path, line, record, known_sites))
    return out


def _interval(
    path: Path, line: int, record: dict[str, str], known_sites: Collection[str] | None
) -> IntensityInterval:
    start_at = _instant(path, line, "start_at", record["start_at"])
    end_at = _instant(path, line, "end_at", record["end_at"])
    if end_at <= start_at:
        raise InputError(
            f"{path}:{line}: column end_at: {record['end_at']} is not after start_at "
            f"{record['start_at']}"
        )
    text = record["g_co2_per_kwh"]
    try:
        value = float(text)
    except ValueError as exc:
        raise InputError(
            f"{path}:{line}: column g_co2_per_kwh: {text!r} is not a number [g CO2/kWh]"
        ) from exc
    if not math.isfinite(value) or value < 0:
        raise InputError(
            f"{path}:{line}: column g_co2_per_kwh: {text} must be a finite number >= 0 [g CO2/kWh]"
        )
    site_id = record.get("site_id") or None
    if site_id is not None and known_sites is not None and site_id not in known_sites:
        raise InputError(
            f"{path}:{line}: column site_id: unknown site {site_id!r}; expected one of "
            f"{sorted(known_sites)} or empty for every site"
        )
    return IntensityInterval(site_id, start_at, end_at, value, line)


def _instant(path: Path, line: int, name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(
            f"{path}:{line}: column {name}: {text!r} is not an ISO 8601 time such as {_EXAMPLE_AT}"
        ) from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(
            f"{path}:{line}: column {name}: {text} has no time zone; write it as "
            f"{_EXAMPLE_AT} (UTC) or with an offset"
        )
    return value


def _check_overlaps(path: Path, intervals: Sequence[IntensityInterval]) -> None:
    by_scope: dict[str | None, list[IntensityInterval]] = {}
    for interval in intervals:
        by_scope.setdefault(interval.site_id, []).append(interval)
    for scope, items in by_scope.items():
        items.sort(key=lambda i: i.start_at)
        for earlier, later in itertools.pairwise(items):
            if later.start_at < earlier.end_at:
                where = f"site {scope}" if scope is not None else "every site"
                raise InputError(
                    f"{path}:{later.line}: column start_at: the interval overlaps line "
                    f"{earlier.line} (both for {where}); intervals of one scope must not overlap"
                )


def store_intensity(
    conn: Connection, intervals: Sequence[IntensityInterval], source: str, now: datetime
) -> LoadResult:
    """Store ``intervals`` (checked by :func:`read_intensity_csv`), replacing the stored
    intervals of each scope that overlap the new ones' span, and recompute the rollups of
    the days they cover. Runs in the caller's transaction."""
    if not intervals:
        raise InputError(f"{source}: no intervals to store")
    replaced = 0
    scopes = {i.site_id for i in intervals}
    for scope in scopes:
        mine = [i for i in intervals if i.site_id == scope]
        span_start = min(i.start_at for i in mine)
        span_end = max(i.end_at for i in mine)
        same_scope = (
            CarbonIntensity.site_id.is_(None) if scope is None else CarbonIntensity.site_id == scope
        )
        result = conn.execute(
            delete(CarbonIntensity).where(
                and_(
                    same_scope,
                    CarbonIntensity.start_at < span_end,
                    CarbonIntensity.end_at > span_start,
                )
            )
        )
        replaced += result.rowcount
    conn.execute(
        insert(CarbonIntensity),
        [
            {
                "site_id": i.site_id,
                "start_at": i.start_at,
                "end_at": i.end_at,
                "g_co2_per_kwh": i.g_co2_per_kwh,
                "source": source[:512],
                "loaded_at": now,
            }
            for i in intervals
        ],
    )
    # fresh statistics, so that the rebuild looks intervals up by index, not by scanning
    conn.execute(text(f"ANALYZE {CarbonIntensity.__tablename__}"))
    since, until = rebuild_rollups(
        conn, min(i.start_at for i in intervals), max(i.end_at for i in intervals)
    )
    return LoadResult(len(intervals), replaced, since, until)
