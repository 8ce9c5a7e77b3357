"""The simulated day of ``dr-gateway demo --slurm``: the clock, the daemon's rounds, the checks.

:class:`DayStepper` steps a :class:`~simulators.campaign_clock.SteppedClock` that the daemon and
the site agents share and runs the daemon's rounds itself, as its scheduler would: a poll
round every ``[scheduler] poll_interval_s`` and a planning round every ``plan_interval_s`` of
simulated time, at most ``speed`` simulated seconds per wall second. While a migration is in
flight the clock follows the wall instead (the Slurm jobs, checkpoints and transfers take real
seconds, and the daemon's step deadlines count them as such) and the daemon's advance round
runs every :data:`FOLLOW_S`. After every round the fleet's invariants are checked over the
agents' API (:func:`gateway.migration.invariants.check_fleet` with
:class:`~gateway.migration.invariants.HttpProbe`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.daemon.gateway import Gateway
from gateway.db import unit_of_work
from gateway.migration.invariants import LIVE_STATES, HttpProbe, SiteView, check_fleet, look
from gateway.settings import Settings
from models import Job, Migration
from simulators.campaign_clock import SteppedClock
from simulators.demo_slurm_report import MigrationLine, Outcome
from simulators.demo_slurm_scenario import DemoSlurmScenario
from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from simulators.slurm_watch import SlurmWatch
from simulators.solar_agent import SolarAgent

MODEL_FILE = "model.bin"
"""The job's final parameters in its output directory (``example_torch.MODEL_FILE``, named here
because importing that module imports torch, which only the job itself needs)."""
FOLLOW_S = 0.1
"""Wall seconds between two advance rounds while a job moves, or finishes [s]."""
PROGRESS_EVERY_H = 3.0
_RESUMED = re.compile(r"resumed from .* at step (\d+) of (\d+)")


@dataclass(frozen=True)
class DemoSite:
    """A site of the demo: its cluster and the agent serving in front of it."""

    site_id: str
    cluster: SlurmCluster
    runner: web.AppRunner
    url: str
    agent: SolarAgent


class DayStepper:
    """Runs the simulated day, then lets the job finish, and measures what happened."""

    def __init__(
        self,
        settings: Settings,
        scenario: DemoSlurmScenario,
        clock: SteppedClock,
        gateway: Gateway,
        sites: Mapping[str, DemoSite],
        probes: Sequence[HttpProbe],
        sessions: sessionmaker[Session],
        speed: float,
    ) -> None:
        self.clock = clock
        self.gateway = gateway
        self.sites = sites
        self.probes = list(probes)
        self.sessions = sessions
        self.speed = speed
        self.job = scenario.job
        self.poll_s = settings.scheduler.poll_interval_s
        self.plan_s = settings.scheduler.plan_interval_s
        self.checks = 0
        self.violations: list[str] = []
        self.problems: list[str] = []
        """What went wrong beyond the invariants (a hang), one line each."""
        self._origin = (clock.now(), time.monotonic())
        self._announced: set[str] = set()
        self._ended: set[str] = set()
        self._steps: dict[str, str] = {}
        """Per completed migration: the step the job resumed at, from the target's job log."""

    # -- the day --------------------------------------------------------------------------

    async def wait_started(self) -> None:
        """Until the job runs as a Slurm batch job at its first site."""
        agent = self.sites[self.job.site].agent
        deadline = time.monotonic() + HANG_GUARD_S
        while agent.job_state(self.job.id) != "running":
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job.id} did not start at {self.job.site}")
            await asyncio.sleep(FOLLOW_S)

    async def run(self, end_at: datetime) -> None:
        """The daemon's rounds on the stepped clock until ``end_at`` (simulated)."""
        next_poll_at = self.clock.now() + timedelta(seconds=self.poll_s)  # start() polled
        next_plan_at = next_progress = self.clock.now()
        self._origin = (self.clock.now(), time.monotonic())
        while not self.problems:
            if self._in_flight():
                await self._follow_migrations()
                continue
            due = max(min(next_poll_at, next_plan_at), self.clock.now())
            if due > end_at:
                return
            await self._pace(due)
            await self.clock.set(due)
            rounds: list[Awaitable[object]] = []
            if due >= next_poll_at:
                rounds.append(self.gateway.poll_once())
                next_poll_at += timedelta(seconds=self.poll_s)
            if due >= next_plan_at:
                rounds.append(self.gateway.plan_once())
                next_plan_at += timedelta(seconds=self.plan_s)
            started = time.monotonic()
            await asyncio.gather(*rounds)  # concurrent, as the daemon's scheduler runs them
            if self._in_flight():  # a job started to move: the wall time it took counts
                await self.clock.advance(time.monotonic() - started)
            await self._check()
            self._note_migrations()
            if due >= next_progress:
                self._progress()
                next_progress += timedelta(hours=PROGRESS_EVERY_H)

    async def _pace(self, due: datetime) -> None:
        """No faster than ``speed`` simulated seconds per wall second since the last origin."""
        sim_origin, wall_origin = self._origin
        ahead_s = (due - sim_origin).total_seconds() / self.speed
        wait_s = ahead_s - (time.monotonic() - wall_origin)
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _follow_migrations(self) -> None:
        """While a migration is in flight: the clock follows the wall and the daemon advances
        the migration (its ``advance_once``) every :data:`FOLLOW_S`."""
        started = mark = time.monotonic()
        while self._in_flight():
            if time.monotonic() - started > HANG_GUARD_S:
                self.problems.append(f"a migration was still in flight after {HANG_GUARD_S:g} s")
                return
            await asyncio.sleep(FOLLOW_S)
            now = time.monotonic()
            await self.clock.advance(now - mark)
            mark = now
            await self.gateway.advance_once()
            await self._check()
            self._note_migrations()
        self._origin = (self.clock.now(), time.monotonic())

    def _in_flight(self) -> bool:
        dispatcher = self.gateway.dispatcher
        return dispatcher is not None and bool(dispatcher.pending_ids())

    # -- the end --------------------------------------------------------------------------

    async def finish(self) -> None:
        """After the day (the job's gate is open): the clock follows the wall and the daemon
        polls until it has seen the job finish."""
        started = mark = time.monotonic()
        while not self.problems and not self._finished():
            if time.monotonic() - started > HANG_GUARD_S:
                self.problems.append(f"job {self.job.id} did not finish within {HANG_GUARD_S:g} s")
                return
            await asyncio.sleep(FOLLOW_S)
            now = time.monotonic()
            await self.clock.advance(now - mark)
            mark = now
            await self.gateway.poll_once()
            await self._check()
            self._note_migrations()

    def _finished(self) -> bool:
        with unit_of_work(self.sessions) as session:
            job = session.get(Job, self.job.id)
            return job is not None and job.state == "finished" and not self._in_flight()

    async def outcome(self, watch: SlurmWatch, reference: bytes) -> Outcome:
        """What the demo measured, for :func:`simulators.demo_slurm_report.verdict`."""
        views = await look(self.probes)
        finished_at = [site for site, v in views.items() if v.jobs.get(self.job.id) == "finished"]
        model_sha256 = None
        if len(finished_at) == 1:
            paths = self.sites[finished_at[0]].agent.job_paths(self.job.id)
            model_path = paths.output_dir / MODEL_FILE
            if model_path.exists():
                model_sha256 = hashlib.sha256(model_path.read_bytes()).hexdigest()
        settled = self._settled(views)
        return Outcome(
            job_id=self.job.id,
            start_site=self.job.site,
            migrations=self._migration_lines(),
            checks=self.checks,
            violations=list(self.violations),
            problems=list(self.problems) + settled,
            finished_at=finished_at,
            model_sha256=model_sha256,
            reference_sha256=hashlib.sha256(reference).hexdigest(),
            slurm_samples=watch.samples,
            slurm_errors=watch.errors,
            slurm_violations=list(watch.violations),
            slurm_record=await asyncio.to_thread(watch.record),
        )

    def _settled(self, views: Mapping[str, SiteView]) -> list[str]:
        """Once nothing moves: no GPU reserved anywhere, and the job finished at one site,
        where the daemon's database has it."""
        problems = [
            f"site {site_id} still has {view.gpus_reserved} GPU(s) reserved"
            for site_id, view in views.items()
            if view.gpus_reserved
        ]
        job_id = self.job.id
        listed = {site_id: v.jobs[job_id] for site_id, v in views.items() if job_id in v.jobs}
        with unit_of_work(self.sessions) as session:
            job = session.get(Job, job_id)
            stored = None if job is None else (job.site_id, job.state)
        if list(listed.values()) != ["finished"]:
            problems.append(f"job {job_id} is listed at {listed}, expected finished at one site")
        elif stored != next(iter(listed.items())):
            problems.append(f"the daemon has job {job_id} as {stored}, the sites say {listed}")
        return problems

    # -- checks and lines -----------------------------------------------------------------

    async def _check(self) -> None:
        report = await check_fleet(self.probes, self.sessions, exact_sizes=False)
        self.checks += 1
        for line in report.lines():
            if line not in self.violations:
                self.violations.append(line)
                print(f"  invariant broken: {line}")

    def _sun(self) -> str:
        return ", ".join(
            f"{site_id} {status.renewable_kw:.2f} kW"
            for site_id, status in self.gateway.statuses.items()
        )

    def _where(self) -> str:
        for site_id, status in self.gateway.statuses.items():
            job = status.job(self.job.id)
            if job is not None and job.state in LIVE_STATES:
                return f"{self.job.id} {job.state} at {site_id}"
        return f"{self.job.id} not running"

    def _progress(self) -> None:
        print(f"  {self.clock.now():%H:%M} UTC  sun: {self._sun()}; {self._where()}")

    def _note_migrations(self) -> None:
        """Print each migration when it is planned and when it ends."""
        with unit_of_work(self.sessions) as session:
            rows = list(session.scalars(select(Migration).order_by(Migration.planned_at)))
        for m in rows:
            if m.id not in self._announced:
                self._announced.add(m.id)
                print(
                    f"  {m.planned_at:%H:%M} UTC  sun: {self._sun()}; the daemon moves "
                    f"{m.job_id} {m.source_site_id} -> {m.target_site_id} ({m.reason})"
                )
            if m.state in ("completed", "aborted") and m.id not in self._ended:
                self._ended.add(m.id)
                self._announce_end(m)

    def _announce_end(self, m: Migration) -> None:
        end_at = m.completed_at or m.aborted_at or m.updated_at
        took_s = (end_at - m.planned_at).total_seconds()
        if m.state == "aborted":
            print(f"  {end_at:%H:%M} UTC  aborted after {took_s:.1f} s: {m.error}")
            return
        log = self.sites[m.target_site_id].agent.job_paths(m.job_id).log_path
        matches = _RESUMED.findall(log.read_text(errors="replace")) if log.exists() else []
        step = f"step {matches[-1][0]} of {matches[-1][1]}" if matches else "an unknown step"
        self._steps[m.id] = step
        print(
            f"  {end_at:%H:%M} UTC  completed in {took_s:.1f} s (job stopped "
            f"{m.downtime_s or 0:.1f} s): resumed at {m.target_site_id} at {step}"
        )

    def _migration_lines(self) -> list[MigrationLine]:
        with unit_of_work(self.sessions) as session:
            rows = list(session.scalars(select(Migration).order_by(Migration.planned_at)))
        return [
            MigrationLine(
                planned_at=m.planned_at,
                source=m.source_site_id,
                target=m.target_site_id,
                state=m.state,
                took_s=(
                    (m.completed_at or m.aborted_at or m.updated_at) - m.planned_at
                ).total_seconds(),
                resumed_at_step=self._steps.get(m.id),
            )
            for m in rows
        ]
