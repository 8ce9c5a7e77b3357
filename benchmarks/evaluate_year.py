"""Benchmark: the evaluator over 100 sites, 10,000 jobs and one year at 15-minute steps.

Run: .venv/bin/python -m benchmarks.evaluate_year [--policy NAME] [--sites N] [--jobs N]
Prints wall time, steps per second and peak memory (resident set) of the run.
"""

from __future__ import annotations

import argparse
import resource
import time

from benchmarks.synthetic_fleet import synthetic_fleet
from gateway.evaluation.engine import EvaluationParams, simulate
from gateway.evaluation.input_traces import resample
from gateway.evaluation.workload import WorkloadParams, generate_workload
from gateway.feasibility import FeasibilityParams
from gateway.planner.params import PolicyParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="forecast-global")
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--step-min", type=float, default=15.0)
    args = parser.parse_args()

    sites, hourly = synthetic_fleet(args.sites)
    traces = resample(hourly, args.step_min * 60)
    duration_s = traces.renewable_kw.shape[0] * traces.step_s
    arrivals_s = duration_s - 86400
    rate_per_h = args.jobs / (arrivals_s / 3600)
    jobs = generate_workload(
        WorkloadParams(rate_per_h=rate_per_h, work_gpu_h_min=20.0, work_gpu_h_max=5000.0, seed=1),
        sites,
        traces.start_at,
        arrivals_s,
    )
    params = EvaluationParams(
        PolicyParams(
            feasibility=FeasibilityParams(),
            max_migrations=max(8, args.sites // 4),
            step_s=traces.step_s,
        )
    )
    steps = traces.renewable_kw.shape[0]
    print(
        f"{len(sites)} sites, {len(jobs)} jobs, {steps} steps of {args.step_min:g} min, "
        f"policy {args.policy}"
    )
    started = time.perf_counter()
    result = simulate(sites, traces, jobs, args.policy, params)
    wall_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = result.metrics
    print(f"wall {wall_s:.1f} s ({steps / wall_s:,.0f} steps/s), peak RSS {peak_mib:,.0f} MiB")
    print(
        f"grid {m['grid_kwh']:,.0f} kWh, renewable share {100 * m['renewable_share']:.1f} %, "
        f"migrations {m['migrations']:,.0f}, unfinished {m['jobs_unfinished']:,.0f}"
    )


if __name__ == "__main__":
    main()
