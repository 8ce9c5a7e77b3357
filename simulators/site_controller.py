"""A simulated site controller that speaks ``docs/site-api.md`` over real HTTP.

:class:`SimulatedSite` holds one site's state (jobs, reservations, operations) and moves it
forward lazily: every request first calls :meth:`SimulatedSite.advance`, which replays what
happened between the last request and ``clock.now()`` (jobs progress and finish, operations
complete at their ``done_at``). No background task runs, so a :class:`ManualClock` drives
it exactly. :func:`build_app` wraps a site in an aiohttp application; :func:`start_site_server`
serves it on an OS-assigned loopback port. It reads requests, answers errors and keeps the
API's rules and binds its routes as the site agent does (:mod:`gateway.sites.serving`,
:mod:`gateway.sites.idempotency`, :mod:`gateway.sites.routes`).

GPUs and power. A job holds its GPUs while ``running``, ``checkpointing`` or ``restoring``;
a ``checkpointed`` or ``finished`` job holds none. Reservations hold GPUs and power until a
restore consumes them or they are released. The IT draw is the running jobs' ``power_kw``
plus ``idle_kw_per_gpu`` for every other GPU. A reservation (or a resume) fits when enough
GPUs are free and the site's committed power (every job holding GPUs and every reservation
at full power, free GPUs at idle power) stays within ``it_power_max_kw``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, get_args

from aiohttp import web

from gateway.clock import Clock
from gateway.feasibility import checkpoint_write_s, restore_s, transfer_s
from gateway.http_edge import SERVER_OPTIONS
from gateway.sites.idempotency import (
    check_release,
    check_restore,
    repeated_operation,
    repeated_reservation,
)
from gateway.sites.records import (
    GPU_HOLDING_STATES,
    OPERATION_KINDS,
    Checkpoint,
    JobSpec,
    JobState,
    JobStatus,
    Operation,
    OperationKey,
    OperationKind,
    Reservation,
    ReservationState,
    RestoreRequest,
    SiteStatus,
    TransferRequest,
    job_status_to_wire,
    operation_to_wire,
    status_to_wire,
)
from gateway.sites.routes import OperationHandlers, operation_at, server_route_defs
from gateway.sites.serving import (
    Handler,
    conflict,
    error_response,
    migration_id_body,
    not_found,
    operation_path,
    path_id,
    reservation_body,
    restore_body,
    site_middlewares,
    transfer_body,
)
from simulators.traces import RenewableTrace

logger = logging.getLogger(__name__)

FaultKind = Literal[
    "status",
    "reserve",
    "release_reservation",
    "checkpoint",
    "transfer",
    "restore",
    "operation",
    "resume",
    "release",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

_JOB_STATE_DURING: dict[OperationKind, JobState] = {
    "checkpoint": "checkpointing",
    "transfer": "checkpointed",
    "restore": "restoring",
}
_EPSILON = 1e-9


@dataclass
class SimJob:
    """A job as the simulated site keeps it (mutable simulator state, not a record)."""

    spec: JobSpec
    state: JobState
    work_remaining_gpu_h: float
    checkpoint: Checkpoint | None = None
    finished_at: datetime | None = None

    @property
    def holds_gpus(self) -> bool:
        return self.state in GPU_HOLDING_STATES

    def status(self) -> JobStatus:
        return JobStatus.of(self.spec, self.state, self.work_remaining_gpu_h)


@dataclass(frozen=True)
class _Fault:
    lose_reply: bool
    status: int = 503


_FAULT_CODES = {409: "conflict", 503: "unavailable"}


class _Hold:
    """Calls of one kind kept waiting until released (:meth:`SimulatedSite.hold`)."""

    def __init__(self, after_acting: bool) -> None:
        self.after_acting = after_acting
        self.waiting = 0
        self._released = asyncio.Event()

    async def wait(self) -> None:
        self.waiting += 1
        try:
            await self._released.wait()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._released.set()


class SimulatedSite:
    """One simulated micro-datacenter and its controller's state.

    gpus_total [-]; it_power_max_kw: IT power cap [kW]; idle_kw_per_gpu [kW];
    checkpoint_write_gb_per_s, restore_gb_per_s: local disk rates [GB/s];
    efficiency: usable share of the WAN bandwidth [-]; forecast_step_s, forecast_horizon_s:
    shape of the renewable forecast in the status [s].
    """

    def __init__(
        self,
        *,
        site_id: str,
        token: str,
        clock: Clock,
        trace: RenewableTrace,
        gpus_total: int,
        it_power_max_kw: float,
        idle_kw_per_gpu: float = 0.11,
        checkpoint_write_gb_per_s: float = 0.6,
        restore_gb_per_s: float = 1.5,
        efficiency: float = 0.9,
        forecast_step_s: float = 900.0,
        forecast_horizon_s: float = 86400.0,
        finished_listed_s: float = 86400.0,
        jobs: Iterable[JobSpec] = (),
    ) -> None:
        if not site_id or not token:
            raise ValueError("site_id and token must not be empty")
        if gpus_total < 0 or it_power_max_kw < 0 or idle_kw_per_gpu < 0:
            raise ValueError("gpus_total, it_power_max_kw and idle_kw_per_gpu must be >= 0")
        if checkpoint_write_gb_per_s <= 0 or restore_gb_per_s <= 0:
            raise ValueError("checkpoint_write_gb_per_s and restore_gb_per_s must be > 0")
        if not 0 < efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
        if forecast_step_s <= 0 or forecast_horizon_s < 0:
            raise ValueError("forecast_step_s must be > 0 and forecast_horizon_s >= 0")
        if finished_listed_s < 0:
            raise ValueError(f"finished_listed_s must be >= 0, got {finished_listed_s}")
        self.site_id = site_id
        self.token = token
        self.clock = clock
        self.trace = trace
        self.gpus_total = gpus_total
        self.it_power_max_kw = it_power_max_kw
        self.idle_kw_per_gpu = idle_kw_per_gpu
        self.checkpoint_write_gb_per_s = checkpoint_write_gb_per_s
        self.restore_gb_per_s = restore_gb_per_s
        self.efficiency = efficiency
        self.forecast_step_s = forecast_step_s
        self.forecast_horizon_s = forecast_horizon_s
        self.finished_listed_s = finished_listed_s
        self.jobs: dict[str, SimJob] = {}
        self.forgotten: set[str] = set()
        """Finished jobs listed for ``finished_listed_s`` and then dropped from the status."""
        self.reservations: dict[str, Reservation] = {}
        self.operations: dict[OperationKey, Operation] = {}
        self._operation_args: dict[OperationKey, tuple[object, ...]] = {}
        self._released_unknown: set[str] = set()
        self._resumed: set[tuple[str, str]] = set()
        self._released_jobs: set[tuple[str, str]] = set()
        self._faults: dict[FaultKind, list[_Fault]] = {}
        self._holds: dict[FaultKind, _Hold] = {}
        self._stalled: set[OperationKind] = set()
        self._cuts: dict[OperationKind, list[float]] = {}
        self._cut_at: dict[OperationKey, tuple[datetime, float]] = {}
        self._advanced_to: datetime = clock.now()
        for spec in jobs:
            self.add_job(spec)

    def __repr__(self) -> str:
        return f"SimulatedSite(site_id={self.site_id!r}, gpus_total={self.gpus_total})"

    # ---- set-up and test hooks -------------------------------------------------------

    def add_job(self, spec: JobSpec) -> None:
        """Start a job here now; raises ValueError when it does not fit."""
        self.advance()
        if spec.job_id in self.jobs:
            raise ValueError(f"site {self.site_id}: job {spec.job_id} already exists")
        if not self._fits(spec.gpus, spec.power_kw):
            raise ValueError(f"site {self.site_id}: job {spec.job_id} does not fit")
        self.jobs[spec.job_id] = SimJob(spec, "running", spec.work_remaining_gpu_h)

    def fail_next(
        self, kind: FaultKind, count: int = 1, *, lose_reply: bool = False, status: int = 503
    ) -> None:
        """Answer the next ``count`` calls of ``kind`` with ``status`` (``503`` by default;
        ``409`` makes a refusal such as a target refusing a restore).

        With ``lose_reply`` the call takes effect first and only its answer is lost (as when a
        connection drops after the controller acted), which exercises idempotent retries.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx code, got {status}")
        self._faults.setdefault(kind, []).extend(_Fault(lose_reply, status) for _ in range(count))

    def clear_faults(self) -> None:
        """Forget the faults of :meth:`fail_next` that have not struck yet (it answers again)."""
        self._faults.clear()

    def hold(self, kind: FaultKind, *, after_acting: bool = False) -> None:
        """Keep calls of ``kind`` waiting until :meth:`unhold`; they act once released.

        With ``after_acting`` a call takes effect at once and only its answer waits: a gateway
        killed meanwhile made the call but never heard that it succeeded.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if kind in self._holds:
            raise ValueError(f"calls of {kind} are already held")
        self._holds[kind] = _Hold(after_acting)

    def unhold(self, kind: FaultKind) -> None:
        """Let the held calls of ``kind`` go on, and hold no more of them."""
        hold = self._holds.pop(kind, None)
        if hold is not None:
            hold.release()

    def held(self, kind: FaultKind) -> int:
        """How many calls of ``kind`` are waiting in a hold now."""
        hold = self._holds.get(kind)
        return 0 if hold is None else hold.waiting

    def holding(self, kind: FaultKind) -> _Hold | None:
        """The hold on calls of ``kind``, if any (the HTTP layer waits on it)."""
        return self._holds.get(kind)

    def stall(self, kind: OperationKind) -> None:
        """Keep operations of ``kind`` in progress past their expected end until
        :meth:`unstall` (a slow disk or link)."""
        if kind not in OPERATION_KINDS:
            raise ValueError(f"unknown operation kind {kind!r}; expected one of {OPERATION_KINDS}")
        self.advance()
        self._stalled.add(kind)

    def unstall(self, kind: OperationKind) -> None:
        """Let operations of ``kind`` finish: the overdue ones finish now."""
        self.advance()
        self._stalled.discard(kind)
        now = self.clock.now()
        for key, op in list(self.operations.items()):
            if op.kind == kind and op.state == "in_progress" and op.done_at < now:
                self.operations[key] = replace(op, done_at=now)

    def cut_next(self, kind: OperationKind, at_fraction: float = 0.5) -> None:
        """Make the next operation of ``kind`` fail after ``at_fraction`` of its expected time
        (a transfer cut mid-way: the checkpoint stays at the source, nothing reaches the
        target; a cut restore leaves nothing running at the target)."""
        if kind not in OPERATION_KINDS:
            raise ValueError(f"unknown operation kind {kind!r}; expected one of {OPERATION_KINDS}")
        if not 0 <= at_fraction < 1:
            raise ValueError(f"at_fraction must be in [0, 1), got {at_fraction}")
        self._cuts.setdefault(kind, []).append(at_fraction)

    def take_fault(self, kind: FaultKind) -> _Fault | None:
        """The fault injected for this call of ``kind``, if any (consumes it)."""
        pending = self._faults.get(kind)
        return pending.pop(0) if pending else None

    def job_state(self, job_id: str) -> JobState | None:
        """The state of a job here, or None if this site does not know it."""
        self.advance()
        job = self.jobs.get(job_id)
        return None if job is None else job.state

    # ---- time ------------------------------------------------------------------------

    def advance(self) -> None:
        """Bring the state up to ``clock.now()``, completing operations in time order."""
        now = self.clock.now()
        while True:
            due = [
                (event, op)
                for op in self.operations.values()
                if op.state == "in_progress"
                and (event := self._next_event(op)) is not None
                and event[0] <= now
            ]
            if not due:
                break
            (at, cut), first = min(due, key=lambda item: item[0][0])
            self._progress_jobs(at)
            if cut:
                self._cut(first, at)
            else:
                self._complete(first)
        self._progress_jobs(now)

    def _next_event(self, op: Operation) -> tuple[datetime, bool] | None:
        """When ``op`` next changes, and whether it then fails (an injected cut)."""
        cut = self._cut_at.get((op.migration_id, op.kind))
        done_at = None if op.kind in self._stalled else op.done_at
        if cut is not None and (done_at is None or cut[0] < done_at):
            return cut[0], True
        return None if done_at is None else (done_at, False)

    def _cut(self, op: Operation, at: datetime) -> None:
        key = (op.migration_id, op.kind)
        _, fraction = self._cut_at.pop(key)
        error = f"injected fault: {op.kind} cut after {fraction:.0%} of its expected time"
        self.operations[key] = replace(op, state="failed", done_at=at, error=error)
        job = self.jobs.get(op.job_id)
        if op.kind == "restore" and job is not None and job.state == "restoring":
            del self.jobs[op.job_id]  # nothing runs here; the source keeps the checkpoint
        logger.info("site %s: %s", self.site_id, error)

    def _progress_jobs(self, until: datetime) -> None:
        elapsed_h = (until - self._advanced_to).total_seconds() / 3600.0
        if elapsed_h <= 0:
            return
        self._advanced_to = until
        for job in self.jobs.values():
            if job.state != "running":
                continue
            job.work_remaining_gpu_h = max(
                0.0, job.work_remaining_gpu_h - job.spec.gpus * elapsed_h
            )
            if job.work_remaining_gpu_h <= _EPSILON:
                job.work_remaining_gpu_h = 0.0
                job.state = "finished"
                job.finished_at = until
                logger.info("site %s: job %s finished", self.site_id, job.spec.job_id)
        self._forget_finished(until)

    def _forget_finished(self, now: datetime) -> None:
        """Drop the jobs finished more than ``finished_listed_s`` ago from the status: a
        site lists its finished jobs long enough for the gateway to see them, not forever."""
        cutoff = now - timedelta(seconds=self.finished_listed_s)
        old = [
            job_id
            for job_id, job in self.jobs.items()
            if job.finished_at is not None and job.finished_at <= cutoff
        ]
        for job_id in old:
            del self.jobs[job_id]
            self.forgotten.add(job_id)

    def _complete(self, op: Operation) -> None:
        key = (op.migration_id, op.kind)
        job = self.jobs.get(op.job_id)
        if job is None or job.state != _JOB_STATE_DURING[op.kind]:
            self.operations[key] = replace(op, state="failed", error="job left its state")
            return
        if op.kind == "checkpoint":
            job.checkpoint = _checkpoint_of(job)
            job.state = "checkpointed"
            self.operations[key] = replace(op, state="done", checkpoint=job.checkpoint)
        elif op.kind == "restore":
            job.state = "running"
            self.operations[key] = replace(op, state="done")
        else:
            self.operations[key] = replace(op, state="done")
        logger.info(
            "site %s: %s of job %s done (migration %s)",
            self.site_id,
            op.kind,
            op.job_id,
            op.migration_id,
        )

    # ---- capacity --------------------------------------------------------------------

    def _gpus_in_use(self) -> int:
        return sum(job.spec.gpus for job in self.jobs.values() if job.holds_gpus)

    def _gpus_reserved(self) -> int:
        return sum(r.gpus for r in self.reservations.values() if r.state == "reserved")

    def _gpus_free(self) -> int:
        return self.gpus_total - self._gpus_in_use() - self._gpus_reserved()

    def it_power_kw(self) -> float:
        """IT draw now: running jobs at power_kw, every other GPU at idle power [kW]."""
        running = [job.spec for job in self.jobs.values() if job.state == "running"]
        idle_gpus = self.gpus_total - sum(spec.gpus for spec in running)
        return sum(spec.power_kw for spec in running) + self.idle_kw_per_gpu * idle_gpus

    def _committed_power_kw(self) -> float:
        jobs_kw = sum(job.spec.power_kw for job in self.jobs.values() if job.holds_gpus)
        reserved_kw = sum(r.power_kw for r in self.reservations.values() if r.state == "reserved")
        return jobs_kw + reserved_kw + self.idle_kw_per_gpu * max(0, self._gpus_free())

    def _fits(self, gpus: int, power_kw: float) -> bool:
        if gpus > self._gpus_free():
            return False
        power_after_kw = self._committed_power_kw() - self.idle_kw_per_gpu * gpus + power_kw
        return power_after_kw <= self.it_power_max_kw + _EPSILON

    def _why_not(self, gpus: int, power_kw: float) -> str:
        return (
            f"site {self.site_id} cannot hold {gpus} GPUs at {power_kw:g} kW: "
            f"{self._gpus_free()} GPUs free, {self._committed_power_kw():.3f} kW committed "
            f"of {self.it_power_max_kw:g} kW"
        )

    # ---- the API's calls -------------------------------------------------------------

    def status(self) -> SiteStatus:
        """``GET /v1/status``."""
        self.advance()
        now = self.clock.now()
        return SiteStatus(
            site_id=self.site_id,
            at=now,
            gpus_total=self.gpus_total,
            gpus_free=max(0, self._gpus_free()),
            gpus_reserved=self._gpus_reserved(),
            it_power_kw=self.it_power_kw(),
            renewable_kw=self.trace.kw_at(now),
            forecast_step_s=self.forecast_step_s,
            renewable_forecast_kw=tuple(
                self.trace.forecast_kw(now, self.forecast_step_s, self.forecast_horizon_s)
            ),
            jobs=tuple(job.status() for job in self.jobs.values()),
        )

    def reserve(
        self, migration_id: str, job_id: str, gpus: int, power_kw: float
    ) -> ReservationState:
        """``POST /v1/reservations``: the reservation's state after the call."""
        self.advance()
        asked = Reservation(migration_id, job_id, gpus, power_kw)
        existing = self.reservations.get(migration_id)
        repeated = repeated_reservation(existing, asked, self._released_unknown)
        if repeated is not None:
            return repeated
        if not self._fits(gpus, power_kw):
            raise conflict(self._why_not(gpus, power_kw))
        self.reservations[migration_id] = asked
        logger.info("site %s: reserved %d GPUs for %s", self.site_id, gpus, migration_id)
        return "reserved"

    def release_reservation(self, migration_id: str) -> None:
        """``DELETE /v1/reservations/{migration_id}``; a no-op when consumed or released."""
        self.advance()
        existing = self.reservations.get(migration_id)
        if existing is None:
            self._released_unknown.add(migration_id)
        elif existing.state == "reserved":
            self.reservations[migration_id] = replace(existing, state="released")
            logger.info("site %s: released reservation %s", self.site_id, migration_id)

    def operation(self, migration_id: str, kind: OperationKind) -> Operation:
        """``GET /v1/operations/{migration_id}/{kind}``."""
        self.advance()
        op = self.operations.get((migration_id, kind))
        if op is None:
            raise not_found(f"no {kind} for migration {migration_id}")
        return op

    def checkpoint(self, job_id: str, migration_id: str) -> Operation:
        """``POST /v1/jobs/{job_id}/checkpoint``: stop a running job and write its checkpoint."""
        self.advance()
        key: OperationKey = (migration_id, "checkpoint")
        args: tuple[object, ...] = (job_id,)
        previous = self._previous(key, args)
        if previous is not None:
            return previous
        job = self._job(job_id)
        if job.state != "running":
            raise conflict(f"job {job_id} is {job.state}, not running")
        job.state = "checkpointing"
        expected_s = float(
            checkpoint_write_s(job.spec.checkpoint_gb, self.checkpoint_write_gb_per_s)
        )
        return self._start(key, args, job_id, expected_s, None)

    def transfer(self, job_id: str, asked: TransferRequest) -> Operation:
        """``POST /v1/jobs/{job_id}/transfer``: send a checkpointed job's checkpoint away (the
        ``target_token``, for agents' uploads, plays no part here)."""
        self.advance()
        key: OperationKey = (asked.migration_id, "transfer")
        target = (asked.target_site_id, asked.target_url, asked.bandwidth_gbps)
        args: tuple[object, ...] = (job_id, *target)
        previous = self._previous(key, args)
        if previous is not None:
            return previous
        job = self._job(job_id)
        if job.state != "checkpointed" or job.checkpoint is None:
            raise conflict(f"job {job_id} is {job.state}, not checkpointed")
        expected_s = float(
            transfer_s(job.spec.checkpoint_gb, asked.bandwidth_gbps, self.efficiency)
        )
        return self._start(key, args, job_id, expected_s, job.checkpoint)

    def restore(self, asked: RestoreRequest) -> Operation:
        """``POST /v1/jobs/{job_id}/restore``: load a checkpoint into the reserved GPUs."""
        self.advance()
        job, migration_id, checkpoint = asked.job, asked.migration_id, asked.checkpoint
        key: OperationKey = (migration_id, "restore")
        args: tuple[object, ...] = (job, asked.source_site_id, checkpoint)
        previous = self._previous(key, args)
        if previous is not None:
            return previous
        here = self.jobs.get(job.job_id)
        reservation = check_restore(
            migration_id,
            self.reservations.get(migration_id),
            job,
            self.site_id,
            None if here is None else here.state,
        )
        self.reservations[migration_id] = replace(reservation, state="consumed")
        self.jobs[job.job_id] = SimJob(job, "restoring", job.work_remaining_gpu_h, checkpoint)
        expected_s = float(restore_s(job.checkpoint_gb, self.restore_gb_per_s))
        return self._start(key, args, job.job_id, expected_s, checkpoint)

    def resume(self, job_id: str, migration_id: str) -> JobStatus:
        """``POST /v1/jobs/{job_id}/resume``: run a checkpointing or checkpointed job again."""
        self.advance()
        job = self._job(job_id)
        if (migration_id, job_id) in self._resumed or job.state == "running":
            self._resumed.add((migration_id, job_id))
            return job.status()
        if job.state not in ("checkpointing", "checkpointed"):
            raise conflict(f"job {job_id} is {job.state}; it cannot resume")
        if job.state == "checkpointed" and not self._fits(job.spec.gpus, job.spec.power_kw):
            raise conflict(self._why_not(job.spec.gpus, job.spec.power_kw))
        now = self.clock.now()
        for key, op in list(self.operations.items()):
            if op.job_id == job_id and op.state == "in_progress":
                error = f"aborted: job resumed at {self.site_id} (migration {migration_id})"
                self.operations[key] = replace(op, state="failed", done_at=now, error=error)
        job.state = "running"
        self._resumed.add((migration_id, job_id))
        logger.info("site %s: job %s resumed (migration %s)", self.site_id, job_id, migration_id)
        return job.status()

    def release(self, job_id: str, migration_id: str) -> None:
        """``POST /v1/jobs/{job_id}/release``: forget a job whose transfer completed."""
        self.advance()
        job = self.jobs.get(job_id)
        if job is None or (migration_id, job_id) in self._released_jobs:
            return
        transfer = self.operations.get((migration_id, "transfer"))
        check_release(job_id, migration_id, job.state, transfer)
        del self.jobs[job_id]
        self._released_jobs.add((migration_id, job_id))
        logger.info("site %s: released job %s (migration %s)", self.site_id, job_id, migration_id)

    # ---- helpers ---------------------------------------------------------------------

    def _job(self, job_id: str) -> SimJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(f"no job {job_id} at {self.site_id}")
        return job

    def _previous(self, key: OperationKey, args: tuple[object, ...]) -> Operation | None:
        return repeated_operation(self.operations, self._operation_args, key, args)

    def _start(
        self,
        key: OperationKey,
        args: tuple[object, ...],
        job_id: str,
        expected_s: float,
        checkpoint: Checkpoint | None,
    ) -> Operation:
        now = self.clock.now()
        op = Operation.started(key, job_id, now, expected_s, checkpoint)
        self.operations[key] = op
        self._operation_args[key] = args
        cuts = self._cuts.get(key[1])
        if cuts:
            fraction = cuts.pop(0)
            self._cut_at[key] = (now + timedelta(seconds=expected_s * fraction), fraction)
        logger.info(
            "site %s: %s of job %s started (migration %s, %.1f s)",
            self.site_id,
            key[1],
            job_id,
            key[0],
            expected_s,
        )
        return op


