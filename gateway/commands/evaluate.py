"""The ``evaluate`` command: replay policies over renewable traces and compare them.

Its options are set up in ``gateway/cli.py``; this module checks them, loads the inputs
(``gateway/evaluation/input_*.py``, ``workload.py``), runs the evaluator
(``gateway/evaluation/run.py``) and prints one row per policy.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gateway.errors import InputError
from gateway.evaluation.engine import EvaluationParams
from gateway.evaluation.input_jobs import JobsTable, load_jobs
from gateway.evaluation.input_sites import load_sites
from gateway.evaluation.input_traces import Traces, load_traces, resample
from gateway.evaluation.run import evaluate, format_table
from gateway.evaluation.workload import WorkloadParams, generate_workload, parse_workload
from gateway.feasibility import FeasibilityParams
from gateway.planner.params import PolicyParams
from gateway.planner.policies import POLICIES

STEP_MIN_RANGE = (1.0, 1440.0)
"""The simulation step may be from a minute to a day [min]."""
MAX_DAYS = 36600.0
"""The longest span ``--days`` may ask for (a century) [days]."""


def _window(traces: Traces, start: str | None, days: float | None) -> Traces:
    if start is None and days is None:
        return traces
    first = 0
    if start is not None:
        try:
            day = datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError as exc:
            raise InputError(f"--start {start}: expected YYYY-MM-DD") from exc
        first = round((day - traces.start_at).total_seconds() / traces.step_s)
        if not 0 <= first < traces.renewable_kw.shape[0] - 1:
            raise InputError(f"--start {start}: outside the traces")
    last = traces.renewable_kw.shape[0]
    if days is not None:
        if not 0 < days <= MAX_DAYS:
            raise InputError(f"--days {days}: must be > 0 and at most {MAX_DAYS}")
        last = min(last, first + max(2, round(days * 86400 / traces.step_s)))
    return Traces(
        traces.start_at + timedelta(seconds=first * traces.step_s),
        traces.step_s,
        traces.site_ids,
        traces.renewable_kw[first:last],
    )


def _policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise InputError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(POLICIES)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    policies = _policies(args.policies)
    if not STEP_MIN_RANGE[0] <= args.step_min <= STEP_MIN_RANGE[1]:
        raise InputError(
            f"--step-min {args.step_min}: must be from {STEP_MIN_RANGE[0]:g} to "
            f"{STEP_MIN_RANGE[1]:g} min"
        )
    if args.seed < 0:
        raise InputError(f"--seed {args.seed}: must be >= 0")
    if not 0 <= args.forecast_error <= 10 or args.max_migrations < 0:
        raise InputError("--forecast-error must be in [0, 10] and --max-migrations >= 0")
    for option, value in (("--json", args.json), ("--plot", args.plot)):
        if value is not None and not Path(value).absolute().parent.is_dir():
            raise InputError(f"{option} {value}: the directory {Path(value).parent} does not exist")
    sites = load_sites(args.sites)
    loaded = load_traces(args.traces, sites)
    try:
        traces = resample(loaded, args.step_min * 60.0)
    except ValueError as exc:
        raise InputError(f"--step-min {args.step_min}: {exc} of {args.traces}") from exc
    traces = _window(traces, args.start, args.days)
    duration_s = traces.renewable_kw.shape[0] * traces.step_s
    jobs: JobsTable
    if args.jobs:
        jobs = load_jobs(args.jobs, sites, traces.start_at)
    else:
        workload = parse_workload(args.workload) if args.workload else WorkloadParams()
        # Arrivals stop a day before the end, so that most jobs can finish.
        jobs = generate_workload(
            workload, sites, traces.start_at, max(duration_s - 86400, duration_s / 2)
        )
    params = EvaluationParams(
        policy=PolicyParams(
            feasibility=FeasibilityParams(),
            max_migrations=args.max_migrations,
            step_s=traces.step_s,
        ),
        forecast_error=args.forecast_error,
        seed=args.seed,
    )
    steps = traces.renewable_kw.shape[0]
    with tqdm(total=steps * len(policies), unit="step", disable=None, leave=False) as bar:

        def progress(name: str, k: int) -> None:
            if k % 96 == 0:
                bar.set_description(name)
                bar.update(min(96, steps - k))

        document = evaluate(sites, traces, jobs, policies, params, progress)
    print(
        f"{len(sites)} sites, {len(jobs)} jobs, {steps} steps of {traces.step_s / 60:g} min "
        f"from {traces.start_at:%Y-%m-%d %H:%M} UTC"
    )
    print(format_table(document), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(document), indent=2) + "\n")
    if args.plot:
        from gateway.evaluation.figures import plot_policy_comparison, policy_comparison

        plot_policy_comparison(policy_comparison(document), Path(args.plot))
    return 0


def _jsonable(value: object) -> object:
    """NaN becomes null; numpy numbers become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
