"""The fleet-wide invariants (``docs/architecture.md``, 'Invariants'), checked over the sites
and the gateway's database.

1. **One site at most**: no job is live (``running``, ``checkpointing`` or ``restoring``) at
   two sites at once.
2. **No job lost**: every job is live somewhere, ``finished`` somewhere, or ``checkpointed`` at
   a site that holds a verified checkpoint of it (size and sha256, as a migration from that
   site records it).
3. **Reservations balance**: the GPUs reserved at a site are covered by the GPUs of the
   migrations to it that have not ended; settled (none unended): no GPU is reserved.
4. **No site over its GPUs**: at every site the GPUs of its live jobs plus its reserved GPUs
   are at most its ``gpus_total``.

The checks (:func:`check`, one function per invariant) are pure: they take what each site
controller reported (:class:`SiteView`, from ``GET /v1/status``), the gateway's migrations
(:class:`MigrationRow`) and the checkpoints the sources reported, and return an
:class:`InvariantReport` of one-line messages that name the invariant, the job and the sites.
:class:`HttpProbe` looks at a site over the site API (``gateway/sites/client.py``), and
:func:`check_fleet` takes one look at the whole fleet and the database: after a planner or
poll round, in the demo, in a soak test. A migration has ended when it is ``completed``, or
``aborted`` with its clean-up done (``cleaned_up_at``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import unit_of_work
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import GPU_HOLDING_STATES, Checkpoint, JobState, SiteStatus
from models import Job, Migration

LIVE_STATES: tuple[JobState, ...] = GPU_HOLDING_STATES
"""A job in these states holds its state and its GPUs at a site."""

INVARIANT_NAMES: Mapping[int, str] = {
    1: "one site at most",
    2: "no job lost",
    3: "reservations balance",
    4: "no site over its GPUs",
}


# ---- what the checks read ---------------------------------------------------------------------


@dataclass(frozen=True)
class SiteView:
    """One site at one instant, as its controller reported it.

    jobs: each listed job's state; gpus_reserved: GPUs held by reservations; gpus_total: the
    site's GPUs; job_gpus: the GPUs each listed job holds while live.
    """

    jobs: Mapping[str, JobState]
    gpus_reserved: int
    gpus_total: int
    job_gpus: Mapping[str, int]

    @classmethod
    def of(cls, status: SiteStatus) -> SiteView:
        """The view of a ``GET /v1/status`` answer."""
        return cls(
            jobs={job.job_id: job.state for job in status.jobs},
            gpus_reserved=status.gpus_reserved,
            gpus_total=status.gpus_total,
            job_gpus={job.job_id: job.gpus for job in status.jobs},
        )

    def live(self, job_id: str) -> bool:
        return self.jobs.get(job_id) in LIVE_STATES

    @property
    def gpus_live(self) -> int:
        """GPUs held by the site's live jobs."""
        return sum(self.job_gpus.get(job_id, 0) for job_id in self.jobs if self.live(job_id))


@dataclass(frozen=True)
class MigrationRow:
    """One migration as the gateway's database holds it.

    ended: completed, or aborted and cleaned up; checkpoint_gb: the checkpoint the gateway
    expects [GB] (the job's declared size until the real one is recorded with its sha256);
    gpus: the job's GPUs, which the target reserves.
    """

    id: str
    job_id: str
    source_site_id: str
    target_site_id: str
    state: str
    ended: bool
    checkpoint_gb: float
    checkpoint_sha256: str | None
    gpus: int


def read_migrations(
    session_factory: sessionmaker[Session], *, current: bool = False
) -> dict[str, MigrationRow]:
    """The migrations in the gateway's database, by id: every one, or with ``current``
    those the checks can need (not ended, or of a job the database does not hold as
    finished): an ended migration of a finished job reserves nothing and keeps no job, and
    leaving it out keeps a check's cost from growing with history."""
    query = select(Migration, Job.gpus).join(Job, Job.id == Migration.job_id)
    if current:
        ended = (Migration.state == "completed") | (
            (Migration.state == "aborted") & Migration.cleaned_up_at.is_not(None)
        )
        query = query.where(~ended | (Job.state != "finished"))
    with unit_of_work(session_factory) as session:
        return {m.id: _migration_row(m, gpus) for m, gpus in session.execute(query)}


