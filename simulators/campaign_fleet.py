"""The campaign's fleet: sites on the bundled real renewable traces, and their jobs.

:func:`load_fleet` reads a sites file and its traces (``data/traces/``, the readers of
:mod:`gateway.evaluation.input_sites` and :mod:`gateway.evaluation.input_traces`). Asked
for more sites than the file holds, it synthesises the rest from the file's sites: each copy
takes one bundled site's trace shifted by a whole number of hours and scales the site (GPUs,
IT cap and plant) by a seeded factor, so the weather stays real while the fleet grows.
:func:`generate_jobs` draws the training jobs: a batch running at the start and Poisson
arrivals, sized so that the fleet's GPUs are busy at ``utilisation`` on average (the workload
generator of the evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gateway.errors import InputError
from gateway.evaluation.input_sites import SiteSpec, load_sites
from gateway.evaluation.input_traces import load_traces
from gateway.evaluation.workload import WorkloadParams, generate_workload
from gateway.sites.records import JobSpec

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "traces"
DEFAULT_SITES = DATA_DIR / "default-sites.toml"
DEFAULT_TRACES = DATA_DIR / "default-traces.csv.gz"


@dataclass(frozen=True)
class CampaignSite:
    """One site of the campaign: its sizes and its renewable power series.

    renewable_kw: hourly power its plant can deliver, indexed by UTC hour start [kW]
    """

    spec: SiteSpec
    renewable_kw: pd.Series

    @property
    def site_id(self) -> str:
        return self.spec.id

    @property
    def facility_max_kw(self) -> float:
        """IT power cap times PUE [kW]."""
        return self.spec.it_power_max_kw * self.spec.pue


@dataclass(frozen=True)
class JobArrival:
    """A job that appears at ``at_s`` after the start [s] at the first site of
    ``site_order`` it fits."""

    at_s: float
    spec: JobSpec
    site_order: tuple[int, ...]


def load_fleet(
    n_sites: int,
    seed: int,
    sites_path: Path = DEFAULT_SITES,
    traces_path: Path = DEFAULT_TRACES,
) -> tuple[CampaignSite, ...]:
    """``n_sites`` sites: the file's first ones, then synthesised copies (see the module)."""
    if n_sites < 1:
        raise InputError(f"sites: need at least 1, got {n_sites}")
    specs = load_sites(sites_path)
    traces = load_traces(traces_path, specs)
    index = pd.date_range(
        traces.start_at, periods=traces.renewable_kw.shape[0], freq=pd.Timedelta(traces.step_s, "s")
    )
    out: list[CampaignSite] = []
    for spec in specs[:n_sites]:
        out.append(CampaignSite(spec, pd.Series(traces.site_kw(spec.id), index=index)))
    rng = np.random.default_rng(seed)
    for number in range(len(out), n_sites):
        base = specs[number % len(specs)]
        scale = float(rng.uniform(0.6, 1.6))
        shift_h = int(rng.integers(-3, 4))
        gpus = max(8, round(base.gpus_total * scale))
        spec = SiteSpec(
            id=f"{base.id}-{number:03d}",
            gpus_total=gpus,
            it_power_max_kw=round(base.it_power_max_kw * gpus / base.gpus_total, 2),
            pue=base.pue,
            wan_bandwidth_gbps=base.wan_bandwidth_gbps,
        )
        column = np.roll(traces.site_kw(base.id), shift_h) * (gpus / base.gpus_total)
        out.append(CampaignSite(spec, pd.Series(column, index=index)))
    return tuple(out)


def _mean_work_gpu_h(params: WorkloadParams) -> float:
    """Mean of the log-uniform work distribution [GPU h]."""
    low, high = params.work_gpu_h_min, params.work_gpu_h_max
    return low if high == low else (high - low) / math.log(high / low)


def generate_jobs(
    seed: int,
    sites: Sequence[CampaignSite],
    start_at: datetime,
    span_s: float,
    utilisation: float = 0.6,
) -> tuple[JobArrival, ...]:
    """Jobs for ``span_s`` [s]: a batch at 0 s (what ran before the campaign) and arrivals.

    utilisation: mean share of the fleet's GPUs the jobs ask for [-]. The arrival rate is
    ``utilisation x GPUs / mean work``, since a job holds its GPUs for work / GPUs hours.
    """
    if not 0 < utilisation <= 1:
        raise InputError(f"utilisation must be in (0, 1], got {utilisation}")
    specs = [s.spec for s in sites]
    base = WorkloadParams(seed=seed, gpus_choices=(1, 2, 4, 8), work_gpu_h_max=120.0)
    gpus_total = sum(s.gpus_total for s in specs)
    rate_per_h = utilisation * gpus_total / _mean_work_gpu_h(base)
    params = WorkloadParams(
        rate_per_h=rate_per_h,
        gpus_choices=base.gpus_choices,
        work_gpu_h_max=base.work_gpu_h_max,
        seed=seed,
    )
    # Jobs submitted over the mean job length before the start are running at the start.
    before_s = 3600.0 * _mean_work_gpu_h(base) / 2.5
    initial = generate_workload(params, specs, start_at, before_s, seed=seed)
    arriving = generate_workload(params, specs, start_at, span_s, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    out: list[JobArrival] = []
    for prefix, table, at_zero in (("init", initial, True), ("job", arriving, False)):
        for i, job_id in enumerate(table.job_ids):
            order = tuple(int(k) for k in rng.permutation(len(specs)))
            out.append(
                JobArrival(
                    at_s=0.0 if at_zero else float(table.submit_s[i]),
                    spec=JobSpec(
                        job_id=f"{prefix}-{job_id.removeprefix('job-')}",
                        gpus=int(table.gpus[i]),
                        power_kw=round(float(table.power_kw[i]), 3),
                        checkpoint_gb=round(float(table.checkpoint_gb[i]), 2),
                        work_remaining_gpu_h=round(float(table.work_gpu_h[i]), 2),
                        migratable=bool(table.migratable[i]),
                    ),
                    site_order=order,
                )
            )
    return tuple(sorted(out, key=lambda j: (j.at_s, j.spec.job_id)))
