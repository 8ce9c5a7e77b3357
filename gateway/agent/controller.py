"""The site agent's controller: ``docs/site-api.md`` semantics over real job processes.

:class:`SiteAgent` keeps the same state and answers the same calls as the simulator
(``simulators/site_controller.py``): status, reservations, and the checkpoint, transfer and
restore operations keyed by (migration id, kind), resume and release, each idempotent by its
migration id. The difference is that its jobs are OS processes
(:mod:`gateway.agent.supervisor`) and its operations take the time they really take:

- checkpoint: SIGTERM to the job, which writes its state and exits 0; the operation is done when
  the file is on disk, with its real size and sha256;
- transfer: the job's manifest (its command) and then the checkpoint go to the target agent
  (``gateway.agent.transfer.send_checkpoint``), throttled to the call's bandwidth if configured;
- restore: the checkpoint the source sent is verified against the call's sha256 and the job is
  started with ``--resume PATH``; the operation is done once its process runs.

Every change is saved to the state file (:mod:`gateway.agent.state`) before it is answered, so
an agent that stops or dies comes back with its jobs, reservations and operations: jobs that
were running start again from their newest checkpoint, transfers resume where they stopped and
restores are carried out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TextIO

import aiohttp

from gateway.agent.capacity import Capacity
from gateway.agent.checkpoint_store import discard, store_paths
from gateway.agent.config import AgentSettings, command_problem
from gateway.agent.errors import AgentRequestError, bad_request, conflict, not_found, unavailable
from gateway.agent.jobs import (
    CheckpointFile,
    JobPaths,
    JobProcess,
    confirms_resume,
    hash_file,
    program_problem,
)
from gateway.agent.levers import Levers
from gateway.agent.manifest import ManifestError, send_manifest
from gateway.agent.operations import OperationBook
from gateway.agent.runner import HoldRefused, JobRunner, ProcessRunner
from gateway.agent.state import (
    AgentJob,
    AgentState,
    Manifest,
    OperationKey,
    Reservation,
    load_state,
    lock_data_dir,
    save_state,
)
from gateway.agent.supervisor import JobSupervisor
from gateway.agent.transfer import CheckpointTransferError, send_checkpoint, verified_checkpoint
from gateway.clock import Clock, SystemClock
from gateway.errors import InputError
from gateway.feasibility import checkpoint_write_s, restore_s, transfer_s
from gateway.sites.idempotency import check_release, check_restore, repeated_reservation
from gateway.sites.records import (
    Checkpoint,
    JobSpec,
    JobState,
    JobStatus,
    Operation,
    OperationKind,
    ReservationState,
    SiteStatus,
    checkpoint_to_wire,
    job_spec_to_wire,
)

log = logging.getLogger(__name__)

RECEIVED_DIR = "received"
"""Under ``data_dir``: checkpoints other agents sent (``gateway.agent.transfer``'s store)."""
_RESUME_POLL_S = 0.02
"""How often a restore looks for the job's confirmation that it resumed [s]."""


class SiteAgent:
    """One site's agent: its jobs as processes, its reservations and operations.

    ``start`` loads the saved state (or starts the configured jobs on a first run); ``close``
    asks every job to checkpoint and exit, and saves the state.
    """

    def __init__(self, settings: AgentSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.data_dir = settings.data_dir
        self.received_dir = settings.data_dir / RECEIVED_DIR
        self._runner = job_runner(settings)
        self._reservation_locks: dict[str, asyncio.Lock] = {}
        self._use_state(AgentState())
        self._operation_tasks: dict[OperationKey, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._lock: TextIO | None = None
        self._closed = False

    def _use_state(self, state: AgentState) -> None:
        self._state = state
        self._operations = OperationBook(state, self.clock, self.site_id)
        self._jobs = JobSupervisor(
            self.settings, state, self._operations, self.clock, self._save, self._runner
        )
        self._levers = Levers(self.site_id, state, self._jobs, self.clock, self._save)

    def __repr__(self) -> str:
        return f"SiteAgent(site_id={self.site_id!r}, data_dir={str(self.data_dir)!r})"

    @property
    def site_id(self) -> str:
        return self.settings.site_id

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the saved state and bring it back to life; start the configured jobs.

        On failure everything started is stopped again before the error propagates."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = lock_data_dir(self.data_dir)
        self.received_dir.mkdir(exist_ok=True)
        peers_tls = aiohttp.TCPConnector(ssl=self.settings.peer_ssl())  # calls to other agents
        self._session = aiohttp.ClientSession(connector=peers_tls)
        await self._runner.open()
        saved = load_state(self.data_dir)
        if saved is not None:
            self._use_state(saved)
            await self._recover()
        released = {job_id for _, job_id in self._state.released_jobs}
        for job in self.settings.job:
            if job.id in self._state.jobs or job.id in released:
                continue
            spec = JobSpec(
                job_id=job.id,
                gpus=job.gpus,
                power_kw=job.power_kw,
                checkpoint_gb=job.checkpoint_gb,
                work_remaining_gpu_h=job.work_gpu_h,
                migratable=job.migratable,
                flex_tier=job.flex_tier,
            )
            try:
                await self.submit(spec, job.command)
            except AgentRequestError as exc:
                log.error("site %s: configured job %s not started: %s", self.site_id, job.id, exc)
        self._save()
        log.info(
            "site agent %s started with %d jobs (data_dir %s)",
            self.site_id,
            len(self._state.jobs),
            self.data_dir,
        )

    async def close(self) -> None:
        """Stop: operations in flight are left for the next start, every job is asked to
        checkpoint and exit (killed after ``stop_timeout_s``), and the state is saved."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._operation_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._jobs.stop_all()
        if self.data_dir.is_dir():
            self._save()
        if self._session is not None:
            await self._session.close()
        if self._lock is not None:
            self._lock.close()
        log.info("site agent %s stopped", self.site_id)

    async def _recover(self) -> None:
        """After a restart: settle the jobs, resume transfers and restores in flight."""
        await self._jobs.recover()
        self._runner.settle_holds(self._state.holds.values())
        for key in self._operations.in_progress():
            if key[1] == "transfer":
                self._spawn(key, self._run_transfer(key))
            elif key[1] == "restore":
                self._spawn(key, self._run_restore(key))
        self._save()

    def _save(self) -> None:
        save_state(self._state, self.data_dir)

    def _spawn(self, key: OperationKey, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"{key[1]} {key[0]}")
        self._operation_tasks[key] = task
        task.add_done_callback(lambda _: self._forget_task(key, task))

    def _forget_task(self, key: OperationKey, task: asyncio.Task[None]) -> None:
        if self._operation_tasks.get(key) is task:
            del self._operation_tasks[key]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the agent is not started")
        return self._session

    # ---- what tests and the server look at ------------------------------------------------

    def job_state(self, job_id: str) -> JobState | None:
        """The state of a job here, or None if this agent does not know it."""
        job = self._state.jobs.get(job_id)
        return None if job is None else job.state

    def job_process(self, job_id: str) -> JobProcess | None:
        """The job's running process, if any (and if it runs as a process of this machine)."""
        run = self._jobs.process(job_id)
        return run if isinstance(run, JobProcess) else None

    def job_paths(self, job_id: str) -> JobPaths:
        return self._jobs.paths(job_id)

    # ---- capacity -------------------------------------------------------------------------

    @property
    def capacity(self) -> Capacity:
        """The site's limits now: its GPUs (a Slurm cluster's usable ones) and power cap."""
        gpus_total = self._runner.usable_gpus(self._state.jobs.values())
        if gpus_total is None:
            gpus_total = self.settings.gpus_total or 0
        return Capacity(gpus_total, self.settings.it_power_max_kw, self.settings.idle_kw_per_gpu)

    def _fits(self, gpus: int, power_kw: float) -> bool:
        jobs, reservations = self._state.jobs.values(), self._state.reservations.values()
        return self.capacity.fits(jobs, reservations, gpus, power_kw)

    def _why_not(self, gpus: int, power_kw: float) -> str:
        jobs, reservations = self._state.jobs.values(), self._state.reservations.values()
        return f"site {self.site_id} {self.capacity.why_not(jobs, reservations, gpus, power_kw)}"

    # ---- the API's calls --------------------------------------------------------------------

    def status(self) -> SiteStatus:
        """``GET /v1/status``."""
        now = self.clock.now()
        jobs, reservations = self._state.jobs.values(), self._state.reservations.values()
        renewable = self.settings.renewable
        count = max(1, math.ceil(renewable.forecast_horizon_s / renewable.forecast_step_s - 1e-9))
        capacity = self.capacity
        return SiteStatus(
            site_id=self.site_id,
            at=now,
            gpus_total=capacity.gpus_total,
            gpus_free=max(0, capacity.gpus_free(jobs, reservations)),
            gpus_reserved=capacity.gpus_reserved(reservations),
            it_power_kw=capacity.it_power_kw(jobs),
            renewable_kw=renewable.constant_kw,
            forecast_step_s=renewable.forecast_step_s,
            renewable_forecast_kw=(renewable.constant_kw,) * count,
            jobs=tuple(job.status(now) for job in jobs),
        )

    def _check_command(self, command: tuple[str, ...]) -> None:
        """A 400 naming the argument when the command cannot run at this site."""
        placeholder = command_problem(command)
        if placeholder is not None:
            index, problem = placeholder
            raise bad_request(f"field 'command[{index}]': {problem}")
        program = program_problem(command)
        if program is not None:
            raise bad_request(f"field 'command[0]': at site {self.site_id}: {program}")

    async def submit(self, spec: JobSpec, command: tuple[str, ...]) -> JobStatus:
        """``POST /v1/jobs`` (agent only) and the configured jobs: start a new job here."""
        self._check_command(command)
        if spec.job_id in self._state.jobs:
            state = self._state.jobs[spec.job_id].state
            raise conflict(f"job {spec.job_id} already exists here ({state})")
        if not self._fits(spec.gpus, spec.power_kw):
            raise conflict(self._why_not(spec.gpus, spec.power_kw))
        job = AgentJob(
            spec=spec,
            command=command,
            state="running",
            work_remaining_gpu_h=spec.work_remaining_gpu_h,
            progressed_at=self.clock.now(),
        )
        self._state.jobs[spec.job_id] = job
        try:
            await self._jobs.launch(job)
        except OSError as exc:
            del self._state.jobs[spec.job_id]
            raise bad_request(f"field 'command': cannot start it: {exc}") from exc
        self._save()
        return job.status(self.clock.now())

    def _reservation_lock(self, migration_id: str) -> asyncio.Lock:
        """One reserve or release of a migration's reservation at a time (a hold takes a
        while to be granted)."""
        return self._reservation_locks.setdefault(migration_id, asyncio.Lock())

    async def reserve(
        self, migration_id: str, job_id: str, gpus: int, power_kw: float
    ) -> ReservationState:
        """``POST /v1/reservations``: the reservation's state after the call. Under a workload
        manager the resources are held there too (a hold), before ``reserved`` is answered."""
        async with self._reservation_lock(migration_id):
            asked = Reservation(migration_id, job_id, gpus, power_kw, "reserved")
            repeated = repeated_reservation(
                self._state.reservations.get(migration_id), asked, self._state.released_unknown
            )
            if repeated is not None:
                return repeated
            if not self._fits(gpus, power_kw):
                raise conflict(self._why_not(gpus, power_kw))
            self._state.reservations[migration_id] = asked  # counted while the hold is asked
            try:
                hold_id = await self._runner.hold(
                    migration_id, job_id, gpus, self._jobs.paths(job_id)
                )
            except HoldRefused as exc:
                del self._state.reservations[migration_id]
                raise conflict(f"site {self.site_id}: {exc}") from exc
            except OSError as exc:
                del self._state.reservations[migration_id]
                raise unavailable(f"site {self.site_id}: cannot hold the GPUs: {exc}") from exc
            except BaseException:
                del self._state.reservations[migration_id]
                raise
            if hold_id is not None:
                self._state.holds[migration_id] = hold_id
            self._save()
        log.info("site %s: reserved %d GPUs for %s", self.site_id, gpus, migration_id)
        return "reserved"

    async def release_reservation(self, migration_id: str) -> None:
        """``DELETE /v1/reservations/{migration_id}``; a no-op when consumed or released.
        What another agent sent for the migration is deleted, and its hold let go."""
        async with self._reservation_lock(migration_id):
            existing = self._state.reservations.get(migration_id)
            if existing is None:
                self._state.released_unknown.add(migration_id)
            elif existing.state == "reserved":
                self._state.reservations[migration_id] = replace(existing, state="released")
                log.info("site %s: released reservation %s", self.site_id, migration_id)
            else:
                return
            self._release_hold(migration_id)
            self._save()
        self._forget_received(migration_id)

    def _release_hold(self, migration_id: str) -> None:
        hold_id = self._state.holds.pop(migration_id, None)
        if hold_id is not None:
            self._runner.release_hold(hold_id)

    def operation(self, migration_id: str, kind: OperationKind) -> Operation:
        """``GET /v1/operations/{migration_id}/{kind}``."""
        op = self._operations.get((migration_id, kind))
        if op is None:
            raise not_found(f"no {kind} for migration {migration_id}")
        return op

    def _job(self, job_id: str) -> AgentJob:
        job = self._state.jobs.get(job_id)
        if job is None:
            raise not_found(f"no job {job_id} at {self.site_id}")
        return job

    def checkpoint(self, job_id: str, migration_id: str) -> Operation:
        """``POST /v1/jobs/{job_id}/checkpoint``: SIGTERM the job; done once its checkpoint is
        on disk."""
        key: OperationKey = (migration_id, "checkpoint")
        args = [job_id]
        previous = self._operations.previous(key, args)
        if previous is not None:
            return previous
        job = self._job(job_id)
        if job.state != "running":
            raise conflict(f"job {job_id} is {job.state}, not running")
        self._jobs.set_state(job, "checkpointing")
        job.checkpoint_migration_id = migration_id
        expected_s = float(
            checkpoint_write_s(job.spec.checkpoint_gb, self.settings.checkpoint_write_gb_per_s)
        )
        op = self._operations.begin(key, args, job_id, expected_s, None)
        self._save()
        self._jobs.request_checkpoint(job)
        return op

    def transfer(
        self,
        job_id: str,
        migration_id: str,
        target_site_id: str,
        target_url: str,
        bandwidth_gbps: float,
        target_token: str | None,
    ) -> Operation:
        """``POST /v1/jobs/{job_id}/transfer``: send the job's manifest and checkpoint to the
        target agent. The target's token comes from the call or the ``peer_tokens``."""
        key: OperationKey = (migration_id, "transfer")
        args = [job_id, target_site_id, target_url, bandwidth_gbps]
        previous = self._operations.previous(key, args)
        if previous is not None:
            return previous
        job = self._job(job_id)
        if job.state != "checkpointed" or job.checkpoint is None:
            raise conflict(f"job {job_id} is {job.state}, not checkpointed")
        token = target_token or self.settings.peer_tokens.get(target_site_id)
        if not token:
            raise bad_request(
                f"field 'target_token': missing, and the agent's peer_tokens has no token "
                f"for site {target_site_id!r}"
            )
        rate_gbps = min(bandwidth_gbps, self.settings.wan_bandwidth_gbps)
        expected_s = float(transfer_s(job.checkpoint.size_gb, rate_gbps, self.settings.efficiency))
        op = self._operations.begin(key, args, job_id, expected_s, job.checkpoint)
        self._state.transfer_tokens[migration_id] = token
        self._save()
        self._spawn(key, self._run_transfer(key))
        return op

    async def _run_transfer(self, key: OperationKey) -> None:
        migration_id = key[0]
        job_id, _target_site_id, target_url, bandwidth_gbps = self._operations.args(key)
        job = self._state.jobs.get(job_id)
        token = self._state.transfer_tokens.get(migration_id)
        if job is None or job.checkpoint is None or job.command is None or token is None:
            self._operations.finish(key, error="the job or its checkpoint is no longer here")
            self._save()
            return
        rate_bytes_per_s = None
        if self.settings.throttle_transfers:
            rate_bytes_per_s = min(bandwidth_gbps, self.settings.wan_bandwidth_gbps) * 1e9 / 8
        manifest = Manifest(job_id, job.command, self.site_id)
        try:
            await send_manifest(self._client(), target_url, token, migration_id, manifest)
            result = await send_checkpoint(
                self._client(),
                job.checkpoint.path,
                target_url,
                token,
                migration_id,
                rate_bytes_per_s=rate_bytes_per_s,
                sha256=job.checkpoint.sha256,
            )
        except (CheckpointTransferError, ManifestError, InputError) as exc:
            self._operations.finish(key, error=f"transfer to {target_url} failed: {exc}")
        else:
            log.info(
                "site %s: checkpoint of %s sent: %d bytes in %.3f s (%.1f MB/s, %d attempts)",
                self.site_id,
                job_id,
                result.size_bytes,
                result.duration_s,
                result.rate_bytes_per_s / 1e6,
                result.attempts,
            )
            self._operations.finish(key)
        self._state.transfer_tokens.pop(migration_id, None)
        self._save()

    def receive_manifest(
        self, migration_id: str, job_id: str, command: tuple[str, ...], source_site_id: str
    ) -> bool:
        """``PUT /v1/manifests/{migration_id}`` (agent to agent): how to run the job whose
        checkpoint comes for that migration. True when new, False for a repeat."""
        manifest = Manifest(job_id, command, source_site_id)
        existing = self._state.manifests.get(migration_id)
        if existing is not None:
            if existing != manifest:
                raise conflict(f"migration {migration_id} has another manifest")
            return False
        self._check_command(command)
        self._state.manifests[migration_id] = manifest
        self._save()
        return True

    def restore(
        self, job: JobSpec, migration_id: str, source_site_id: str, checkpoint: Checkpoint
    ) -> Operation:
        """``POST /v1/jobs/{job_id}/restore``: verify the received checkpoint and start the job
        from it, in the migration's reservation."""
        key: OperationKey = (migration_id, "restore")
        args = [job.job_id, job_spec_to_wire(job), source_site_id, checkpoint_to_wire(checkpoint)]
        previous = self._operations.previous(key, args)
        if previous is not None:
            return previous
        here = self._state.jobs.get(job.job_id)
        reservation = check_restore(
            migration_id,
            self._state.reservations.get(migration_id),
            job,
            self.site_id,
            None if here is None else here.state,
        )
        self._state.reservations[migration_id] = replace(reservation, state="consumed")
        self._state.jobs[job.job_id] = AgentJob(
            spec=job,
            command=None,
            state="restoring",
            work_remaining_gpu_h=job.work_remaining_gpu_h,
            progressed_at=self.clock.now(),
        )
        expected_s = float(restore_s(job.checkpoint_gb, self.settings.restore_gb_per_s))
        op = self._operations.begin(key, args, job.job_id, expected_s, None)
        self._save()
        self._spawn(key, self._run_restore(key))
        return op

    async def _run_restore(self, key: OperationKey) -> None:
        migration_id = key[0]
        job_id, _spec, _source, wire_checkpoint = self._operations.args(key)
        expected_sha256 = str(wire_checkpoint["sha256"]).lower()
        job = self._state.jobs.get(job_id)
        if job is not None and job.state == "running" and job.command is not None:
            # Started in an earlier run of the agent, which died before the job confirmed;
            # the supervisor's recovery has run it on: wait for its confirmation again.
            await self._confirm_resume(key, job)
            return
        if job is None or job.state != "restoring":
            self._operations.finish(key, error="the job left its restoring state")
            self._save()
            return
        manifest = self._state.manifests.get(migration_id)
        try:
            received = verified_checkpoint(self.received_dir, migration_id)
        except InputError as exc:
            self._fail_restore(key, job, f"no checkpoint can arrive for this migration id: {exc}")
            return
        if manifest is None or manifest.job_id != job_id:
            self._fail_restore(key, job, "no manifest of the job arrived from the source")
            return
        if received is None:
            self._fail_restore(key, job, "no verified checkpoint arrived from the source")
            return
        size_bytes, sha256 = await hash_file(received)
        if sha256 != expected_sha256:
            self._fail_restore(
                key, job, f"the received checkpoint's sha256 is {sha256}, not {expected_sha256}"
            )
            return
        paths = self._jobs.paths(job_id)
        paths.create()
        job.checkpoint_sequence += 1
        local = paths.checkpoint_file(job.checkpoint_sequence)
        await asyncio.to_thread(_link_or_copy, received, local)
        self._jobs.replace_checkpoint(job, CheckpointFile(local, size_bytes, sha256))
        job.command = manifest.command
        self._jobs.set_state(job, "running")
        try:
            await self._jobs.launch(job, self._state.holds.pop(migration_id, None))
        except OSError as exc:
            self._fail_restore(key, job, f"the job cannot start here: {exc}")
            return
        self._save()
        await self._confirm_resume(key, job)

    async def _confirm_resume(self, key: OperationKey, job: AgentJob) -> None:
        """Finish a restore whose job is started: at once, or, for a job whose command names
        ``{resumed_path}``, when the job has created that file (it loaded its checkpoint).

        The restore fails when the job stops running here before it confirms (the supervisor
        gave up on it) or does not confirm within ``resume_timeout_s``; the job is then
        stopped and forgotten here, and the gateway resumes it at the source."""
        if job.command is not None and confirms_resume(job.command):
            marker = self._jobs.paths(job.job_id).resumed_marker
            deadline = time.monotonic() + self.settings.resume_timeout_s
            while not marker.exists():
                if self._state.jobs.get(job.job_id) is not job or job.state != "running":
                    self._fail_restore(key, job, "the job stopped before it confirmed its resume")
                    return
                if time.monotonic() >= deadline:
                    self._jobs.abandon(job)
                    self._fail_restore(
                        key,
                        job,
                        f"the job did not confirm its resume within "
                        f"{self.settings.resume_timeout_s:g} s",
                    )
                    return
                await asyncio.sleep(_RESUME_POLL_S)
        self._operations.finish(key, checkpoint=job.checkpoint)
        self._save()
        self._forget_received(key[0])  # the job holds its own link to the file

    def _fail_restore(self, key: OperationKey, job: AgentJob, why: str) -> None:
        """The job never ran here: forget it, free its reservation and what arrived for it."""
        self._operations.finish(key, error=why)
        if self._state.jobs.get(job.job_id) is job:
            del self._state.jobs[job.job_id]
            shutil.rmtree(self._jobs.paths(job.job_id).checkpoints_dir, ignore_errors=True)
        reservation = self._state.reservations.get(key[0])
        if reservation is not None and reservation.state == "consumed":
            self._state.reservations[key[0]] = replace(reservation, state="released")
        self._release_hold(key[0])
        self._save()
        self._forget_received(key[0])

    def _forget_received(self, migration_id: str) -> None:
        """Delete what another agent sent for a migration that no longer needs it."""
        try:
            paths = store_paths(self.received_dir, migration_id)
        except InputError:
            return  # no checkpoint can have arrived under an id the store refuses
        paths.final.unlink(missing_ok=True)
        discard(paths)

    async def resume(self, job_id: str, migration_id: str) -> JobStatus:
        """``POST /v1/jobs/{job_id}/resume``: run a checkpointing or checkpointed job again,
        from its newest checkpoint."""
        job = self._job(job_id)
        if (migration_id, job_id) in self._state.resumed or job.state in ("running", "paused"):
            self._state.resumed.add((migration_id, job_id))
            self._save()
            return job.status(self.clock.now())
        if job.state not in ("checkpointing", "checkpointed"):
            raise conflict(f"job {job_id} is {job.state}; it cannot resume")
        if job.state == "checkpointed" and not self._fits(job.spec.gpus, job.spec.power_kw):
            raise conflict(self._why_not(job.spec.gpus, job.spec.power_kw))
        why = f"aborted: job resumed at {self.site_id} (migration {migration_id})"
        for key in self._operations.in_progress_of(job_id):
            task = self._operation_tasks.pop(key, None)
            if task is not None:
                task.cancel()
            if key[1] == "transfer":
                self._state.transfer_tokens.pop(key[0], None)
            self._operations.finish(key, error=why)
        was = job.state
        job.checkpoint_migration_id = None
        self._jobs.set_state(job, "running")
        if was == "checkpointed":
            try:
                await self._jobs.launch(job)
            except OSError as exc:
                self._jobs.give_up(job, f"cannot start: {exc}")
                self._save()
                raise conflict(f"job {job_id} cannot start: {exc}") from exc
        # A checkpointing job's process is still stopping; its exit starts it again.
        self._state.resumed.add((migration_id, job_id))
        self._save()
        log.info("site %s: job %s resumed (migration %s)", self.site_id, job_id, migration_id)
        return job.status(self.clock.now())

    # ---- levers: pause and unpause (gateway.agent.levers) ----------------------------------

    async def pause(self, job_id: str, lever_id: str) -> JobStatus:
        """``POST /v1/jobs/{job_id}/pause``: stop the job where it runs, holding its GPUs."""
        return await self._levers.use(self._job(job_id), lever_id, "pause")

    async def unpause(self, job_id: str, lever_id: str) -> JobStatus:
        """``POST /v1/jobs/{job_id}/unpause``: let a paused job go on where it stopped."""
        return await self._levers.use(self._job(job_id), lever_id, "unpause")

    def release(self, job_id: str, migration_id: str) -> None:
        """``POST /v1/jobs/{job_id}/release``: forget a job whose transfer completed, and its
        checkpoints (its output directory and log stay)."""
        job = self._state.jobs.get(job_id)
        if job is None or (migration_id, job_id) in self._state.released_jobs:
            return
        check_release(
            job_id, migration_id, job.state, self._operations.get((migration_id, "transfer"))
        )
        del self._state.jobs[job_id]
        self._state.released_jobs.add((migration_id, job_id))
        self._save()
        paths = self._jobs.paths(job_id)
        shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
        paths.pending_checkpoint.unlink(missing_ok=True)
        log.info("site %s: released job %s (migration %s)", self.site_id, job_id, migration_id)


def _link_or_copy(source: os.PathLike[str], target: os.PathLike[str]) -> None:
    """Hard-link ``source`` to ``target`` (a copy across file systems), replacing ``target``."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def job_runner(settings: AgentSettings) -> JobRunner:
    """What runs the site's jobs: Slurm batch jobs with ``[slurm]``, else processes here."""
    if settings.slurm is None:
        return ProcessRunner()
    from gateway.agent.slurm.runner import SlurmRunner  # only where the site runs Slurm

    return SlurmRunner(settings.slurm)
