"""The fleet's invariants, checked while a test runs and at its end.

The checks themselves live in ``gateway/migration/invariants.py`` (``docs/architecture.md``,
'Invariants': one site at most, no job lost, reservations balance, no site over its GPUs); this
module keeps them running through a test. :class:`InvariantMonitor` looks at the sites through
probes (:class:`~simulators.probes.SimulatorProbe` reads a simulated site in-process, so it
consumes no injected fault and still sees a site whose server is stopped;
:class:`~gateway.migration.invariants.HttpProbe` asks any controller over its API, e.g. a real
site agent) and at the gateway's database. Use it as an async context manager: it samples every
``interval_s`` in the background; add :meth:`InvariantMonitor.sample` as a hook where state
changes (``sample_after_each_response`` for an aiohttp app) to see every instant; finish with
:meth:`InvariantMonitor.assert_held` and, once everything has stopped moving,
:meth:`InvariantMonitor.assert_settled`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import unit_of_work
from gateway.migration.invariants import (
    LIVE_STATES,
    HttpProbe,
    MigrationRow,
    SiteProbe,
    SiteView,
    Violation,
    checkpoints_to_verify,
    fetch_checkpoints,
    nothing_lost,
    one_site_at_most,
    read_migrations,
    reservations_balance,
    within_capacity,
)
from models import Job
from simulators.probes import SimulatorProbe

__all__ = [
    "LIVE_STATES",
    "HttpProbe",
    "InvariantMonitor",
    "SimulatorProbe",
    "SiteProbe",
    "SiteView",
    "_MigrationRow",
]

_MigrationRow = MigrationRow
"""The name the fault tests know the gateway's migration rows by."""
_MAX_VIOLATIONS = 50


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
        before = read_migrations(self._sessions)
        views = {probe.site_id: await probe.view() for probe in self._probes}
        after = read_migrations(self._sessions)
        self.samples += 1
        self._record(one_site_at_most(views))
        await self._nothing_lost(views, after)
        self._record(reservations_balance(views, before, after))
        self._record(within_capacity(views))

    def _record(self, violations: Iterable[Violation]) -> None:
        for violation in violations:
            message = violation.message
            if message not in self.violations and len(self.violations) < _MAX_VIOLATIONS:
                self.violations.append(message)

    async def _nothing_lost(
        self, views: Mapping[str, SiteView], migrations: Mapping[str, MigrationRow]
    ) -> None:
        needed = checkpoints_to_verify(views, migrations, self._job_ids)
        checkpoints = await fetch_checkpoints(self._probes, needed)
        self._record(nothing_lost(views, migrations, checkpoints, self._job_ids))

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
        migrations = read_migrations(self._sessions)
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
