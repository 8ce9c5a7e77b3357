"""Trace-driven replay of a policy over a fleet on a simulated clock: vectorised over jobs.

At each step of ``step_s``:

1. jobs submitted before the step's end join the queue;
2. queued jobs are placed, first come first: at the site a job names, if any; otherwise by
   the policy's placement rule (``gateway/planner/placement.py``) among the sites with room;
3. the policy (the same function the daemon runs) sees the fleet as arrays, with a renewable
   forecast that is the trace itself times a configurable relative error, and returns moves;
   a moving job stops, holds its GPUs at both sites until it runs again at the target after
   the feasibility model's migration time;
4. running jobs progress; each site's IT energy, times its PUE, is its load, and per site and
   step ``renewable_used = min(load, renewable)``, ``grid = load - renewable_used``,
   ``curtailed = renewable - renewable_used``.

A migration's own energy (network plus idle GPUs, from the model) is booked as grid energy.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gateway.evaluation.inputs import JobsTable, SiteSpec, Traces
from gateway.feasibility import FloatArray
from gateway.planner.arrays import FleetArrays, IntArray
from gateway.planner.params import PolicyParams
from gateway.planner.placement import PLACEMENTS, place_now
from gateway.planner.policies import POLICIES

QUEUED, WAITING, RUNNING, MOVING, FINISHED = 0, 1, 2, 3, 4
"""Job states: not submitted yet, waiting for GPUs, running, migrating, finished."""


@dataclass(frozen=True)
class EvaluationParams:
    policy: PolicyParams
    forecast_error: float = 0.0
    """Relative standard deviation of the renewable forecast at 6 h lead (grows with the
    square root of lead time, none at lead 0) [-]."""
    seed: int = 0
    """Seed of the forecast errors."""
    check_invariants: bool = False
    """Verify at every step that no job is lost or duplicated and no site is over capacity."""
    record: bool = False
    """Keep per-step, per-site energies in the result (for tests and plots)."""


@dataclass
class StepRecord:
    load_kwh: list[FloatArray] = field(default_factory=list)
    renewable_kwh: list[FloatArray] = field(default_factory=list)
    renewable_used_kwh: list[FloatArray] = field(default_factory=list)
    grid_kwh: list[FloatArray] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    policy: str
    metrics: dict[str, float]
    record: StepRecord | None = None
    final_state: IntArray | None = None
    finish_s: FloatArray | None = None
    """When each job finished, on the trace's axis (NaN: unfinished) [s]."""


class InvariantError(AssertionError):
    """The simulation broke one of its own rules (a bug, never bad input)."""


def _forecast(renewable_kw: FloatArray, k: int, steps: int) -> FloatArray:
    """(S, steps) renewable power from step k on; past the trace's end, its last value."""
    idx = np.minimum(np.arange(k, k + steps), renewable_kw.shape[0] - 1)
    result: FloatArray = renewable_kw[idx].T
    return result