def _checkpoint_of(job: SimJob) -> Checkpoint:
    content = f"{job.spec.job_id}:{job.work_remaining_gpu_h!r}".encode()
    return Checkpoint(size_gb=job.spec.checkpoint_gb, sha256=hashlib.sha256(content).hexdigest())


# ---- HTTP ------------------------------------------------------------------------------

SITE_KEY = web.AppKey("site", SimulatedSite)


def _answer(site: SimulatedSite, kind: FaultKind, act: Callable[[], web.Response]) -> web.Response:
    fault = site.take_fault(kind)
    if fault is None:
        return act()
    if fault.lose_reply:
        act()
    logger.info("site %s: injected fault on %s", site.site_id, kind)
    code = _FAULT_CODES.get(fault.status, "injected")
    return error_response(fault.status, code, f"injected fault on {kind}")


_FAULT_KINDS_BY_OPERATION: dict[str, FaultKind] = {
    "getStatus": "status",
    "reserve": "reserve",
    "releaseReservation": "release_reservation",
    "getOperation": "operation",
    "checkpointJob": "checkpoint",
    "transferCheckpoint": "transfer",
    "restoreJob": "restore",
    "resumeJob": "resume",
    "releaseJob": "release",
}
"""The kind of fault that strikes each operation (``gateway.sites.routes``)."""


