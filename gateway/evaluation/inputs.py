"""The evaluation's input formats: sites (TOML), renewable traces and jobs (CSV).

The same readers serve the bundled files in ``data/traces/`` and users' own;
``docs/inputs.md`` documents each format with an example. Every problem raises
:class:`~gateway.errors.InputError` whose message names the file, where in it and what is
wrong. Positions in CSV files are *line numbers*: the header is line 1, the first data row
line 2 (blank lines are skipped but counted).

Timestamps are ISO 8601 with an explicit UTC offset (``2001-06-21T12:00:00Z`` or
``...+00:00``); any offset is accepted and converted to UTC, a timestamp without one is
rejected, since its instant is ambiguous.

The synthetic workload (:class:`WorkloadParams`, :func:`generate_workload`) draws jobs from
seeded distributions; its defaults come from the H200 measurements of
``docs/measured-data.md``.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import numpy as np
import numpy.typing as npt
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from gateway.errors import InputError
from gateway.settings import COUNT_MAX, KeyProblem, SiteSettings, parse_model, read_toml

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TIMESTAMP_COLUMN = "timestamp"
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


# --- sites -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteSpec:
    """One site as the evaluation sees it.

    id: the site id; gpus_total: GPUs installed; it_power_max_kw: IT power cap [kW];
    pue: facility power / IT power [-]; wan_bandwidth_gbps: WAN bandwidth [Gbit/s].
    """

    id: str
    gpus_total: int
    it_power_max_kw: float
    pue: float
    wan_bandwidth_gbps: float


class _EvaluationSite(SiteSettings):
    """The daemon's ``[[site]]`` with its daemon-only keys made optional."""

    controller_url: AnyHttpUrl | None = None  # type: ignore[assignment]
    controller_token: Annotated[str, Field(min_length=8)] | None = None  # type: ignore[assignment]


