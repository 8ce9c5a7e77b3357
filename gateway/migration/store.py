"""A migration as the dispatcher reads it, and each of its transitions as it is committed.

Every function here is one unit of work on the gateway's database: a read of a migration with
its job and its two sites (:class:`Flight`), or one transition of its state, committed before
the dispatcher sends the site-controller call that the transition announces. ``now`` is the
gateway's clock, read by the caller. No site calls, no logging: the dispatcher
(:mod:`gateway.migration.dispatch`) decides and tells.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import unit_of_work
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.records import Checkpoint, JobSpec, Operation
from models import FINAL_STATES, Job, Migration, Site


@dataclass(frozen=True)
class Flight:
    """A migration as one step needs it, read in one unit of work."""

    id: str
    state: str
    spec: JobSpec
    source_id: str
    target_id: str
    target_url: str
    bandwidth_gbps: float
    """The slower of the two sites' WAN links [Gbit/s]."""
    checkpoint_sha256: str | None
    entered_at: datetime | None
    """When the current state was committed."""
    checkpoint_started: bool
    restore_started: bool
    """The restore was announced: the target may have started the job."""

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(size_gb=self.spec.checkpoint_gb, sha256=self.checkpoint_sha256 or "")


IN_FLIGHT = Migration.state.not_in(FINAL_STATES) | (
    (Migration.state == "aborted") & Migration.cleaned_up_at.is_(None)
)
"""Migrations not yet ended, or aborted and not yet cleaned up."""


def create(
    sessions: sessionmaker[Session], decision: MigrationDecision, now: datetime
) -> str | None:
    """Record a planned migration and mark its job migrating; its id, or None when the job
    is gone, not running at the decision's source, or already moving."""
    with unit_of_work(sessions) as session:
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
        return migration.id


def pending_ids(sessions: sessionmaker[Session]) -> list[str]:
    """The migrations in flight (:data:`IN_FLIGHT`), oldest plan first."""
    with unit_of_work(sessions) as session:
        rows = session.scalars(select(Migration.id).where(IN_FLIGHT).order_by(Migration.planned_at))
        return list(rows)


def sites_in_flight(sessions: sessionmaker[Session]) -> set[str]:
    """The sources and targets of the migrations not yet ended or cleaned up."""
    with unit_of_work(sessions) as session:
        rows = session.execute(
            select(Migration.source_site_id, Migration.target_site_id).where(IN_FLIGHT)
        )
        return {site_id for row in rows for site_id in row}


def load(sessions: sessionmaker[Session], migration_id: str) -> Flight:
    """The migration with its job and its two sites; KeyError when there is none."""
    with unit_of_work(sessions) as session:
        m = session.get(Migration, migration_id)
        if m is None:
            raise KeyError(migration_id)
        job = session.get(Job, m.job_id)
        source = session.get(Site, m.source_site_id)
        target = session.get(Site, m.target_site_id)
        assert job is not None and source is not None and target is not None  # foreign keys
        return Flight(
            id=m.id,
            state=m.state,
            spec=JobSpec(
                job_id=job.id,
                gpus=job.gpus,
                power_kw=job.power_kw,
                checkpoint_gb=m.checkpoint_gb,
                work_remaining_gpu_h=job.work_remaining_gpu_h,
                migratable=job.migratable,
                flex_tier=job.flex_tier,
            ),
            source_id=m.source_site_id,
            target_id=m.target_site_id,
            target_url=target.controller_url,
            bandwidth_gbps=min(source.wan_bandwidth_gbps, target.wan_bandwidth_gbps),
            checkpoint_sha256=m.checkpoint_sha256,
            entered_at=getattr(m, f"{m.state}_at", None),
            checkpoint_started=m.checkpointing_at is not None,
            restore_started=m.restoring_at is not None,
        )


def count_failure(
    sessions: sessionmaker[Session], migration_id: str, error: str, now: datetime
) -> int:
    """Count one more failed attempt of the migration's step and keep its error (an aborted
    migration keeps why it aborted); the attempts so far."""
    with unit_of_work(sessions) as session:
        m = session.get(Migration, migration_id)
        assert m is not None
        m.attempts += 1
        if m.state != "aborted":
            m.error = error
        m.updated_at = now
        return m.attempts


def transition(
    sessions: sessionmaker[Session],
    migration_id: str,
    state: str,
    now: datetime,
    *,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Commit ``state``; with ``checkpoint`` (the one the source wrote) also its sha256 and
    its real size, which the transfer limit, the restore and the records use from then on."""
    with unit_of_work(sessions) as session:
        m = session.get(Migration, migration_id)
        assert m is not None
        if m.state != state:
            setattr(m, f"{state}_at", now)
        m.state = state
        if checkpoint is not None and checkpoint.sha256:
            m.checkpoint_sha256 = checkpoint.sha256
            m.checkpoint_gb = checkpoint.size_gb
        m.attempts = 0
        m.error = None
        m.updated_at = now


def complete(
    sessions: sessionmaker[Session], migration_id: str, restore: Operation, now: datetime
) -> None:
    """Commit ``completed``: the job runs at the target since ``restore`` was done."""
    with unit_of_work(sessions) as session:
        m = session.get(Migration, migration_id)
        assert m is not None
        job = session.get(Job, m.job_id)
        assert job is not None
        m.state = "completed"
        m.completed_at = now
        running_at = restore.done_at or now
        if m.checkpointing_at is not None:
            m.downtime_s = max(0.0, (running_at - m.checkpointing_at).total_seconds())
        m.migration_kwh = m.expected_kwh
        m.cleaned_up_at = now
        m.updated_at = now
        job.site_id = m.target_site_id
        job.state = "running"
        job.arrived_at_site_at = running_at
        job.updated_at = now


def abort(sessions: sessionmaker[Session], migration_id: str, why: str, now: datetime) -> None:
    """Commit ``aborted`` with why; nothing when the migration has ended already."""
    with unit_of_work(sessions) as session:
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


def cleaned_up(sessions: sessionmaker[Session], flight: Flight, now: datetime) -> None:
    """Commit the end of an abort's clean-up: the job runs at the source again."""
    with unit_of_work(sessions) as session:
        m = session.get(Migration, flight.id)
        job = session.get(Job, flight.spec.job_id)
        assert m is not None and job is not None
        m.cleaned_up_at = now
        m.updated_at = now
        job.state = "running"
        job.site_id = m.source_site_id
        job.updated_at = now
