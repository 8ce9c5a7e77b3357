"""The evaluation's jobs file (CSV): training jobs as parallel arrays, sorted by submit time.

:class:`JobsTable` is also what the synthetic workload (:mod:`gateway.evaluation.workload`)
produces. ``docs/inputs.md`` documents the format; CSV rules (line numbers, timestamps with
a UTC offset) are those of :mod:`gateway.evaluation.input_csv`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import InputError
from gateway.evaluation.input_csv import (
    BoolArray,
    CsvTable,
    FloatArray,
    IntArray,
    iso_utc,
    number_column,
    read_csv_table,
    timestamp_column,
)
from gateway.evaluation.input_sites import SiteSpec
from gateway.settings_base import COUNT_MAX

JOB_COLUMNS: tuple[str, ...] = (
    "job_id",
    "submit_at",
    "gpus",
    "power_kw",
    "checkpoint_gb",
    "work_gpu_h",
    "site_id",
    "migratable",
)
"""The columns of a jobs file, in any order; ``site_id`` may be empty (unplaced)."""

GPUS_MAX = COUNT_MAX
"""The most GPUs a job may use (beyond it no site could hold it) [count]."""

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


@dataclass(frozen=True, eq=False)
class JobsTable:
    """Training jobs as parallel read-only arrays, sorted by submit time.

    job_ids: ids; submit_s: submit time after the trace start [s]; gpus: GPUs used;
    power_kw: IT power while training [kW]; checkpoint_gb: full-state checkpoint [GB];
    work_gpu_h: work to do [GPU h]; site_index: index into the evaluation's sites where the
    job is pinned to start, -1 when the policy places it; migratable: may the job move.
    """

    job_ids: tuple[str, ...]
    submit_s: FloatArray
    gpus: IntArray
    power_kw: FloatArray
    checkpoint_gb: FloatArray
    work_gpu_h: FloatArray
    site_index: IntArray
    migratable: BoolArray

    def __post_init__(self) -> None:
        n = len(self.job_ids)
        dtypes: dict[str, type[Any]] = {
            "submit_s": np.float64,
            "gpus": np.int64,
            "power_kw": np.float64,
            "checkpoint_gb": np.float64,
            "work_gpu_h": np.float64,
            "site_index": np.int64,
            "migratable": np.bool_,
        }
        for name, dtype in dtypes.items():
            array = np.array(getattr(self, name), dtype=dtype)
            if array.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        if n and np.any(np.diff(self.submit_s) < 0):
            raise ValueError("jobs must be sorted by submit_s")

    def __len__(self) -> int:
        return len(self.job_ids)


def load_jobs(path: Path | str, sites: Sequence[SiteSpec], start_at: datetime) -> JobsTable:
    """Read a CSV of jobs (gzipped when its name ends in ``.gz``), sorted by submit time.

    Columns :data:`JOB_COLUMNS` in any order, no others: ``job_id`` (unique), ``submit_at``
    (ISO 8601 with offset, not before ``start_at``), ``gpus`` (whole number > 0),
    ``power_kw`` (> 0) [kW], ``checkpoint_gb`` (>= 0) [GB], ``work_gpu_h`` (> 0) [GPU h],
    ``site_id`` (a site id, or empty to let the policy place the job) and ``migratable``
    (``true``/``false``/``1``/``0``). A job must fit its site (GPUs and IT power), or, when
    unplaced, at least one site. Jobs with equal submit times keep their file order.
    """
    if start_at.tzinfo is None:
        raise ValueError("start_at must be timezone-aware")
    file = Path(path)
    table = read_csv_table(file)
    for name in JOB_COLUMNS:
        if name not in table.header:
            raise InputError(
                f"{file}: line 1: missing column {name!r} (expected {', '.join(JOB_COLUMNS)})"
            )
    for name in table.header:
        if name not in JOB_COLUMNS:
            raise InputError(f"{file}: line 1, column {name!r}: unknown column")
    if not table.lines:
        raise InputError(f"{file}: no job rows")
    job_ids = table.columns["job_id"]
    first_line: dict[str, int] = {}
    for row, job_id in enumerate(job_ids):
        if not job_id:
            raise table.error(row, "job_id", "empty value")
        if job_id in first_line:
            raise table.error(
                row, "job_id", f"duplicate job_id (first on line {first_line[job_id]})"
            )
        first_line[job_id] = table.lines[row]
    start_utc = start_at.astimezone(UTC)
    submit_s = np.empty(len(job_ids), dtype=np.float64)
    for row, at in enumerate(timestamp_column(table, "submit_at")):
        if at < start_utc:
            raise table.error(
                row, "submit_at", f"{iso_utc(at)} is before the trace start {iso_utc(start_utc)}"
            )
        submit_s[row] = (at - start_utc).total_seconds()
    gpus = _whole_numbers(table, "gpus")
    power_kw = number_column(table, "power_kw", "kW", positive=True)
    checkpoint_gb = number_column(table, "checkpoint_gb", "GB", positive=False)
    work_gpu_h = number_column(table, "work_gpu_h", "GPU h", positive=True)
    site_index = _site_indices(table, sites)
    migratable = _booleans(table, "migratable")
    _check_fit(table, sites, gpus, power_kw, site_index)
    order = np.argsort(submit_s, kind="stable")
    return JobsTable(
        job_ids=tuple(job_ids[i] for i in order),
        submit_s=submit_s[order],
        gpus=gpus[order],
        power_kw=power_kw[order],
        checkpoint_gb=checkpoint_gb[order],
        work_gpu_h=work_gpu_h[order],
        site_index=site_index[order],
        migratable=migratable[order],
    )


def _whole_numbers(table: CsvTable, column: str) -> IntArray:
    out = np.empty(len(table.lines), dtype=np.int64)
    for row, text in enumerate(table.columns[column]):
        try:
            value = int(text)
        except ValueError:
            raise table.error(row, column, f"not a whole number ({text!r})") from None
        if not 0 < value <= GPUS_MAX:
            raise table.error(row, column, f"must be > 0 and <= {GPUS_MAX} (got {value})")
        out[row] = value
    return out


def _site_indices(table: CsvTable, sites: Sequence[SiteSpec]) -> IntArray:
    index = {site.id: i for i, site in enumerate(sites)}
    out = np.empty(len(table.lines), dtype=np.int64)
    for row, text in enumerate(table.columns["site_id"]):
        if not text:
            out[row] = -1
        elif text in index:
            out[row] = index[text]
        else:
            raise table.error(
                row, "site_id", f"unknown site {text!r} (the sites are {list(index)})"
            )
    return out


def _booleans(table: CsvTable, column: str) -> BoolArray:
    out = np.empty(len(table.lines), dtype=np.bool_)
    for row, text in enumerate(table.columns[column]):
        word = text.lower()
        if word not in _TRUE | _FALSE:
            raise table.error(row, column, f"expected true, false, 1 or 0 (got {text!r})")
        out[row] = word in _TRUE
    return out


def _check_fit(
    table: CsvTable,
    sites: Sequence[SiteSpec],
    gpus: IntArray,
    power_kw: FloatArray,
    site_index: IntArray,
) -> None:
    gpus_total = np.array([s.gpus_total for s in sites], dtype=np.int64)
    power_max_kw = np.array([s.it_power_max_kw for s in sites], dtype=np.float64)
    for row in range(len(gpus)):
        fits = (gpus[row] <= gpus_total) & (power_kw[row] <= power_max_kw)
        pinned = int(site_index[row])
        if pinned >= 0 and not fits[pinned]:
            site = sites[pinned]
            raise table.error(
                row,
                "site_id",
                f"the job ({gpus[row]} GPUs, {power_kw[row]:g} kW) does not fit site "
                f"{site.id!r} ({site.gpus_total} GPUs, {site.it_power_max_kw:g} kW)",
            )
        if pinned < 0 and not fits.any():
            raise table.error(
                row,
                "gpus",
                f"the job ({gpus[row]} GPUs, {power_kw[row]:g} kW) fits no site",
            )
