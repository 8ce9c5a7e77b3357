"""Drives each migration through its states (``docs/architecture.md``, 'Migration states').

    planned -> target_reserved -> checkpointing -> transferring -> restoring -> completed
         \\___________\\________________\\______________\\___________-> aborted

Every transition is committed before the site-controller call it announces, and every call
carries the migration id as its idempotency key. ``advance`` is therefore safe to repeat at
any point, after a crash too: a state re-issues its call (a no-op for the controller when it
already happened), checks the operation, and only then commits the next state.

Failures. The site controller client retries a call that failed transiently (no answer,
timeout, 5xx) with back-off and jitter a bounded number of times (:class:`RetryPolicy`). When
it gives up, the migration stays where it is and the next round tries again, until its step
overruns the limit of :mod:`gateway.migration.deadlines` (the feasibility model's expected
time times a margin, plus a floor, from the moment the step was committed); then it aborts.
An answer that refuses (4xx) or an operation that failed aborts at once. Restoring is the
exception: once the restore is announced the target may be starting the job, and resuming it
at the source could run it twice, so a restoring migration waits for the target's answer
however long it takes (an overrun is logged once), and aborts only when the target says the
restore failed or refuses to start it.

An abort is committed first, then its clean-up (resume the job at the source, release the
target's reservation) runs until both succeed; ``cleaned_up_at`` records that they did.

Between polls. An operation in progress tells when it is expected done (``done_at``);
:attr:`Dispatcher.next_due_at` is the earliest such instant, at which the daemon advances the
migrations again (:meth:`Gateway.advance_once`) instead of waiting for its next poll: a
migration takes about its checkpoint, transfer and restore times, not a poll round per step.

After a restart, every migration in flight is first reconciled with both sites
(:mod:`gateway.migration.reconcile`) and continues from the state their answers imply.

One writer per migration. The plan round advances the migrations it creates while the poll
round advances every migration in flight; the two must never drive one migration at once (two
restore calls built from two readings of the job, one refused with 409, the refusal taken for
an abort and the job resumed at the source while the target runs it: one job at two sites).
:meth:`Dispatcher.advance` therefore takes the migration for itself; a round that finds it
taken leaves it to the round that holds it. An ambiguous answer is settled by asking, never
by guessing: a refused restore is an abort only once the target says it has no restore of
this migration and does not run the job, and an abort is cleaned up (the job resumed at the
source) only once the target confirms it does not run the job
(:mod:`gateway.migration.settle`).

This module decides; :mod:`gateway.migration.store` reads each migration and commits each
transition, one unit of work each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.errors import SiteControllerError
from gateway.migration import store
from gateway.migration.deadlines import StepTimeouts, overrun, timed_state
from gateway.migration.reconcile import Reconciliation, SourceAnswers, TargetAnswers, reconcile
from gateway.migration.settle import (
    RestoreRefused,
    resume_at_source,
    start_restore,
    target_does_not_run,
)
from gateway.migration.store import Flight
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import Checkpoint, Operation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchParams:
    timeouts: StepTimeouts = field(default_factory=StepTimeouts)
    """How long each step may take (``[feasibility]`` in the settings)."""


class _Refused(SiteControllerError):
    """A step that cannot go on: the migration aborts."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


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
        self._reconciled: set[str] = set()
        """Migrations this process created or has reconciled with both sites."""
        self._reported: set[tuple[str, str]] = set()
        """(migration, problem) already logged: a change is logged once, not every round."""
        self._advancing: set[str] = set()
        """Migrations a task is advancing now: one writer per migration."""
        self._due_at: dict[str, datetime] = {}
        """When each migration's operation in progress is expected done (the site's
        ``done_at``): the instant to advance it again, rather than wait for the next poll."""

    # -- creation -------------------------------------------------------------------------

    def create(self, decision: MigrationDecision) -> str | None:
        """Record a planned migration; None when the job is gone or already moving."""
        migration_id = store.create(self._sessions, decision, self._clock.now())
        if migration_id is None:
            return None
        log.info(
            "planned %s: job %s %s -> %s (%s)",
            migration_id,
            decision.job_id,
            decision.source_site_id,
            decision.target_site_id,
            decision.reason,
        )
        self._reconciled.add(migration_id)
        return migration_id

    # -- progress -------------------------------------------------------------------------

    def pending_ids(self) -> list[str]:
        return store.pending_ids(self._sessions)

    def sites_in_flight(self) -> set[str]:
        """The sources and targets of the migrations not yet ended or cleaned up."""
        return store.sites_in_flight(self._sessions)

    async def advance_all(self) -> None:
        for migration_id in self.pending_ids():
            await self.advance(migration_id)

    @property
    def next_due_at(self) -> datetime | None:
        """The earliest instant an operation in progress is expected done, or None."""
        return min(self._due_at.values(), default=None)

    def advancing(self, migration_id: str) -> bool:
        """True while a task is advancing the migration."""
        return migration_id in self._advancing

    async def advance(self, migration_id: str) -> str:
        """Move one migration on as far as it can go now; returns its state.

        One task at a time: when another task is advancing the migration, this call leaves
        it to that task and returns the stored state at once."""
        if migration_id in self._advancing:
            log.debug("%s is being advanced by another round; left to it", migration_id)
            return self._load(migration_id).state
        self._advancing.add(migration_id)
        self._due_at.pop(migration_id, None)
        try:
            return await self._advance(migration_id)
        finally:
            self._advancing.discard(migration_id)

    async def _advance(self, migration_id: str) -> str:
        state = self._load(migration_id).state
        if timed_state(state) is None:
            self._reconciled.add(migration_id)  # planned: nothing was sent to any site yet
        while True:
            try:
                if migration_id not in self._reconciled and timed_state(state) is not None:
                    state = await self._reconcile(self._load(migration_id))
                    if migration_id not in self._reconciled:
                        return state  # contradictory answers: held for an operator
                while True:
                    new_state = await self._step(self._load(migration_id))
                    if new_state == state:
                        return state
                    state = new_state
            except SiteControllerError as exc:
                new_state = self._on_error(migration_id, exc)
                if new_state == state:
                    return state
                state = new_state  # just aborted: clean up at once

    def _load(self, migration_id: str) -> Flight:
        return store.load(self._sessions, migration_id)

    def _on_error(self, migration_id: str, exc: SiteControllerError) -> str:
        flight = self._load(migration_id)
        attempts = store.count_failure(self._sessions, migration_id, str(exc), self._clock.now())
        state = flight.state
        if state == "aborted":
            self._report(migration_id, "clean-up", "clean-up of %s failed, will retry: %s", exc)
            return state
        if state == "restoring":
            self._report(migration_id, "restoring", "%s waits for the target's answer: %s", exc)
            return state
        if not exc.transient:
            log.warning("aborting %s in %s: %s", migration_id, state, exc)
            self._commit_abort(migration_id, str(exc))
            return "aborted"
        late = self._overrun(flight)
        if late is not None:
            log.warning("aborting %s: %s; last failure: %s", migration_id, late, exc)
            self._commit_abort(migration_id, f"{late}; last failure: {exc}")
            return "aborted"
        self._report(
            migration_id,
            f"{state} failing",
            "%s: %s failed (round %d), will retry next round: %s",
            state,
            attempts,
            exc,
        )
        return state

    def _overrun(self, flight: Flight) -> str | None:
        """Why the flight's step is past its limit, or None."""
        state = timed_state(flight.state)
        if state is None or flight.entered_at is None:
            return None
        late = overrun(
            state,
            flight.entered_at,
            self._clock.now(),
            flight.spec.checkpoint_gb,
            flight.bandwidth_gbps,
            self._params.timeouts,
        )
        return None if late is None else str(late)

    def _report(self, migration_id: str, problem: str, message: str, *args: object) -> None:
        """Log a lasting problem of a migration once, at warning level; later at debug."""
        key = (migration_id, problem)
        level = logging.DEBUG if key in self._reported else logging.WARNING
        self._reported.add(key)
        log.log(level, message, migration_id, *args)

    # -- reconciliation -------------------------------------------------------------------

    async def _reconcile(self, flight: Flight) -> str:
        """Ask both sites what they know of the migration and act on it (after a restart)."""
        source = self._clients[flight.source_id]
        target = self._clients[flight.target_id]
        job_id, mid = flight.spec.job_id, flight.id
        source_job = (await source.status()).job(job_id)
        checkpoint = await source.operation(mid, "checkpoint")
        transfer = await source.operation(mid, "transfer")
        target_job = (await target.status()).job(job_id)
        reservation = await target.reservation(mid, job_id, flight.spec.gpus, flight.spec.power_kw)
        restore = await target.operation(mid, "restore")
        stored = timed_state(flight.state)
        assert stored is not None  # advance reconciles only these
        decision = reconcile(
            stored,
            SourceAnswers(
                job=None if source_job is None else source_job.state,
                checkpoint=None if checkpoint is None else checkpoint.state,
                transfer=None if transfer is None else transfer.state,
            ),
            TargetAnswers(
                job=None if target_job is None else target_job.state,
                reservation=reservation,
                restore=None if restore is None else restore.state,
            ),
        )
        written = None if checkpoint is None else checkpoint.checkpoint
        return self._apply(flight, decision, written)

    def _apply(self, flight: Flight, decision: Reconciliation, written: Checkpoint | None) -> str:
        if decision.action == "hold":
            self._report(
                flight.id,
                "inconsistent",
                "%s needs an operator: %s (stored state %s); asking again next round",
                decision.reason,
                flight.state,
            )
            return flight.state
        self._reconciled.add(flight.id)
        if decision.action == "abort":
            log.warning("reconciled %s in %s: abort, %s", flight.id, flight.state, decision.reason)
            self._commit_abort(flight.id, f"reconciled after a restart: {decision.reason}")
            return "aborted"
        log.info(
            "reconciled %s: %s, continuing from %s (stored %s)",
            flight.id,
            decision.reason,
            decision.state,
            flight.state,
        )
        if decision.state != flight.state or (
            written is not None and written.sha256 and not flight.checkpoint_sha256
        ):
            self._transition(flight.id, decision.state, checkpoint=written)
        return decision.state

    # -- the steps ------------------------------------------------------------------------

    async def _step(self, f: Flight) -> str:
        source, target = self._clients[f.source_id], self._clients[f.target_id]
        spec, mid = f.spec, f.id
        if f.state == "planned":
            self._transition(mid, "target_reserved")
            await target.reserve(mid, spec.job_id, spec.gpus, spec.power_kw)
            return "target_reserved"
        if f.state == "target_reserved":
            await target.reserve(mid, spec.job_id, spec.gpus, spec.power_kw)
            self._transition(mid, "checkpointing")
            await source.checkpoint(spec.job_id, mid)
            return "checkpointing"
        if f.state == "checkpointing":
            op = await source.operation(mid, "checkpoint")
            if op is None:
                op = await source.checkpoint(spec.job_id, mid)
            if not self._done(f, op):
                self._expect(mid, op)
                return f.state
            assert op.checkpoint is not None
            self._transition(mid, "transferring", checkpoint=op.checkpoint)
            await self._transfer(f, source, target)
            return "transferring"
        if f.state == "transferring":
            op = await source.operation(mid, "transfer")
            if op is None:
                op = await self._transfer(f, source, target)
            if not self._done(f, op):
                self._expect(mid, op)
                return f.state
            self._transition(mid, "restoring")
            return "restoring" if await self._restore(f, target) is not None else "aborted"
        if f.state == "restoring":
            op = await target.operation(mid, "restore")
            if op is None:
                op = await self._restore(f, target)
                if op is None:
                    return "aborted"
            if op.state == "in_progress":
                late = self._overrun(f)
                if late is not None:
                    self._report(mid, "restore overran", "%s: %s; still waiting", late)
                self._expect(mid, op)
                return f.state
            if op.state == "failed":
                self._commit_abort(mid, op.error or "restore failed at the target")
                return "aborted"
            # Running at the target: forget the source's copy, then complete.
            await source.release_job(spec.job_id, mid)
            self._complete(mid, op)
            return "completed"
        if f.state == "aborted":
            await self._clean_up(f, source, target)
        return f.state

    async def _transfer(
        self, f: Flight, source: SiteControllerClient, target: SiteControllerClient
    ) -> Operation:
        return await source.transfer(
            f.spec.job_id,
            f.id,
            f.target_id,
            f.target_url,
            f.bandwidth_gbps,
            target_token=target.token,
        )

    async def _restore(self, f: Flight, target: SiteControllerClient) -> Operation | None:
        """Start the restore at the target; None when the target refused it and says it holds
        no restore of this migration and does not run the job (committed as an abort)."""
        started = await start_restore(f, target)
        if isinstance(started, RestoreRefused):
            log.warning("aborting %s: the target refused the restore: %s", f.id, started.why)
            self._commit_abort(f.id, f"target refused the restore: {started.why}")
            return None
        return started

    def _expect(self, migration_id: str, op: Operation) -> None:
        """Advance the migration again when ``op`` (in progress) is expected done; an overdue
        one waits for the next poll round."""
        if op.done_at > self._clock.now():
            self._due_at[migration_id] = op.done_at

    def _done(self, f: Flight, op: Operation) -> bool:
        """True when ``op`` is done; a failed or overrunning operation aborts (raises)."""
        if op.state == "done":
            return True
        if op.state == "failed":
            raise _Refused(f"{op.kind} failed: {op.error or 'no detail'}")
        late = self._overrun(f)
        if late is not None:
            raise _Refused(late)
        return False

    # -- transitions ----------------------------------------------------------------------

    def _transition(
        self, migration_id: str, state: str, *, checkpoint: Checkpoint | None = None
    ) -> None:
        """Commit ``state`` (with the checkpoint the source wrote: :func:`store.transition`)."""
        store.transition(
            self._sessions, migration_id, state, self._clock.now(), checkpoint=checkpoint
        )
        log.debug("%s -> %s", migration_id, state)

    def _complete(self, migration_id: str, op: Operation) -> None:
        store.complete(self._sessions, migration_id, op, self._clock.now())
        log.info("completed %s", migration_id)

    def _commit_abort(self, migration_id: str, why: str) -> None:
        store.abort(self._sessions, migration_id, why, self._clock.now())

    async def _clean_up(
        self, f: Flight, source: SiteControllerClient, target: SiteControllerClient
    ) -> None:
        """Resume the job at the source (first: it runs again as soon as possible) and
        release the target's reservation; both are tried, each is safe to repeat."""
        failures: list[SiteControllerError] = []
        if f.restore_started:
            await target_does_not_run(f, target)
        if f.checkpoint_started:
            try:
                await resume_at_source(f, source)
            except SiteControllerError as exc:
                failures.append(exc)
        try:
            await target.release_reservation(f.id)
        except SiteControllerError as exc:
            failures.append(exc)
        if failures:
            raise failures[0]
        store.cleaned_up(self._sessions, f, self._clock.now())
        log.info("aborted %s cleaned up: job %s runs at %s", f.id, f.spec.job_id, f.source_id)