def simulate(
    sites: Sequence[SiteSpec],
    traces: Traces,
    jobs: JobsTable,
    policy: str,
    params: EvaluationParams,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Replay ``policy`` over the whole trace; the metrics of ``docs/architecture.md``,
    'Policies and the fluid bound'."""
    if policy not in POLICIES:
        raise KeyError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    decide = POLICIES[policy]
    place = PLACEMENTS.get(policy, place_now)
    pp = params.policy
    dt = traces.step_s
    n_steps, n_sites = traces.renewable_kw.shape
    horizon = max(1, int(pp.horizon_s // dt))
    rng = np.random.default_rng(params.seed) if params.forecast_error > 0 else None
    lead_sigma = (
        params.forecast_error * np.sqrt(np.arange(horizon) * dt / (6 * 3600.0))
        if params.forecast_error > 0
        else None
    )

    gpus_total = np.array([s.gpus_total for s in sites], dtype=np.int64)
    it_max = np.array([s.it_power_max_kw for s in sites], dtype=np.float64)
    pue = np.array([s.pue for s in sites], dtype=np.float64)
    bandwidth = np.array([s.wan_bandwidth_gbps for s in sites], dtype=np.float64)
    online = np.ones(n_sites, dtype=np.bool_)
    no_shed = np.zeros(n_sites, dtype=np.float64)
    not_blocked = np.zeros(n_sites, dtype=np.bool_)

    n = len(jobs)
    state = np.full(n, QUEUED, dtype=np.int8)
    site = np.full(n, -1, dtype=np.int64)
    target = np.full(n, -1, dtype=np.int64)
    work = jobs.work_gpu_h.astype(np.float64, copy=True)
    resume_s = np.zeros(n, dtype=np.float64)
    arrived_s = np.zeros(n, dtype=np.float64)
    finish_s = np.full(n, np.nan, dtype=np.float64)
    gpus = jobs.gpus
    power = jobs.power_kw
    gpus_used = np.zeros(n_sites, dtype=np.int64)  # running, moving (at both ends)
    it_committed = np.zeros(n_sites, dtype=np.float64)  # power of jobs that hold GPUs
    queue: deque[int] = deque()
    next_job = 0

    totals = dict.fromkeys(
        (
            "load_kwh",
            "renewable_kwh",
            "renewable_used_kwh",
            "site_grid_kwh",
            "curtailed_kwh",
            "migration_kwh",
            "migration_downtime_s",
        ),
        0.0,
    )
    migrations = 0
    record = StepRecord() if params.record else None
    work_start = float(work.sum())

    for k in range(n_steps):
        t0 = k * dt
        t1 = t0 + dt
        # 1. arrivals
        while next_job < n and jobs.submit_s[next_job] < t1:
            state[next_job] = WAITING
            queue.append(next_job)
            next_job += 1
        renewable_now = traces.renewable_kw[k]
        # 2. placement, first come first (later jobs may pass one that does not fit)
        if queue:
            forecast = _forecast(traces.renewable_kw, k, horizon)
            spare_kw = forecast - (it_committed * pue)[:, None]
            still: deque[int] = deque()
            while queue:
                j = queue.popleft()
                fits = (gpus_total - gpus_used >= gpus[j]) & (
                    it_max - it_committed >= power[j] - 1e-9
                )
                pinned = int(jobs.site_index[j])
                if pinned >= 0:
                    choice = pinned if fits[pinned] else -1
                else:
                    run_steps = math.ceil(work[j] / gpus[j] * 3600 / dt)
                    choice = place(fits, spare_kw, pue, float(power[j]), run_steps)
                if choice < 0:
                    still.append(j)
                    continue
                state[j] = RUNNING
                site[j] = choice
                arrived_s[j] = max(t0, float(jobs.submit_s[j]))
                resume_s[j] = arrived_s[j]
                gpus_used[choice] += gpus[j]
                it_committed[choice] += power[j]
                spare_kw[choice] -= power[j] * pue[choice]
            queue = still
        # 3. the policy
        running = state == RUNNING
        candidates = np.flatnonzero(running & jobs.migratable)
        if candidates.size and decide is not POLICIES["static"]:
            supply = _forecast(traces.renewable_kw, k, horizon)
            if lead_sigma is not None and rng is not None:
                noise = rng.standard_normal(supply.shape) * lead_sigma[None, :]
                supply = np.maximum(supply * (1.0 + noise), 0.0)
            it_running: FloatArray = np.bincount(
                site[running], weights=power[running], minlength=n_sites
            ).astype(np.float64)
            fleet = FleetArrays(
                at_s=t0,
                step_s=dt,
                gpus_free=gpus_total - gpus_used,
                it_power_kw=it_running,
                it_power_max_kw=it_max - (it_committed - it_running),
                pue=pue,
                bandwidth_gbps=bandwidth,
                online=online,
                supply_kw=supply,
                shed_kw=no_shed,
                blocked=not_blocked,
                job_site=site[candidates],
                job_gpus=gpus[candidates],
                job_power_kw=power[candidates],
                job_checkpoint_gb=jobs.checkpoint_gb[candidates],
                job_arrived_s=arrived_s[candidates],
                job_work_gpu_h=work[candidates],
            )
            moves = decide(fleet, pp)
            for i in range(len(moves)):
                j = int(candidates[moves.job[i]])
                to = int(moves.target[i])
                state[j] = MOVING
                target[j] = to
                resume_s[j] = t0 + float(moves.migration_s[i])
                gpus_used[to] += gpus[j]
                it_committed[to] += power[j]
                migrations += 1
                totals["migration_kwh"] += float(moves.energy_kwh[i])
                totals["migration_downtime_s"] += float(moves.migration_s[i])
        # 4. progress
        moving = state == MOVING
        arriving = moving & (resume_s < t1)
        if arriving.any():
            for jj in np.flatnonzero(arriving):
                j = int(jj)
                gpus_used[site[j]] -= gpus[j]
                it_committed[site[j]] -= power[j]
                site[j] = target[j]
                target[j] = -1
                arrived_s[j] = resume_s[j]
            state[arriving] = RUNNING
        active = state == RUNNING
        start = np.maximum(resume_s[active], t0)
        available_s = t1 - start
        need_s = work[active] / gpus[active] * 3600.0
        run_s = np.minimum(available_s, need_s)
        work[active] -= gpus[active] * run_s / 3600.0
        it_kwh = np.bincount(
            site[active], weights=power[active] * run_s / 3600.0, minlength=n_sites
        )
        done_local = need_s <= available_s + 1e-9
        if done_local.any():
            done = np.flatnonzero(active)[done_local]
            finish_s[done] = start[done_local] + need_s[done_local]
            work[done] = 0.0
            state[done] = FINISHED
            np.subtract.at(gpus_used, site[done], gpus[done])
            np.subtract.at(it_committed, site[done], power[done])
        # 5. energy
        load = it_kwh * pue
        renewable = renewable_now * dt / 3600.0
        used = np.minimum(load, renewable)
        totals["load_kwh"] += float(load.sum())
        totals["renewable_kwh"] += float(renewable.sum())
        totals["renewable_used_kwh"] += float(used.sum())
        totals["site_grid_kwh"] += float((load - used).sum())
        totals["curtailed_kwh"] += float((renewable - used).sum())
        if record is not None:
            record.load_kwh.append(load)
            record.renewable_kwh.append(renewable)
            record.renewable_used_kwh.append(used)
            record.grid_kwh.append(load - used)
        if params.check_invariants:
            _check(
                state, site, target, gpus, gpus_used, gpus_total, work, jobs.work_gpu_h, next_job
            )
        if progress is not None:
            progress(k)

    finished = state == FINISHED
    jct = finish_s[finished] - jobs.submit_s[finished]
    grid = totals["site_grid_kwh"] + totals["migration_kwh"]
    total = totals["load_kwh"] + totals["migration_kwh"]
    work_done = work_start - float(work.sum())
    metrics = {
        "grid_kwh": grid,
        "renewable_used_kwh": totals["renewable_used_kwh"],
        "renewable_share": totals["renewable_used_kwh"] / total if total > 0 else math.nan,
        "curtailed_kwh": totals["curtailed_kwh"],
        "load_kwh": totals["load_kwh"],
        "renewable_kwh": totals["renewable_kwh"],
        "migrations": float(migrations),
        "migration_downtime_s": totals["migration_downtime_s"],
        "migration_kwh": totals["migration_kwh"],
        "jct_mean_s": float(jct.mean()) if jct.size else math.nan,
        "jct_p95_s": float(np.percentile(jct, 95)) if jct.size else math.nan,
        "jct_cv": float(jct.std() / jct.mean()) if jct.size and jct.mean() > 0 else math.nan,
        "jobs_finished": float(finished.sum()),
        "jobs_unfinished": float(n - int(finished.sum())),
        "work_done_gpu_h": work_done,
    }
    return RunResult(policy, metrics, record, state.astype(np.int64), finish_s)


def _check(
    state: np.ndarray,
    site: IntArray,
    target: IntArray,
    gpus: IntArray,
    gpus_used: IntArray,
    gpus_total: IntArray,
    work: FloatArray,
    work_total: FloatArray,
    submitted: int,
) -> None:
    n_sites = gpus_total.size
    holding = (state == RUNNING) | (state == MOVING)
    expected = np.bincount(site[holding], weights=gpus[holding], minlength=n_sites)
    moving = state == MOVING
    expected += np.bincount(target[moving], weights=gpus[moving], minlength=n_sites)
    if not np.array_equal(expected.astype(np.int64), gpus_used):
        raise InvariantError(f"GPU books disagree: {expected} vs {gpus_used}")
    if np.any(gpus_used > gpus_total):
        raise InvariantError(f"a site runs over its GPUs: {gpus_used} > {gpus_total}")
    if np.any(site[holding] < 0) or np.any(target[moving] < 0) or np.any(target[~moving] >= 0):
        raise InvariantError("a running or moving job has no site, or a target it should not")
    if np.any(state[:submitted] == QUEUED) or np.any(state[submitted:] != QUEUED):
        raise InvariantError("a job is submitted out of turn or lost from the queue")
    if np.any(work < -1e-9) or np.any(work > work_total + 1e-9):
        raise InvariantError("work went negative or grew")
    if np.any((state == FINISHED) & (work > 1e-9)):
        raise InvariantError("a job finished with work left")
