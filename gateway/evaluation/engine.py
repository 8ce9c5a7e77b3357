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
from typing import cast

import numpy as np
import numpy.typing as npt

from gateway.evaluation.input_jobs import JobsTable
from gateway.evaluation.input_sites import SiteSpec
from gateway.evaluation.input_traces import Traces
from gateway.feasibility import BoolArray, FloatArray
from gateway.planner.arrays import FleetArrays, IntArray
from gateway.planner.params import PolicyParams
from gateway.planner.placement import PLACEMENTS, Placement, place_now
from gateway.planner.policies import POLICIES, Policy

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


@dataclass(frozen=True)
class _Sites:
    """The sites as arrays, constant over a run."""

    gpus_total: IntArray
    it_max: FloatArray
    """IT power cap [kW]."""
    pue: FloatArray
    bandwidth: FloatArray
    """WAN bandwidth [Gbit/s]."""
    online: BoolArray
    no_shed: FloatArray
    """No site is ever asked to shed [kW]."""
    not_blocked: BoolArray

    @classmethod
    def of(cls, sites: Sequence[SiteSpec], n_sites: int) -> _Sites:
        return cls(
            gpus_total=np.array([s.gpus_total for s in sites], dtype=np.int64),
            it_max=np.array([s.it_power_max_kw for s in sites], dtype=np.float64),
            pue=np.array([s.pue for s in sites], dtype=np.float64),
            bandwidth=np.array([s.wan_bandwidth_gbps for s in sites], dtype=np.float64),
            online=np.ones(n_sites, dtype=np.bool_),
            no_shed=np.zeros(n_sites, dtype=np.float64),
            not_blocked=np.zeros(n_sites, dtype=np.bool_),
        )


