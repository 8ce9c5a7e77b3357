"""Drives each migration through its states (design section 6).

    planned -> target_reserved -> checkpointing -> transferring -> restoring -> completed
         \\___________\\________________\\______________\\___________-> aborted

Every transition is committed before the site-controller call it announces, and every call
carries the migration id as its idempotency key. ``advance`` is therefore safe to repeat at
any point, after a crash too: a state re-issues its call (a no-op for the controller when it
already happened), checks the operation, and only then commits the next state.

An abort is committed first, then its clean-up (release the target's reservation, resume the
job at the source) runs until it succeeds; ``cleaned_up_at`` records that it did.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.db import unit_of_work
from gateway.errors import SiteControllerError
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from gateway.sites.schema import Checkpoint, JobSpec, Operation
from models import FINAL_STATES, Job, Migration, Site

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchParams:
    max_attempts: int = 5
    """Transient failures in a row before a migration that has not started restoring aborts."""
    timeout_margin: float = 3.0
    """An operation may take this many times the expected time (plus slack) before aborting."""
    timeout_slack_s: float = 120.0
    efficiency: float = 0.9


class Dispatcher:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        clients: Mapping[str, SiteControllerClient],
        clock: Clock,
        params: DispatchParams | None = None,
    ) -> None:
        self._sessions = session_factory
        self._clients = clients
        self._clock = clock
        self._params = params or DispatchParams()

    # -- creation -------------------------------------------------------------------------

    def create(self, decision: MigrationDecision) -> str | None:
        """Record a planned migration; None when the job is gone or already moving."""
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            job = session.get(Job, decision.job_id, with_for_update=True)
            if job is None or job.state != "running" or job.site_id != decision.source_site_id:
                return None
            busy = session.scalar(
                select(Migration.id).where(
                    Migration.job_id == job.id, Migration.state.not_in(FINAL_STATES)
                )
            )
            if busy is not None:
                return None
            migration = Migration(
                id=f"mig-{uuid.uuid4().hex}",
                job_id=job.id,
                source_site_id=decision.source_site_id,
                target_site_id=decision.target_site_id,
                state="planned",
                reason=decision.reason,
                event_ref=decision.event_ref,
                checkpoint_gb=job.checkpoint_gb,
                expected_s=decision.expected_s,
                expected_kwh=decision.expected_kwh,
                attempts=0,
                planned_at=now,
                updated_at=now,
            )
            session.add(migration)
            job.state = "migrating"
            job.updated_at = now
            log.info(
                "planned %s: job %s %s -> %s (%s)",
                migration.id,
                job.id,
                decision.source_site_id,
                decision.target_site_id,
                decision.reason,
            )
            return migration.id

    # -- progress -------------------------------------------------------------------------

    def pending_ids(self) -> list[str]:
        with unit_of_work(self._sessions) as session:
            rows = session.scalars(
                select(Migration.id)
                .where(
                    Migration.state.not_in(FINAL_STATES)
                    | ((Migration.state == "aborted") & Migration.cleaned_up_at.is_(None))
                )
                .order_by(Migration.planned_at)
            )
            return list(rows)

    async def advance_all(self) -> None:
        for migration_id in self.pending_ids():
            await self.advance(migration_id)

    async def advance(self, migration_id: str) -> str:
        """Move one migration on as far as it can go now; returns its state."""
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            if m is None:
                raise KeyError(migration_id)
            state = m.state
        try:
            while True:
                new_state = await self._step(migration_id, state)
                if new_state == state:
                    return state
                state = new_state
        except SiteControllerError as exc:
            return self._on_error(migration_id, exc)

    def _on_error(self, migration_id: str, exc: SiteControllerError) -> str:
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            assert m is not None
            m.attempts += 1
            m.error = str(exc)
            m.updated_at = self._clock.now()
            state = m.state
            attempts = m.attempts
        if state == "aborted":
            return state
        restoring = state in ("restoring",)
        if (not exc.transient or attempts >= self._params.max_attempts) and not restoring:
            log.warning("aborting %s in %s: %s", migration_id, state, exc)
            self._commit_abort(migration_id, str(exc))
            return "aborted"
        log.info("%s: %s failed (attempt %d), will retry: %s", migration_id, state, attempts, exc)
        return state

    async def _step(self, migration_id: str, state: str) -> str:
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            job = session.get(Job, m.job_id) if m is not None else None
            target = session.get(Site, m.target_site_id) if m is not None else None
            assert m is not None and job is not None and target is not None
            spec = JobSpec(
                job_id=job.id,
                gpus=job.gpus,
                power_kw=job.power_kw,
                checkpoint_gb=job.checkpoint_gb,
                work_remaining_gpu_h=job.work_remaining_gpu_h,
                migratable=job.migratable,
                flex_tier=job.flex_tier,
            )
            source_id, target_id = m.source_site_id, m.target_site_id
            target_url, target_bandwidth = target.controller_url, target.wan_bandwidth_gbps
            sha256, checkpoint_gb = m.checkpoint_sha256, m.checkpoint_gb
            expected_s = m.expected_s
        source_client, target_client = self._clients[source_id], self._clients[target_id]

        if state == "planned":
            self._transition(migration_id, "target_reserved")
            await target_client.reserve(migration_id, spec.job_id, spec.gpus, spec.power_kw)
            return "target_reserved"
        if state == "target_reserved":
            await target_client.reserve(migration_id, spec.job_id, spec.gpus, spec.power_kw)
            self._transition(migration_id, "checkpointing")
            await source_client.checkpoint(spec.job_id, migration_id)
            return "checkpointing"
        if state == "checkpointing":
            op = await source_client.operation(migration_id, "checkpoint")
            if op is None:
                op = await source_client.checkpoint(spec.job_id, migration_id)
            if not self._finished(op, expected_s):
                return state
            assert op.checkpoint is not None
            self._transition(migration_id, "transferring", sha256=op.checkpoint.sha256)
            await source_client.transfer(
                spec.job_id,
                migration_id,
                target_id,
                target_url,
                self._bandwidth(source_id, target_bandwidth),
            )
            return "transferring"
        if state == "transferring":
            op = await source_client.operation(migration_id, "transfer")
            if op is None:
                op = await source_client.transfer(
                    spec.job_id,
                    migration_id,
                    target_id,
                    target_url,
                    self._bandwidth(source_id, target_bandwidth),
                )
            if not self._finished(op, expected_s):
                return state
            self._transition(migration_id, "restoring")
            checkpoint = Checkpoint(size_gb=checkpoint_gb, sha256=sha256 or "")
            await target_client.restore(spec, migration_id, source_id, checkpoint)
            return "restoring"
        if state == "restoring":
            op = await target_client.operation(migration_id, "restore")
            if op is None:
                checkpoint = Checkpoint(size_gb=checkpoint_gb, sha256=sha256 or "")
                op = await target_client.restore(spec, migration_id, source_id, checkpoint)
            if op.state == "in_progress":
                return state
            if op.state == "failed":
                self._commit_abort(migration_id, op.error or "restore failed at the target")
                return "aborted"
            # Running at the target: forget the source's copy, then complete.
            await source_client.release_job(spec.job_id, migration_id)
            self._complete(migration_id, op)
            return "completed"
        if state == "aborted":
            await self._clean_up(migration_id, spec.job_id, source_client, target_client)
            return state
        return state

    def _bandwidth(self, source_id: str, target_bandwidth_gbps: float) -> float:
        with unit_of_work(self._sessions) as session:
            source = session.get(Site, source_id)
            assert source is not None
            return min(source.wan_bandwidth_gbps, target_bandwidth_gbps)

    def _finished(self, op: Operation, expected_s: float) -> bool:
        """True when ``op`` is done; aborts on failure or when it overruns its time.

        No operation of a migration may take longer than the whole migration is expected to
        (the feasibility model's ``expected_s``) times the margin, plus the slack.
        """
        if op.state == "done":
            return True
        if op.state == "failed":
            raise SiteControllerError(
                f"{op.kind} failed: {op.error or 'no detail'}", transient=False
            )
        limit_s = expected_s * self._params.timeout_margin + self._params.timeout_slack_s
        elapsed_s = (self._clock.now() - op.started_at).total_seconds()
        if elapsed_s > limit_s:
            raise SiteControllerError(
                f"{op.kind} overran: {elapsed_s:.0f} s > {limit_s:.0f} s", transient=False
            )
        return False

    # -- transitions ----------------------------------------------------------------------

    def _transition(self, migration_id: str, state: str, *, sha256: str | None = None) -> None:
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            assert m is not None
            m.state = state
            setattr(m, f"{state}_at", now)
            if sha256 is not None:
                m.checkpoint_sha256 = sha256
            m.attempts = 0
            m.error = None
            m.updated_at = now
        log.debug("%s -> %s", migration_id, state)

    def _complete(self, migration_id: str, op: Operation) -> None:
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            assert m is not None
            job = session.get(Job, m.job_id)
            assert job is not None
            m.state = "completed"
            m.completed_at = now
            running_at = op.done_at or now
            if m.checkpointing_at is not None:
                m.downtime_s = max(0.0, (running_at - m.checkpointing_at).total_seconds())
            m.migration_kwh = m.expected_kwh
            m.cleaned_up_at = now
            m.updated_at = now
            job.site_id = m.target_site_id
            job.state = "running"
            job.arrived_at_site_at = running_at
            job.updated_at = now
        log.info("completed %s", migration_id)

    def _commit_abort(self, migration_id: str, why: str) -> None:
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            assert m is not None
            if m.state in FINAL_STATES:
                return
            m.state = "aborted"
            m.aborted_at = now
            m.error = why
            m.updated_at = now
            if m.checkpointing_at is not None:
                m.downtime_s = max(0.0, (now - m.checkpointing_at).total_seconds())

    async def _clean_up(
        self,
        migration_id: str,
        job_id: str,
        source: SiteControllerClient,
        target: SiteControllerClient,
    ) -> None:
        await target.release_reservation(migration_id)
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            assert m is not None
            checkpoint_started = m.checkpointing_at is not None
        if checkpoint_started:
            try:
                await source.resume(job_id, migration_id)
            except SiteControllerError as exc:
                if exc.transient:
                    raise
                # Refused: fine when the job runs or finished there anyway (it may have finished
                # before its checkpoint); otherwise keep trying, its checkpoint stays safe there.
                reported = (await source.status()).job(job_id)
                if reported is None or reported.state not in ("running", "finished"):
                    raise
        now = self._clock.now()
        with unit_of_work(self._sessions) as session:
            m = session.get(Migration, migration_id)
            job = session.get(Job, job_id)
            assert m is not None and job is not None
            m.cleaned_up_at = now
            m.updated_at = now
            job.state = "running"
            job.site_id = m.source_site_id
            job.updated_at = now
        log.info("aborted %s cleaned up: job %s runs at %s", migration_id, job_id, m.source_site_id)