@web.middleware
async def _holds_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fault injection: a held kind of call waits (:meth:`SimulatedSite.hold`)."""
    resource = request.match_info.route.resource
    operation = None if resource is None else operation_at(request.method, resource.canonical)
    kind = None if operation is None else _FAULT_KINDS_BY_OPERATION.get(operation)
    hold = None if kind is None else request.app[SITE_KEY].holding(kind)
    if hold is None:
        return await handler(request)
    if hold.after_acting:
        response = await handler(request)
        await hold.wait()
        return response
    await request.read()  # the whole call has arrived (and is kept) before it waits
    await hold.wait()
    return await handler(request)


def _operation_response(op: Operation) -> web.Response:
    return web.json_response(operation_to_wire(op), status=202)


async def _get_status(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    return _answer(site, "status", lambda: web.json_response(status_to_wire(site.status())))


async def _post_reservation(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    asked = await reservation_body(request)

    def act() -> web.Response:
        state = site.reserve(asked.migration_id, asked.job_id, asked.gpus, asked.power_kw)
        return web.json_response({"migration_id": asked.migration_id, "state": state})

    return _answer(site, "reserve", act)


async def _delete_reservation(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    migration_id = path_id(request, "migration_id")

    def act() -> web.Response:
        site.release_reservation(migration_id)
        return web.json_response({"migration_id": migration_id, "state": "released"})

    return _answer(site, "release_reservation", act)


async def _get_operation(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    migration_id, kind = operation_path(request)
    return _answer(
        site,
        "operation",
        lambda: web.json_response(operation_to_wire(site.operation(migration_id, kind))),
    )


async def _post_checkpoint(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    job_id = path_id(request, "job_id")
    migration_id = await migration_id_body(request)
    return _answer(
        site, "checkpoint", lambda: _operation_response(site.checkpoint(job_id, migration_id))
    )


async def _post_transfer(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    job_id = path_id(request, "job_id")
    asked = await transfer_body(request)
    return _answer(site, "transfer", lambda: _operation_response(site.transfer(job_id, asked)))


async def _post_restore(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    job_id = path_id(request, "job_id")
    asked = await restore_body(request, job_id)
    return _answer(site, "restore", lambda: _operation_response(site.restore(asked)))


async def _post_resume(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    job_id = path_id(request, "job_id")
    migration_id = await migration_id_body(request)
    return _answer(
        site,
        "resume",
        lambda: web.json_response(job_status_to_wire(site.resume(job_id, migration_id))),
    )


async def _post_release(request: web.Request) -> web.Response:
    site = request.app[SITE_KEY]
    job_id = path_id(request, "job_id")
    migration_id = await migration_id_body(request)

    def act() -> web.Response:
        site.release(job_id, migration_id)
        return web.json_response({"job_id": job_id, "state": "released"})

    return _answer(site, "release", act)


_HANDLERS: dict[str, Handler] = {
    "getStatus": _get_status,
    "reserve": _post_reservation,
    "releaseReservation": _delete_reservation,
    "getOperation": _get_operation,
    "checkpointJob": _post_checkpoint,
    "transferCheckpoint": _post_transfer,
    "restoreJob": _post_restore,
    "resumeJob": _post_resume,
    "releaseJob": _post_release,
}
"""The simulator's handlers by operation (``gateway.sites.routes``)."""


def build_app(site: SimulatedSite) -> web.Application:
    """An aiohttp application serving ``site`` under ``/v1`` (bearer-token auth, JSON errors)."""
    middlewares = [
        *site_middlewares("simulated site controller", logger, site.token),
        _holds_middleware,
    ]
    app = web.Application(middlewares=middlewares)
    app[SITE_KEY] = site
    app.router.add_routes(server_route_defs("simulator", OperationHandlers(_HANDLERS)))
    return app


async def start_site_server(
    site: SimulatedSite, host: str = "127.0.0.1"
) -> tuple[web.AppRunner, str]:
    """Serve ``site`` on an OS-assigned port; returns the runner (``await runner.cleanup()``
    to stop) and the base URL, e.g. ``http://127.0.0.1:41234``."""
    runner = web.AppRunner(build_app(site), access_log=None, **SERVER_OPTIONS)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    bound_host, port = runner.addresses[0][:2]
    base_url = f"http://{bound_host}:{port}"
    logger.info("site %s serving at %s", site.site_id, base_url)
    return runner, base_url