@dataclass(frozen=True)
class _Policy:
    """What decides during a run: the policy, its placement rule and its forecast."""

    decide: Policy
    place: Placement
    params: PolicyParams
    horizon: int
    """Forecast steps the policy sees [count]."""
    rng: np.random.Generator | None
    lead_sigma: FloatArray | None
    """Relative standard deviation of the forecast at each lead step [-] (None: perfect)."""

    @classmethod
    def of(cls, policy: str, params: EvaluationParams, dt: float) -> _Policy:
        if policy not in POLICIES:
            raise KeyError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        pp = params.policy
        horizon = max(1, int(pp.horizon_s // dt))
        rng = np.random.default_rng(params.seed) if params.forecast_error > 0 else None
        lead_sigma = (
            params.forecast_error * np.sqrt(np.arange(horizon) * dt / (6 * 3600.0))
            if params.forecast_error > 0
            else None
        )
        return cls(
            POLICIES[policy], PLACEMENTS.get(policy, place_now), pp, horizon, rng, lead_sigma
        )


@dataclass
class _JobStates:
    """Where every job is and what it has left; changes at every step."""

    state: npt.NDArray[np.int8]
    site: IntArray
    target: IntArray
    work: FloatArray
    """Work left [GPU h]."""
    resume_s: FloatArray
    arrived_s: FloatArray
    finish_s: FloatArray
    gpus_used: IntArray
    """Per site: GPUs held by running and moving jobs (a moving job at both ends)."""
    it_committed: FloatArray
    """Per site: IT power of the jobs that hold GPUs there [kW]."""
    queue: deque[int] = field(default_factory=deque)
    next_job: int = 0
    """The first job not submitted yet."""

    @classmethod
    def start(cls, jobs: JobsTable, n_sites: int) -> _JobStates:
        n = len(jobs)
        return cls(
            state=np.full(n, QUEUED, dtype=np.int8),
            site=np.full(n, -1, dtype=np.int64),
            target=np.full(n, -1, dtype=np.int64),
            work=jobs.work_gpu_h.astype(np.float64, copy=True),
            resume_s=np.zeros(n, dtype=np.float64),
            arrived_s=np.zeros(n, dtype=np.float64),
            finish_s=np.full(n, np.nan, dtype=np.float64),
            gpus_used=np.zeros(n_sites, dtype=np.int64),
            it_committed=np.zeros(n_sites, dtype=np.float64),
        )


@dataclass
class _Books:
    """Energy and migrations summed over the steps so far."""

    totals: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
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
    )
    migrations: int = 0
    record: StepRecord | None = None


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
    dt = traces.step_s
    rule = _Policy.of(policy, params, dt)
    n_steps, n_sites = traces.renewable_kw.shape
    fleet = _Sites.of(sites, n_sites)
    js = _JobStates.start(jobs, n_sites)
    books = _Books(record=StepRecord() if params.record else None)
    work_start = float(js.work.sum())
    for k in range(n_steps):
        _step(k, traces, jobs, fleet, rule, js, books)
        if params.check_invariants:
            _check(
                js.state,
                js.site,
                js.target,
                jobs.gpus,
                js.gpus_used,
                fleet.gpus_total,
                js.work,
                jobs.work_gpu_h,
                js.next_job,
            )
        if progress is not None:
            progress(k)
    metrics = _metrics(jobs, js, books, work_start)
    return RunResult(policy, metrics, books.record, js.state.astype(np.int64), js.finish_s)


def _step(
    k: int,
    traces: Traces,
    jobs: JobsTable,
    fleet: _Sites,
    rule: _Policy,
    js: _JobStates,
    books: _Books,
) -> None:
    """One step of ``step_s``: arrivals, placement, the policy, progress and energy."""
    dt = traces.step_s
    t0 = k * dt
    t1 = t0 + dt
    _arrive(jobs, js, t1)
    renewable_now = traces.renewable_kw[k]
    if js.queue:
        forecast = _forecast(traces.renewable_kw, k, rule.horizon)
        _place(jobs, fleet, rule, js, forecast, t0, dt)
    _decide(k, traces, jobs, fleet, rule, js, books, t0)
    it_kwh = _advance(jobs, js, t0, t1, traces.renewable_kw.shape[1])
    _book_energy(books, it_kwh * fleet.pue, renewable_now * dt / 3600.0)


def _arrive(jobs: JobsTable, js: _JobStates, t1: float) -> None:
    """Jobs submitted before the step's end join the queue."""
    n = len(jobs)
    while js.next_job < n and jobs.submit_s[js.next_job] < t1:
        js.state[js.next_job] = WAITING
        js.queue.append(js.next_job)
        js.next_job += 1


def _place(
    jobs: JobsTable,
    fleet: _Sites,
    rule: _Policy,
    js: _JobStates,
    forecast: FloatArray,
    t0: float,
    dt: float,
) -> None:
    """Queued jobs start, first come first (later jobs may pass one that does not fit)."""
    gpus, power, pue = jobs.gpus, jobs.power_kw, fleet.pue
    spare_kw = forecast - (js.it_committed * pue)[:, None]
    still: deque[int] = deque()
    while js.queue:
        j = js.queue.popleft()
        fits = (fleet.gpus_total - js.gpus_used >= gpus[j]) & (
            fleet.it_max - js.it_committed >= power[j] - 1e-9
        )
        pinned = int(jobs.site_index[j])
        if pinned >= 0:
            choice = pinned if fits[pinned] else -1
        else:
            run_steps = math.ceil(js.work[j] / gpus[j] * 3600 / dt)
            choice = rule.place(fits, spare_kw, pue, float(power[j]), run_steps)
        if choice < 0:
            still.append(j)
            continue
        js.state[j] = RUNNING
        js.site[j] = choice
        js.arrived_s[j] = max(t0, float(jobs.submit_s[j]))
        js.resume_s[j] = js.arrived_s[j]
        js.gpus_used[choice] += gpus[j]
        js.it_committed[choice] += power[j]
        spare_kw[choice] -= power[j] * pue[choice]
    js.queue = still


def _decide(
    k: int,
    traces: Traces,
    jobs: JobsTable,
    fleet: _Sites,
    rule: _Policy,
    js: _JobStates,
    books: _Books,
    t0: float,
) -> None:
    """The policy sees the fleet as arrays and its moves start; the static policy never moves."""
    running = js.state == RUNNING
    candidates = np.flatnonzero(running & jobs.migratable)
    if not candidates.size or rule.decide is POLICIES["static"]:
        return
    supply = _forecast(traces.renewable_kw, k, rule.horizon)
    if rule.lead_sigma is not None and rule.rng is not None:
        noise = rule.rng.standard_normal(supply.shape) * rule.lead_sigma[None, :]
        supply = np.maximum(supply * (1.0 + noise), 0.0)
    it_running: FloatArray = np.bincount(
        js.site[running], weights=jobs.power_kw[running], minlength=traces.renewable_kw.shape[1]
    ).astype(np.float64)
    arrays = FleetArrays(
        at_s=t0,
        step_s=traces.step_s,
        gpus_free=fleet.gpus_total - js.gpus_used,
        it_power_kw=it_running,
        it_power_max_kw=fleet.it_max - (js.it_committed - it_running),
        pue=fleet.pue,
        bandwidth_gbps=fleet.bandwidth,
        online=fleet.online,
        supply_kw=supply,
        shed_kw=fleet.no_shed,
        blocked=fleet.not_blocked,
        job_site=js.site[candidates],
        job_gpus=jobs.gpus[candidates],
        job_power_kw=jobs.power_kw[candidates],
        job_checkpoint_gb=jobs.checkpoint_gb[candidates],
        job_arrived_s=js.arrived_s[candidates],
        job_work_gpu_h=js.work[candidates],
    )
    moves = rule.decide(arrays, rule.params)
    for i in range(len(moves)):
        j = int(candidates[moves.job[i]])
        to = int(moves.target[i])
        js.state[j] = MOVING
        js.target[j] = to
        js.resume_s[j] = t0 + float(moves.migration_s[i])
        js.gpus_used[to] += jobs.gpus[j]
        js.it_committed[to] += jobs.power_kw[j]
        books.migrations += 1
        books.totals["migration_kwh"] += float(moves.energy_kwh[i])
        books.totals["migration_downtime_s"] += float(moves.migration_s[i])


def _advance(jobs: JobsTable, js: _JobStates, t0: float, t1: float, n_sites: int) -> FloatArray:
    """Moves that end in the step land; running jobs progress. Per site IT energy [kWh]."""
    gpus, power = jobs.gpus, jobs.power_kw
    moving = js.state == MOVING
    arriving = moving & (js.resume_s < t1)
    if arriving.any():
        for jj in np.flatnonzero(arriving):
            j = int(jj)
            js.gpus_used[js.site[j]] -= gpus[j]
            js.it_committed[js.site[j]] -= power[j]
            js.site[j] = js.target[j]
            js.target[j] = -1
            js.arrived_s[j] = js.resume_s[j]
        js.state[arriving] = RUNNING
    active = js.state == RUNNING
    start = np.maximum(js.resume_s[active], t0)
    available_s = t1 - start
    need_s = js.work[active] / gpus[active] * 3600.0
    run_s = np.minimum(available_s, need_s)
    js.work[active] -= gpus[active] * run_s / 3600.0
    # With weights, bincount sums floats (numpy's stubs say integers).
    it_kwh = cast(
        FloatArray,
        np.bincount(js.site[active], weights=power[active] * run_s / 3600.0, minlength=n_sites),
    )
    done_local = need_s <= available_s + 1e-9
    if done_local.any():
        done = np.flatnonzero(active)[done_local]
        js.finish_s[done] = start[done_local] + need_s[done_local]
        js.work[done] = 0.0
        js.state[done] = FINISHED
        np.subtract.at(js.gpus_used, js.site[done], gpus[done])
        np.subtract.at(js.it_committed, js.site[done], power[done])
    return it_kwh


def _book_energy(books: _Books, load: FloatArray, renewable: FloatArray) -> None:
    """Per site, the step's load [kWh] against its renewable energy [kWh], summed."""
    used = np.minimum(load, renewable)
    totals = books.totals
    totals["load_kwh"] += float(load.sum())
    totals["renewable_kwh"] += float(renewable.sum())
    totals["renewable_used_kwh"] += float(used.sum())
    totals["site_grid_kwh"] += float((load - used).sum())
    totals["curtailed_kwh"] += float((renewable - used).sum())
    if books.record is not None:
        books.record.load_kwh.append(load)
        books.record.renewable_kwh.append(renewable)
        books.record.renewable_used_kwh.append(used)
        books.record.grid_kwh.append(load - used)


def _metrics(jobs: JobsTable, js: _JobStates, books: _Books, work_start: float) -> dict[str, float]:
    """The run's metrics from its books and the jobs' final states."""
    totals = books.totals
    n = len(jobs)
    finished = js.state == FINISHED
    jct = js.finish_s[finished] - jobs.submit_s[finished]
    grid = totals["site_grid_kwh"] + totals["migration_kwh"]
    total = totals["load_kwh"] + totals["migration_kwh"]
    work_done = work_start - float(js.work.sum())
    return {
        "grid_kwh": grid,
        "renewable_used_kwh": totals["renewable_used_kwh"],
        "renewable_share": totals["renewable_used_kwh"] / total if total > 0 else math.nan,
        "curtailed_kwh": totals["curtailed_kwh"],
        "load_kwh": totals["load_kwh"],
        "renewable_kwh": totals["renewable_kwh"],
        "migrations": float(books.migrations),
        "migration_downtime_s": totals["migration_downtime_s"],
        "migration_kwh": totals["migration_kwh"],
        "jct_mean_s": float(jct.mean()) if jct.size else math.nan,
        "jct_p95_s": float(np.percentile(jct, 95)) if jct.size else math.nan,
        "jct_cv": float(jct.std() / jct.mean()) if jct.size and jct.mean() > 0 else math.nan,
        "jobs_finished": float(finished.sum()),
        "jobs_unfinished": float(n - int(finished.sum())),
        "work_done_gpu_h": work_done,
    }


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
