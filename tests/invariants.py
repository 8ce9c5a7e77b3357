"""The three invariants of design section 6, checked while a test runs and at its end.

1. A job runs at no more than one site at any instant.
2. Every job is either running somewhere or has a verified checkpoint (size and sha256) at a
   known site: no job is ever lost.
3. Capacity reserved at a target is released when its migration ends, whichever way it ends.

:class:`InvariantMonitor` looks at the sites through probes (:class:`SimulatorProbe` reads a
simulated site in-process, so it consumes no injected fault and still sees a site whose
server is stopped; :class:`HttpProbe` asks any controller over its API, e.g. a real site
agent) and at the gateway's database. Use it as an async context manager: it samples every
``interval_s`` in the background; add :meth:`InvariantMonitor.sample` as a hook where state
changes (``sample_after_each_response`` for an aiohttp app) to see every instant; finish
with :meth:`InvariantMonitor.assert_held` and, once everything has stopped moving,
:meth:`InvariantMonitor.assert_settled`.

Live at a site: ``running``, ``checkpointing`` (the job still holds its state) or
``restoring``; ``finished`` counts as not lost. A migration has ended when it is
``completed``, or ``aborted`` with its clean-up done (``cleaned_up_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import unit_of_work
from gateway.sites.client import SiteControllerClient
from gateway.sites.schema import Checkpoint, JobState
from models import Job, Migration
from simulators.site_controller import SimulatedSite

LIVE_STATES: tuple[JobState, ...] = ("running", "checkpointing", "restoring")
_MAX_VIOLATIONS = 50


@dataclass(frozen=True)
class SiteView:
    """One site at one instant: the state of each job it lists, GPUs held by reservations."""

    jobs: Mapping[str, JobState]
    gpus_reserved: int


class SiteProbe(Protocol):
    """How the monitor looks at one site."""

    @property
    def site_id(self) -> str: ...

    async def view(self) -> SiteView:
        """The site now."""
        ...

    async def checkpoint(self, migration_id: str) -> Checkpoint | None:
        """The complete, verified checkpoint this site wrote for the migration, if any."""
        ...


class SimulatorProbe:
    """Reads a :class:`SimulatedSite` in-process."""

    def __init__(self, site: SimulatedSite) -> None:
        self._site = site

    @property
    def site_id(self) -> str:
        return self._site.site_id

    async def view(self) -> SiteView:
        status = self._site.status()
        return SiteView({job.job_id: job.state for job in status.jobs}, status.gpus_reserved)

    async def checkpoint(self, migration_id: str) -> Checkpoint | None:
        op = self._site.operations.get((migration_id, "checkpoint"))
        return op.checkpoint if op is not None and op.state == "done" else None


class HttpProbe:
    """Asks a site controller over its API (``GET /v1/status``, ``GET /v1/operations``)."""

    def __init__(self, client: SiteControllerClient) -> None:
        self._client = client

    @property
    def site_id(self) -> str:
        return self._client.site_id

    async def view(self) -> SiteView:
        status = await self._client.status()
        return SiteView({job.job_id: job.state for job in status.jobs}, status.gpus_reserved)

    async def checkpoint(self, migration_id: str) -> Checkpoint | None:
        op = await self._client.operation(migration_id, "checkpoint")
        return op.checkpoint if op is not None and op.state == "done" else None


@dataclass(frozen=True)
class _MigrationRow:
    id: str
    job_id: str
    source_site_id: str
    target_site_id: str
    state: str
    ended: bool
    checkpoint_gb: float
    checkpoint_sha256: str | None
    gpus: int


def _migrations(sessions: sessionmaker[Session]) -> dict[str, _MigrationRow]:
    with unit_of_work(sessions) as session:
        rows = session.execute(select(Migration, Job.gpus).join(Job, Job.id == Migration.job_id))
        return {
            m.id: _MigrationRow(
                id=m.id,
                job_id=m.job_id,
                source_site_id=m.source_site_id,
                target_site_id=m.target_site_id,
                state=m.state,
                ended=m.state == "completed"
                or (m.state == "aborted" and m.cleaned_up_at is not None),
                checkpoint_gb=m.checkpoint_gb,
                checkpoint_sha256=m.checkpoint_sha256,
                gpus=gpus,
            )
            for m, gpus in rows
        }


class InvariantMonitor:
    """Samples the sites and the gateway's database and records every broken invariant.

    probes: one per site; sessions: the gateway's database; job_ids: the jobs that must never
    be lost; interval_s: wall seconds between background samples.
    """

    def __init__(
        self,
        probes: Sequence[SiteProbe],
        sessions: sessionmaker[Session],
        job_ids: Iterable[str],
        *,
        interval_s: float = 0.02,
    ) -> None:
        self._probes = list(probes)
        self._sessions = sessions
        self._job_ids = tuple(job_ids)
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.samples = 0
        self.violations: list[str] = []

    # -- sampling -------------------------------------------------------------------------

    async def sample(self) -> None:
        """Look once and record what is wrong.

        The database is read before and after the sites: a migration counts as ended only if
        it had ended before the sites were read, and one planned meanwhile is accounted for.
        """
        before = _migrations(self._sessions)
        views = {probe.site_id: await probe.view() for probe in self._probes}
        after = _migrations(self._sessions)
        self.samples += 1
        self._one_site_at_most(views)
        await self._nothing_lost(views, after)
        self._reservations_released(views, before, after)

    def _violation(self, message: str) -> None:
        if message not in self.violations and len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(message)

    def _one_site_at_most(self, views: Mapping[str, SiteView]) -> None:
        for job_id in self._job_ids:
            live = {site: v.jobs[job_id] for site, v in views.items() if _live(v, job_id)}
            if len(live) > 1:
                self._violation(f"invariant 1: job {job_id} is live at {live}")

    async def _nothing_lost(
        self, views: Mapping[str, SiteView], migrations: Mapping[str, _MigrationRow]
    ) -> None:
        probes = {probe.site_id: probe for probe in self._probes}
        for job_id in self._job_ids:
            if any(_live(v, job_id) or v.jobs.get(job_id) == "finished" for v in views.values()):
                continue
            holders = [site for site, v in views.items() if v.jobs.get(job_id) == "checkpointed"]
            verified = False
            for site in holders:
                for m in migrations.values():
                    if m.job_id != job_id or m.source_site_id != site:
                        continue
                    checkpoint = await probes[site].checkpoint(m.id)
                    if checkpoint is not None and _matches(checkpoint, m):
                        verified = True
            if not verified:
                where = {site: v.jobs.get(job_id) for site, v in views.items()}
                self._violation(
                    f"invariant 2: job {job_id} is neither live anywhere nor checkpointed with "
                    f"a verified checkpoint at a known site: {where}"
                )

    def _reservations_released(
        self,
        views: Mapping[str, SiteView],
        before: Mapping[str, _MigrationRow],
        after: Mapping[str, _MigrationRow],
    ) -> None:
        for site, view in views.items():
            may_hold = sum(
                m.gpus
                for m in after.values()
                if m.target_site_id == site and not (m.id in before and before[m.id].ended)
            )
            if view.gpus_reserved > may_hold:
                ended = sorted(
                    m.id for m in before.values() if m.ended and m.target_site_id == site
                )
                self._violation(
                    f"invariant 3: site {site} holds {view.gpus_reserved} reserved GPUs, but its "
                    f"unfinished migrations need at most {may_hold} (ended: {ended})"
                )

    # -- background sampling --------------------------------------------------------------

    async def __aenter__(self) -> InvariantMonitor:
        await self.sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.sample()

    def sample_after_each_response(self, app: web.Application) -> None:
        """Sample after every request ``app`` answers (before it starts serving)."""

        async def hook(_request: web.Request, _response: web.StreamResponse) -> None:
            await self.sample()

        app.on_response_prepare.append(hook)

    # -- verdicts -------------------------------------------------------------------------

    def assert_held(self) -> None:
        """No invariant was broken in any sample so far."""
        assert self.samples > 0, "the monitor never sampled"
        assert not self.violations, "\n".join(self.violations)

    async def assert_settled(self) -> None:
        """Once nothing moves any more: every migration ended, no GPU is reserved anywhere,
        each job runs (or finished) at exactly one site, where the gateway believes it is."""
        await self.sample()
        self.assert_held()
        migrations = _migrations(self._sessions)
        unended = {m.id: m.state for m in migrations.values() if not m.ended}
        assert not unended, f"migrations not ended: {unended}"
        views = {probe.site_id: await probe.view() for probe in self._probes}
        reserved = {site: v.gpus_reserved for site, v in views.items() if v.gpus_reserved}
        assert not reserved, f"GPUs still reserved: {reserved}"
        with unit_of_work(self._sessions) as session:
            stored = {job.id: (job.site_id, job.state) for job in session.scalars(select(Job))}
        for job_id in self._job_ids:
            where = {site: v.jobs[job_id] for site, v in views.items() if job_id in v.jobs}
            assert len(where) == 1, f"job {job_id} is listed at {where}, expected one site"
            [(site, state)] = where.items()
            assert state in ("running", "finished"), f"job {job_id} is {state} at {site}"
            assert stored.get(job_id) == (site, state), (
                f"the gateway believes job {job_id} is {stored.get(job_id)}, the sites say "
                f"{(site, state)}"
            )


def _live(view: SiteView, job_id: str) -> bool:
    return view.jobs.get(job_id) in LIVE_STATES


def _matches(checkpoint: Checkpoint, m: _MigrationRow) -> bool:
    if not math.isclose(checkpoint.size_gb, m.checkpoint_gb, rel_tol=1e-9):
        return False
    return m.checkpoint_sha256 is None or checkpoint.sha256 == m.checkpoint_sha256
