"""Benchmark: one planning decision for 1,000 sites and 100,000 running jobs.

Run: .venv/bin/python -m benchmarks.plan_decision [--policy NAME] [--sites N] [--jobs N]
The fleet is built from the bundled traces (benchmarks/synthetic_fleet.py) at an hour when part
of it runs short of renewable power and part has plenty; the jobs fill most of the GPUs.
Prints the median and the slowest of repeated decisions, and how many moves they chose.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.synthetic_fleet import synthetic_fleet
from gateway.evaluation.workload import WorkloadParams, generate_workload
from gateway.feasibility import FeasibilityParams
from gateway.planner.arrays import FleetArrays
from gateway.planner.params import PolicyParams
from gateway.planner.policies import POLICIES


def build(n_sites: int, n_jobs: int, hour: int, seed: int = 0) -> FleetArrays:
    rng = np.random.default_rng(seed)
    # Sites large enough that the jobs fill most of the GPUs.
    scale = max(1.0, n_jobs * 2.6 / (0.6 * n_sites * 30))
    sites, traces = synthetic_fleet(n_sites, seed, scale)
    workload = generate_workload(
        WorkloadParams(rate_per_h=1.1 * n_jobs, seed=seed), sites, traces.start_at, 3600.0
    )
    gpus_total = np.array([s.gpus_total for s in sites], dtype=np.int64)
    it_max = np.array([s.it_power_max_kw for s in sites], dtype=np.float64)
    # Place jobs at random sites while they fit (up to 90 % of GPUs and power).
    site_of = np.full(len(workload), -1, dtype=np.int64)
    free = (gpus_total * 0.9).astype(np.int64)
    room = it_max * 0.9
    count = 0
    for j in rng.permutation(len(workload)):
        if count == n_jobs:
            break
        s = int(rng.integers(n_sites))
        if free[s] >= workload.gpus[j] and room[s] >= workload.power_kw[j]:
            count += 1
            site_of[j] = s
            free[s] -= workload.gpus[j]
            room[s] -= workload.power_kw[j]
    placed = np.flatnonzero(site_of >= 0)
    steps = 48
    supply = traces.renewable_kw[hour : hour + steps].T  # hourly columns
    it_power = np.bincount(site_of[placed], weights=workload.power_kw[placed], minlength=n_sites)
    used = np.bincount(site_of[placed], weights=workload.gpus[placed], minlength=n_sites)
    return FleetArrays(
        at_s=float(hour * 3600),
        step_s=3600.0,
        gpus_free=(gpus_total - used).astype(np.int64),
        it_power_kw=it_power,
        it_power_max_kw=it_max,
        pue=np.array([s.pue for s in sites]),
        bandwidth_gbps=np.array([s.wan_bandwidth_gbps for s in sites]),
        online=np.ones(n_sites, dtype=np.bool_),
        supply_kw=np.ascontiguousarray(supply),
        shed_kw=np.zeros(n_sites),
        blocked=np.zeros(n_sites, dtype=np.bool_),
        job_site=site_of[placed],
        job_gpus=workload.gpus[placed],
        job_power_kw=workload.power_kw[placed],
        job_checkpoint_gb=workload.checkpoint_gb[placed],
        job_arrived_s=np.zeros(placed.size),
        job_work_gpu_h=workload.work_gpu_h[placed],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="forecast-global")
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--hour", type=int, default=4200, help="hour of the year (June, dusk)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    fleet = build(args.sites, args.jobs, args.hour)
    params = PolicyParams(
        feasibility=FeasibilityParams(), max_migrations=max(8, args.sites // 4), step_s=3600.0
    )
    short = int((fleet.it_power_kw * fleet.pue > fleet.supply_kw[:, 0]).sum())
    print(
        f"{fleet.n_sites} sites ({short} short of renewable power now), {fleet.n_jobs} running "
        f"jobs, policy {args.policy}, budget {params.max_migrations} moves"
    )
    decide = POLICIES[args.policy]
    times_ms = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        moves = decide(fleet, params)
        times_ms.append(1000 * (time.perf_counter() - started))
    print(
        f"decision: median {statistics.median(times_ms):.1f} ms, slowest {max(times_ms):.1f} ms "
        f"over {args.repeat} runs; {len(moves)} moves"
    )


if __name__ == "__main__":
    main()
