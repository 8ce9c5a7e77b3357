"""The evaluation's renewable traces (wide CSV): power per site on a regular time grid.

:func:`load_traces` reads the bundled ``data/traces/*-traces.csv.gz`` and users' own files
(``docs/inputs.md``); :func:`resample` puts them on the simulation's step. CSV rules (line
numbers, timestamps with a UTC offset) are those of :mod:`gateway.evaluation.input_csv`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from gateway.errors import InputError
from gateway.evaluation.input_csv import (
    CsvTable,
    FloatArray,
    number_column,
    read_csv_table,
    timestamp_column,
)
from gateway.evaluation.input_sites import SiteSpec

TIMESTAMP_COLUMN = "timestamp"
"""The first column of a traces file: the instant of each row."""


@dataclass(frozen=True, eq=False)
class Traces:
    """Renewable power per site on a regular time grid.

    start_at: the first sample's instant (aware, UTC); step_s: spacing of the samples [s];
    site_ids: the column order; renewable_kw: power the site's plant can deliver, shape
    (steps, sites), read-only [kW]. Sample ``k`` is at ``start_at + k * step_s``.
    """

    start_at: datetime
    step_s: float
    site_ids: tuple[str, ...]
    renewable_kw: FloatArray

    def __post_init__(self) -> None:
        if self.start_at.tzinfo is None:
            raise ValueError("start_at must be timezone-aware")
        if not self.step_s > 0:
            raise ValueError(f"step_s must be > 0, got {self.step_s}")
        values = np.array(self.renewable_kw, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.site_ids) or values.shape[0] < 2:
            raise ValueError(
                f"renewable_kw must have shape (>= 2, {len(self.site_ids)}), got {values.shape}"
            )
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("renewable_kw must be finite and >= 0")
        values.setflags(write=False)
        object.__setattr__(self, "start_at", self.start_at.astimezone(UTC))
        object.__setattr__(self, "renewable_kw", values)

    @property
    def timestamps_s(self) -> FloatArray:
        """Each sample's time since ``start_at`` [s]."""
        return np.arange(self.renewable_kw.shape[0], dtype=np.float64) * self.step_s

    def site_kw(self, site_id: str) -> FloatArray:
        """One site's column [kW]."""
        return self.renewable_kw[:, self.site_ids.index(site_id)]


def load_traces(path: Path | str, sites: Sequence[SiteSpec]) -> Traces:
    """Read a wide CSV of renewable power, one column per site, in the order of ``sites``.

    First column ``timestamp`` (ISO 8601 with a UTC offset, strictly increasing, a regular
    step, at least two rows), then one column per site id holding the power its plant can
    deliver [kW] (finite, >= 0). Every site needs a column and every column a site. The file
    is read as gzip when its name ends in ``.gz``.
    """
    file = Path(path)
    table = read_csv_table(file)
    if TIMESTAMP_COLUMN not in table.header:
        raise InputError(
            f"{file}: line 1: no {TIMESTAMP_COLUMN!r} column (header: {', '.join(table.header)})"
        )
    if table.header[0] != TIMESTAMP_COLUMN:
        position = table.header.index(TIMESTAMP_COLUMN) + 1
        raise InputError(
            f"{file}: line 1: {TIMESTAMP_COLUMN!r} must be the first column (it is column "
            f"{position})"
        )
    site_ids = [s.id for s in sites]
    for name in table.header[1:]:
        if name not in site_ids:
            raise InputError(
                f"{file}: line 1, column {name!r}: unknown site (the sites are {site_ids})"
            )
    for site_id in site_ids:
        if site_id not in table.header:
            raise InputError(
                f"site {site_id!r} has no column in {file} (header: {', '.join(table.header)})"
            )
    if len(table.lines) < 2:
        raise InputError(f"{file}: {len(table.lines)} data rows, expected at least 2")
    times = timestamp_column(table, TIMESTAMP_COLUMN)
    step = _regular_step(table, times)
    columns = [number_column(table, site_id, "kW", positive=False) for site_id in site_ids]
    return Traces(
        start_at=times[0],
        step_s=step / timedelta(seconds=1),
        site_ids=tuple(site_ids),
        renewable_kw=np.column_stack(columns),
    )


def _regular_step(table: CsvTable, times: list[datetime]) -> timedelta:
    step = times[1] - times[0]
    for row in range(1, len(times)):
        delta = times[row] - times[row - 1]
        previous = table.lines[row - 1]
        if delta == timedelta(0):
            problem = f"duplicate timestamp (same instant as line {previous})"
        elif delta < timedelta(0):
            problem = f"timestamps not sorted: earlier than line {previous}"
        elif delta != step:
            problem = (
                f"irregular step: {delta.total_seconds():g} s after line {previous}, "
                f"expected {step.total_seconds():g} s as between the first two rows"
            )
        else:
            continue
        raise table.error(row, TIMESTAMP_COLUMN, problem)
    return step


def resample(traces: Traces, step_s: float) -> Traces:
    """The traces linearly interpolated onto a regular grid of ``step_s`` [s].

    Finer or coarser; the grid starts at ``start_at`` and ends at the last original sample or
    the grid point just before it. Coarser grids sample the interpolated line (no averaging).
    Raises ValueError when ``step_s`` is not > 0 or leaves fewer than two samples.
    """
    if not step_s > 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    rows = traces.renewable_kw.shape[0]
    span_s = (rows - 1) * traces.step_s
    count = math.floor(span_s / step_s + 1e-9) + 1
    if count < 2:
        raise ValueError(f"step_s {step_s:g} s leaves fewer than two samples in {span_s:g} s")
    position = np.arange(count, dtype=np.float64) * (step_s / traces.step_s)
    below = np.minimum(np.floor(position + 1e-9).astype(np.int64), rows - 2)
    weight = np.clip(position - below, 0.0, 1.0)[:, None]
    values = traces.renewable_kw
    resampled = (1.0 - weight) * values[below] + weight * values[below + 1]
    return Traces(traces.start_at, float(step_s), traces.site_ids, resampled)