def _migration_row(m: Migration, gpus: int) -> MigrationRow:
    return MigrationRow(
        id=m.id,
        job_id=m.job_id,
        source_site_id=m.source_site_id,
        target_site_id=m.target_site_id,
        state=m.state,
        ended=m.state == "completed" or (m.state == "aborted" and m.cleaned_up_at is not None),
        checkpoint_gb=m.checkpoint_gb,
        checkpoint_sha256=m.checkpoint_sha256,
        gpus=gpus,
    )


def read_job_ids(session_factory: sessionmaker[Session]) -> tuple[str, ...]:
    """The ids of every job the gateway's database knows."""
    with unit_of_work(session_factory) as session:
        return tuple(session.scalars(select(Job.id).order_by(Job.id)))


def read_finished_job_ids(session_factory: sessionmaker[Session]) -> frozenset[str]:
    """The jobs the gateway's database holds as finished: their site reported them finished
    where the gateway placed them (``gateway.fleet.sync_jobs``), so they are not lost when
    the site, later, no longer lists them."""
    with unit_of_work(session_factory) as session:
        return frozenset(session.scalars(select(Job.id).where(Job.state == "finished")))


# ---- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its number, the job and the sites concerned, and a one-line
    message that starts ``invariant N:``."""

    invariant: int
    message: str
    job_id: str | None
    site_ids: tuple[str, ...]

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class InvariantReport:
    """What one look at the fleet found broken; empty when every invariant held."""

    violations: tuple[Violation, ...]

    @property
    def held(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        return [v.message for v in self.violations]

    def __str__(self) -> str:
        return "\n".join(self.lines()) if self.violations else "every invariant held"


def _violation(invariant: int, text: str, job_id: str | None, sites: Iterable[str]) -> Violation:
    message = f"invariant {invariant}: {text} ({INVARIANT_NAMES[invariant]})"
    return Violation(invariant, message, job_id, tuple(sites))


def _where(views: Mapping[str, SiteView], job_id: str) -> str:
    return ", ".join(
        f"{site} {view.jobs.get(job_id, 'not listed')}" for site, view in views.items()
    )


# ---- the four checks (pure) -------------------------------------------------------------------


def one_site_at_most(views: Mapping[str, SiteView]) -> list[Violation]:
    """Invariant 1 over every job any site lists."""
    listings = _listings(views)
    found = []
    for job_id in sorted(listings):
        live = [site for site, state in listings[job_id] if state in LIVE_STATES]
        if len(live) > 1:
            at = ", ".join(f"{site} ({views[site].jobs[job_id]})" for site in live)
            found.append(
                _violation(1, f"job {job_id} is live at {len(live)} sites: {at}", job_id, live)
            )
    return found


def checkpoints_to_verify(
    views: Mapping[str, SiteView], migrations: Mapping[str, MigrationRow], job_ids: Iterable[str]
) -> list[MigrationRow]:
    """The migrations whose source's checkpoint invariant 2 needs: those of a job that is
    neither live nor finished anywhere, from a site where it is ``checkpointed``."""
    listings = _listings(views)
    needed = []
    for job_id in job_ids:
        needed += _to_verify(listings, migrations, job_id)
    return needed


def _to_verify(
    listings: Mapping[str, Sequence[tuple[str, JobState]]],
    migrations: Mapping[str, MigrationRow],
    job_id: str,
) -> list[MigrationRow]:
    if _live_or_finished(listings, job_id):
        return []
    holders = {site for site, state in listings.get(job_id, ()) if state == "checkpointed"}
    if not holders:
        return []
    return [m for m in migrations.values() if m.job_id == job_id and m.source_site_id in holders]


def nothing_lost(
    views: Mapping[str, SiteView],
    migrations: Mapping[str, MigrationRow],
    checkpoints: Mapping[str, Checkpoint | None],
    job_ids: Iterable[str],
    *,
    exact_sizes: bool = True,
) -> list[Violation]:
    """Invariant 2 for ``job_ids``. ``checkpoints``: by migration id, the verified checkpoint
    its source reported (None: none), for :func:`checkpoints_to_verify`'s migrations.

    exact_sizes: a checkpoint must have the size the migration records (simulated sites
    write exactly the job's declared ``checkpoint_gb``); False for real agents, whose
    checkpoints differ from the declared size until the gateway records the real one: then a
    checkpoint matches by its sha256 once recorded, and any verified one before.
    """
    listings = _listings(views)
    found = []
    for job_id in job_ids:
        if _live_or_finished(listings, job_id):
            continue
        candidates = _to_verify(listings, migrations, job_id)
        if any(_verified(checkpoints.get(m.id), m, exact_sizes) for m in candidates):
            continue
        text = (
            f"job {job_id} is lost: neither live nor finished anywhere, and no verified "
            f"checkpoint at a known site ({_where(views, job_id)})"
        )
        found.append(_violation(2, text, job_id, views))
    return found


def reservations_balance(
    views: Mapping[str, SiteView],
    before: Mapping[str, MigrationRow],
    after: Mapping[str, MigrationRow],
) -> list[Violation]:
    """Invariant 3. ``before`` and ``after``: the migrations read before and after the
    sites, so that a migration counts as ended only if it had ended before the sites were
    read, and one planned meanwhile is accounted for."""
    to_site: dict[str, list[MigrationRow]] = {}
    for m in after.values():
        if not (m.id in before and before[m.id].ended):
            to_site.setdefault(m.target_site_id, []).append(m)
    found = []
    for site, view in views.items():
        incoming = to_site.get(site, [])
        gpus_covered = sum(m.gpus for m in incoming)
        if view.gpus_reserved <= gpus_covered:
            continue
        if incoming:
            text = (
                f"site {site} holds {view.gpus_reserved} reserved GPUs, but its unended "
                f"migrations {sorted(m.id for m in incoming)} cover {gpus_covered}"
            )
        else:
            ended = sorted(m.id for m in before.values() if m.ended and m.target_site_id == site)
            text = (
                f"site {site} holds {view.gpus_reserved} reserved GPUs with no unended "
                f"migration to it (settled: none may be reserved; ended there: {ended})"
            )
        found.append(_violation(3, text, None, (site,)))
    return found


def within_capacity(views: Mapping[str, SiteView]) -> list[Violation]:
    """Invariant 4."""
    found = []
    for site, view in views.items():
        gpus_used = view.gpus_live + view.gpus_reserved
        if gpus_used <= view.gpus_total:
            continue
        live = ", ".join(
            f"{job_id} {view.job_gpus.get(job_id, 0)}" for job_id in view.jobs if view.live(job_id)
        )
        text = (
            f"site {site} is over its GPUs: {view.gpus_live} held by live jobs ({live}) + "
            f"{view.gpus_reserved} reserved = {gpus_used} > gpus_total {view.gpus_total}"
        )
        found.append(_violation(4, text, None, (site,)))
    return found


def check(
    views: Mapping[str, SiteView],
    before: Mapping[str, MigrationRow],
    after: Mapping[str, MigrationRow],
    checkpoints: Mapping[str, Checkpoint | None],
    job_ids: Iterable[str],
    *,
    exact_sizes: bool = True,
) -> InvariantReport:
    """All four invariants over one look at the fleet (see the functions above)."""
    violations = [
        *one_site_at_most(views),
        *nothing_lost(views, after, checkpoints, tuple(job_ids), exact_sizes=exact_sizes),
        *reservations_balance(views, before, after),
        *within_capacity(views),
    ]
    return InvariantReport(tuple(violations))


def _listings(views: Mapping[str, SiteView]) -> dict[str, list[tuple[str, JobState]]]:
    """Where each listed job is listed and in which state, by job id (sites in the order of
    ``views``): one pass over the listings, so that a check costs what the sites list, not
    that times the jobs it asks about."""
    out: dict[str, list[tuple[str, JobState]]] = {}
    for site, view in views.items():
        for job_id, state in view.jobs.items():
            out.setdefault(job_id, []).append((site, state))
    return out


def _live_or_finished(listings: Mapping[str, Sequence[tuple[str, JobState]]], job_id: str) -> bool:
    return any(state in LIVE_STATES or state == "finished" for _, state in listings.get(job_id, ()))


def _verified(checkpoint: Checkpoint | None, m: MigrationRow, exact_sizes: bool) -> bool:
    if checkpoint is None:
        return False
    if m.checkpoint_sha256 is not None and checkpoint.sha256 != m.checkpoint_sha256:
        return False
    if not exact_sizes:
        return True
    return math.isclose(checkpoint.size_gb, m.checkpoint_gb, rel_tol=1e-9)


# ---- looking at the fleet ---------------------------------------------------------------------


class SiteProbe(Protocol):
    """How the checks look at one site."""

    @property
    def site_id(self) -> str: ...

    async def view(self) -> SiteView:
        """The site now."""
        ...

    async def checkpoint(self, migration_id: str) -> Checkpoint | None:
        """The complete, verified checkpoint this site wrote for the migration, if any."""
        ...


class HttpProbe:
    """Asks a site controller over its API (``GET /v1/status``, ``GET /v1/operations``)."""

    def __init__(self, client: SiteControllerClient) -> None:
        self._client = client

    @property
    def site_id(self) -> str:
        return self._client.site_id

    async def view(self) -> SiteView:
        return SiteView.of(await self._client.status())

    async def checkpoint(self, migration_id: str) -> Checkpoint | None:
        op = await self._client.operation(migration_id, "checkpoint")
        return op.checkpoint if op is not None and op.state == "done" else None


async def look(probes: Sequence[SiteProbe]) -> dict[str, SiteView]:
    """Every site's view, asked at once; by site id."""
    views = await asyncio.gather(*(probe.view() for probe in probes))
    return {probe.site_id: view for probe, view in zip(probes, views, strict=True)}


async def fetch_checkpoints(
    probes: Sequence[SiteProbe], migrations: Iterable[MigrationRow]
) -> dict[str, Checkpoint | None]:
    """The checkpoint each migration's source reports, by migration id."""
    by_site = {probe.site_id: probe for probe in probes}
    found: dict[str, Checkpoint | None] = {}
    for m in migrations:
        probe = by_site.get(m.source_site_id)
        found[m.id] = None if probe is None else await probe.checkpoint(m.id)
    return found


async def check_fleet(
    probes: Sequence[SiteProbe],
    session_factory: sessionmaker[Session],
    job_ids: Iterable[str] | None = None,
    *,
    exact_sizes: bool = True,
) -> InvariantReport:
    """One look at the sites (``probes``) and the gateway's database: the four invariants.

    job_ids: the jobs that must never be lost (invariant 2; None: every job the database
    knows; a job the database holds as finished is not lost); exact_sizes: see
    :func:`nothing_lost`. A site that cannot be reached raises the
    probe's error (``SiteControllerError`` for :class:`HttpProbe`): no verdict without a look.
    """
    before = read_migrations(session_factory, current=True)
    views = await look(probes)
    after = read_migrations(session_factory, current=True)
    ids = read_job_ids(session_factory) if job_ids is None else tuple(job_ids)
    finished = read_finished_job_ids(session_factory)
    ids = tuple(job_id for job_id in ids if job_id not in finished)
    checkpoints = await fetch_checkpoints(probes, checkpoints_to_verify(views, after, ids))
    return check(views, before, after, checkpoints, ids, exact_sizes=exact_sizes)
