"""``dr-gateway evaluate``: every policy over the same trace, and the bounds, as one document."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.evaluation import fluid
from gateway.evaluation.engine import EvaluationParams, RunResult, simulate
from gateway.evaluation.input_jobs import JobsTable
from gateway.evaluation.input_sites import SiteSpec
from gateway.evaluation.input_traces import Traces

TABLE_METRICS: tuple[tuple[str, str, str], ...] = (
    # key, column header, format
    ("grid_kwh", "grid [kWh]", "{:,.0f}"),
    ("renewable_used_kwh", "renewable used [kWh]", "{:,.0f}"),
    ("renewable_share", "share [%]", "pct"),
    ("curtailed_kwh", "curtailed [kWh]", "{:,.0f}"),
    ("migrations", "migrations", "{:,.0f}"),
    ("migration_downtime_s", "downtime [s]", "{:,.0f}"),
    ("migration_kwh", "migration [kWh]", "{:,.1f}"),
    ("jct_mean_s", "JCT mean [h]", "h"),
    ("jct_p95_s", "JCT p95 [h]", "h"),
    ("jct_cv", "JCT cv", "{:.3f}"),
    ("jobs_unfinished", "unfinished", "{:,.0f}"),
    ("fluid_fraction", "of bound [%]", "pct"),
)


@dataclass(frozen=True)
class Bounds:
    fluid_kwh: float
    """The fluid bound (``docs/architecture.md``, 'Policies and the fluid bound') [kWh]."""
    relaxed_kwh: float
    """The bound no policy can exceed [kWh]."""
    demand_kwh: float
    """Facility energy of all the jobs' work at the largest PUE [kWh]."""


def bounds(sites: Sequence[SiteSpec], traces: Traces, jobs: JobsTable) -> Bounds:
    pue = np.array([s.pue for s in sites], dtype=np.float64)
    it_max = np.array([s.it_power_max_kw for s in sites], dtype=np.float64)
    n_steps = traces.renewable_kw.shape[0]
    usable = fluid.usable_kwh(traces.renewable_kw, it_max, pue, traces.step_s)
    run_s = jobs.work_gpu_h / jobs.gpus * 3600.0
    demand = fluid.demand_kw(jobs.submit_s, run_s, jobs.power_kw, n_steps, traces.step_s)
    pue_max = float(pue.max())
    energy_kwh = jobs.power_kw * run_s / 3600.0 * pue_max
    return Bounds(
        fluid_kwh=fluid.fluid_bound_kwh(usable, demand, pue_max, traces.step_s),
        relaxed_kwh=fluid.relaxed_bound_kwh(
            usable, jobs.submit_s, energy_kwh, jobs.power_kw * pue_max, traces.step_s
        ),
        demand_kwh=float(energy_kwh.sum()),
    )


def evaluate(
    sites: Sequence[SiteSpec],
    traces: Traces,
    jobs: JobsTable,
    policies: Sequence[str],
    params: EvaluationParams,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    """Run every policy; the document ``{"policies": {...}, "fluid_bound": {...}}``."""
    limits = bounds(sites, traces, jobs)
    results: dict[str, dict[str, float]] = {}
    for name in policies:
        step_progress = (lambda k, name=name: progress(name, k)) if progress else None
        result: RunResult = simulate(sites, traces, jobs, name, params, step_progress)
        metrics = dict(result.metrics)
        metrics["fluid_fraction"] = (
            metrics["renewable_used_kwh"] / limits.fluid_kwh if limits.fluid_kwh > 0 else math.nan
        )
        results[name] = metrics
    return {
        "policies": results,
        "fluid_bound": {
            "renewable_used_kwh": limits.fluid_kwh,
            "renewable_share": limits.fluid_kwh / limits.demand_kwh
            if limits.demand_kwh > 0
            else math.nan,
            "relaxed_renewable_used_kwh": limits.relaxed_kwh,
        },
        "scenario": {
            "sites": len(sites),
            "jobs": len(jobs),
            "steps": int(traces.renewable_kw.shape[0]),
            "step_s": traces.step_s,
            "start_at": traces.start_at.isoformat(),
        },
    }


def _cell(value: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt == "pct":
        return f"{100 * value:.1f}"
    if fmt == "h":
        return f"{value / 3600:.2f}"
    return fmt.format(value)


def format_table(document: dict[str, object]) -> str:
    """One row per policy, units in the headers, then the bound."""
    policies = document["policies"]
    assert isinstance(policies, dict)
    headers = ["policy", *(h for _, h, _ in TABLE_METRICS)]
    rows = [
        [name, *(_cell(metrics.get(key, math.nan), fmt) for key, _, fmt in TABLE_METRICS)]
        for name, metrics in policies.items()
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    out = [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    bound = document["fluid_bound"]
    assert isinstance(bound, dict)
    out.append("")
    out.append(
        f"fluid bound: {bound['renewable_used_kwh']:,.0f} kWh renewable usable "
        f"({100 * bound['renewable_share']:.1f} % of the jobs' energy); relaxed bound "
        f"{bound['relaxed_renewable_used_kwh']:,.0f} kWh"
    )
    return "\n".join(out) + "\n"
