"""A synthetic workload: jobs drawn from seeded distributions, and the ``--workload`` option.

Its defaults come from the H200 measurements of ``docs/measured-data.md``; equal parameters
and seed give equal tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from gateway.errors import InputError
from gateway.evaluation.input_csv import FloatArray
from gateway.evaluation.input_jobs import JobsTable
from gateway.evaluation.input_sites import SiteSpec
from gateway.settings_base import KeyProblem


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