class _SitesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Annotated[list[_EvaluationSite], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_ids(self) -> _SitesFile:
        ids = [s.id for s in self.site]
        for i, site_id in enumerate(ids):
            if ids.index(site_id) != i:
                raise KeyProblem(("site", i, "id"), f"duplicate site id {site_id!r}")
        return self


def load_sites(path: Path | str) -> tuple[SiteSpec, ...]:
    """Read a TOML file of ``[[site]]`` tables, in file order.

    Keys as in the daemon's ``[[site]]``: ``id``, ``gpus_total``, ``it_power_max_kw``,
    ``wan_bandwidth_gbps`` required, ``pue`` (default 1.2) optional, and the daemon-only
    ``controller_url``, ``controller_token``, ``vtn`` and ``resource_id`` accepted and
    ignored. Unknown keys, other top-level keys and duplicate ids are rejected.
    """
    data = read_toml(path, "sites file", InputError)
    parsed = parse_model(_SitesFile, data, str(path), "docs/inputs.md", InputError)
    return tuple(
        SiteSpec(
            id=s.id,
            gpus_total=s.gpus_total,
            it_power_max_kw=s.it_power_max_kw,
            pue=s.pue,
            wan_bandwidth_gbps=s.wan_bandwidth_gbps,
        )
        for s in parsed.site
    )


# --- CSV reading shared by traces and jobs ----------------------------------------------


@dataclass(frozen=True)
class _Table:
    file: Path
    header: tuple[str, ...]
    lines: tuple[int, ...]
    """The line number of each data row."""
    columns: dict[str, list[str]]

    def error(self, row: int, column: str, problem: str) -> InputError:
        return InputError(f"{self.file}: line {self.lines[row]}, column {column!r}: {problem}")


def _open_text(file: Path) -> TextIO:
    """A text stream of the file, decompressed when its name ends in ``.gz``; BOM dropped."""
    if file.name.lower().endswith(".gz"):
        return gzip.open(file, "rt", encoding="utf-8-sig", newline="")
    return file.open(encoding="utf-8-sig", newline="")


def _read_table(file: Path) -> _Table:
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
    return _Table(file, tuple(header), tuple(lines), columns)


def _parse_at(text: str) -> datetime:
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


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _timestamps(table: _Table, column: str) -> list[datetime]:
    out: list[datetime] = []
    for row, text in enumerate(table.columns[column]):
        try:
            out.append(_parse_at(text))
        except ValueError as exc:
            raise table.error(row, column, str(exc)) from None
    return out


def _numbers(table: _Table, column: str, unit: str, *, positive: bool) -> FloatArray:
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


# --- renewable traces ---------------------------------------------------------------------


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
    table = _read_table(file)
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
    times = _timestamps(table, TIMESTAMP_COLUMN)
    step = _regular_step(table, times)
    columns = [_numbers(table, site_id, "kW", positive=False) for site_id in site_ids]
    return Traces(
        start_at=times[0],
        step_s=step / timedelta(seconds=1),
        site_ids=tuple(site_ids),
        renewable_kw=np.column_stack(columns),
    )


def _regular_step(table: _Table, times: list[datetime]) -> timedelta:
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


# --- jobs ---------------------------------------------------------------------------------


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
    table = _read_table(file)
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
    for row, at in enumerate(_timestamps(table, "submit_at")):
        if at < start_utc:
            raise table.error(
                row, "submit_at", f"{_iso(at)} is before the trace start {_iso(start_utc)}"
            )
        submit_s[row] = (at - start_utc).total_seconds()
    gpus = _whole_numbers(table, "gpus")
    power_kw = _numbers(table, "power_kw", "kW", positive=True)
    checkpoint_gb = _numbers(table, "checkpoint_gb", "GB", positive=False)
    work_gpu_h = _numbers(table, "work_gpu_h", "GPU h", positive=True)
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


def _whole_numbers(table: _Table, column: str) -> IntArray:
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


def _site_indices(table: _Table, sites: Sequence[SiteSpec]) -> IntArray:
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


def _booleans(table: _Table, column: str) -> BoolArray:
    out = np.empty(len(table.lines), dtype=np.bool_)
    for row, text in enumerate(table.columns[column]):
        word = text.lower()
        if word not in _TRUE | _FALSE:
            raise table.error(row, column, f"expected true, false, 1 or 0 (got {text!r})")
        out[row] = word in _TRUE
    return out


def _check_fit(
    table: _Table,
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


# --- synthetic workload -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadParams:
    """How :func:`generate_workload` draws jobs; every field can be set with ``--workload``.

    Defaults: H200 measurements (``docs/measured-data.md``) for power and checkpoint sizes.
    """

    rate_per_h: float = 2.0
    """Mean job arrivals per hour of a Poisson process [1/h]."""
    gpus_choices: tuple[int, ...] = (1, 2, 4, 8)
    """GPUs a job may use [count]."""
    gpus_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    """Relative frequency of each of ``gpus_choices`` [-] (normalised to sum to 1)."""
    power_per_gpu_kw_min: float = 0.58
    """Lowest training power per GPU, uniform up to the maximum [kW] (H200: 0.58)."""
    power_per_gpu_kw_max: float = 0.69
    """Highest training power per GPU [kW] (H200 at 700 W cap: about 0.69)."""
    checkpoint_gb_min: float = 0.96
    """Smallest checkpoint, log-uniform up to the maximum [GB] (12 B/param x 80 M params)."""
    checkpoint_gb_max: float = 144.0
    """Largest checkpoint [GB] (12 bytes per parameter x 12 B parameters)."""
    work_gpu_h_min: float = 1.0
    """Least work of a job, log-uniform up to the maximum [GPU h]."""
    work_gpu_h_max: float = 200.0
    """Most work of a job [GPU h]."""
    migratable_share: float = 0.9
    """Share of jobs that may migrate [-]."""
    initial_site: Literal["none", "random"] = "none"
    """``none``: every job unplaced (site_index -1), the policy places it; ``random``: pinned
    to a site drawn uniformly among those it fits (GPUs and IT power)."""
    seed: int = 0
    """Seed of the numpy Generator; equal seeds give equal tables."""

    def __post_init__(self) -> None:
        for key, ok, message in (
            ("rate_per_h", self.rate_per_h > 0, "must be > 0"),
            ("gpus_choices", len(self.gpus_choices) > 0, "needs at least one value"),
            ("gpus_choices", all(g > 0 for g in self.gpus_choices), "every value must be > 0"),
            (
                "gpus_weights",
                len(self.gpus_weights) == len(self.gpus_choices),
                f"needs one weight per value of gpus_choices ({len(self.gpus_choices)})",
            ),
            (
                "gpus_weights",
                all(w >= 0 and math.isfinite(w) for w in self.gpus_weights)
                and sum(self.gpus_weights) > 0,
                "weights must be >= 0 and not all 0",
            ),
            ("power_per_gpu_kw_min", self.power_per_gpu_kw_min > 0, "must be > 0"),
            (
                "power_per_gpu_kw_max",
                self.power_per_gpu_kw_max >= self.power_per_gpu_kw_min,
                "must be >= power_per_gpu_kw_min",
            ),
            ("checkpoint_gb_min", self.checkpoint_gb_min > 0, "must be > 0"),
            (
                "checkpoint_gb_max",
                self.checkpoint_gb_max >= self.checkpoint_gb_min,
                "must be >= checkpoint_gb_min",
            ),
            ("work_gpu_h_min", self.work_gpu_h_min > 0, "must be > 0"),
            (
                "work_gpu_h_max",
                self.work_gpu_h_max >= self.work_gpu_h_min,
                "must be >= work_gpu_h_min",
            ),
            ("migratable_share", 0 <= self.migratable_share <= 1, "must be between 0 and 1"),
            ("initial_site", self.initial_site in ("none", "random"), "must be none or random"),
            ("seed", self.seed >= 0, "must be >= 0"),
        ):
            if not ok:
                raise KeyProblem((key,), f"{message} (got {getattr(self, key)!r})")


def _floats_of(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(";"))


def _ints_of(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(";"))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_WORKLOAD_KEYS: dict[str, tuple[Callable[[str], Any], str]] = {
    "rate_per_h": (_finite, "a number"),
    "gpus_choices": (_ints_of, "whole numbers separated by ';', e.g. 1;2;4;8"),
    "gpus_weights": (_floats_of, "numbers separated by ';', e.g. 0.4;0.3;0.2;0.1"),
    "power_per_gpu_kw_min": (_finite, "a number"),
    "power_per_gpu_kw_max": (_finite, "a number"),
    "checkpoint_gb_min": (_finite, "a number"),
    "checkpoint_gb_max": (_finite, "a number"),
    "work_gpu_h_min": (_finite, "a number"),
    "work_gpu_h_max": (_finite, "a number"),
    "migratable_share": (_finite, "a number"),
    "initial_site": (str, "none or random"),
    "seed": (int, "a whole number"),
}
"""How each key of ``--workload`` is read: converter and what it expects."""


def parse_workload(text: str, source: str = "--workload") -> WorkloadParams:
    """Read ``key=value,key=value`` into :class:`WorkloadParams`; omitted keys keep defaults.

    Lists use ``;`` between values (``gpus_choices=1;2;4,gpus_weights=0.5;0.3;0.2``). Raises
    :class:`InputError` naming ``source`` and the bad key.
    """
    values: dict[str, Any] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep:
            raise InputError(f"{source}: {item!r}: expected key=value")
        if key not in _WORKLOAD_KEYS:
            raise InputError(
                f"{source}: {key}: unknown key (expected one of {list(_WORKLOAD_KEYS)})"
            )
        if key in values:
            raise InputError(f"{source}: {key}: given twice")
        convert, expected = _WORKLOAD_KEYS[key]
        try:
            values[key] = convert(raw)
        except ValueError:
            raise InputError(f"{source}: {key}: expected {expected} (got {raw!r})") from None
    try:
        return WorkloadParams(**values)
    except KeyProblem as exc:
        raise InputError(f"{source}: {exc.loc[0]}: {exc.message}") from exc


def generate_workload(
    params: WorkloadParams,
    sites: Sequence[SiteSpec],
    start_at: datetime,
    duration_s: float,
    seed: int | None = None,
) -> JobsTable:
    """Draw a synthetic workload arriving over ``[0, duration_s)`` after ``start_at``.

    params: the distributions; sites: where jobs may be pinned (``initial_site="random"``)
    and which job sizes can run at all; start_at: the traces' start (aware); duration_s: the
    span of arrivals [s]; seed: overrides ``params.seed``.

    A Poisson number of jobs with mean ``rate_per_h * duration_s / 3600`` arrive at uniform
    times (a Poisson process); GPUs from ``gpus_choices`` by ``gpus_weights``; power =
    GPUs x a per-GPU power uniform in its range; checkpoint size and work log-uniform in their
    ranges, independent of the job's GPUs; migratable with probability ``migratable_share``.
    Job ids are ``job-00000``, ``job-00001``, ... in submit order. Raises
    :class:`InputError` when a possible job size fits no site.
    """
    if start_at.tzinfo is None:
        raise ValueError("start_at must be timezone-aware")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if not sites:
        raise InputError("the workload needs at least one site")
    choices = np.array(params.gpus_choices, dtype=np.int64)
    weights = np.array(params.gpus_weights, dtype=np.float64)
    weights = weights / weights.sum()
    gpus_total = np.array([s.gpus_total for s in sites], dtype=np.int64)
    power_max_kw = np.array([s.it_power_max_kw for s in sites], dtype=np.float64)
    for g, w in zip(choices, weights, strict=True):
        need_kw = g * params.power_per_gpu_kw_max
        if w > 0 and not np.any((g <= gpus_total) & (need_kw <= power_max_kw)):
            raise InputError(
                f"workload: gpus_choices: a {g}-GPU job ({need_kw:g} kW at most) fits no site"
            )
    rng = np.random.default_rng(params.seed if seed is None else seed)
    count = int(rng.poisson(params.rate_per_h * duration_s / 3600.0))
    submit_s = np.sort(rng.uniform(0.0, duration_s, count))
    gpus = rng.choice(choices, size=count, p=weights)
    power_kw = gpus * rng.uniform(params.power_per_gpu_kw_min, params.power_per_gpu_kw_max, count)
    checkpoint_gb = _log_uniform(rng, params.checkpoint_gb_min, params.checkpoint_gb_max, count)
    work_gpu_h = _log_uniform(rng, params.work_gpu_h_min, params.work_gpu_h_max, count)
    migratable = rng.random(count) < params.migratable_share
    site_index = np.full(count, -1, dtype=np.int64)
    if params.initial_site == "random":
        fits = (gpus[:, None] <= gpus_total[None, :]) & (power_kw[:, None] <= power_max_kw)
        keys = np.where(fits, rng.random((count, len(sites))), -1.0)
        site_index = np.argmax(keys, axis=1).astype(np.int64)
    width = max(5, len(str(max(count - 1, 0))))
    return JobsTable(
        job_ids=tuple(f"job-{i:0{width}d}" for i in range(count)),
        submit_s=submit_s,
        gpus=gpus.astype(np.int64),
        power_kw=power_kw,
        checkpoint_gb=checkpoint_gb,
        work_gpu_h=work_gpu_h,
        site_index=site_index,
        migratable=migratable,
    )


def _log_uniform(rng: np.random.Generator, low: float, high: float, count: int) -> FloatArray:
    values: FloatArray = np.exp(rng.uniform(math.log(low), math.log(high), count))
    return values
