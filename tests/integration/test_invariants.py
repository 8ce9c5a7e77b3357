"""The invariant monitor of ``tests/support/invariants.py`` catches each broken invariant.

Each case breaks one invariant of ``docs/architecture.md``, 'Invariants', behind the gateway's
back (on simulated sites and a real database) and checks that one sample reports exactly that
invariant. The monitor runs the checks of ``gateway/migration/invariants.py``, whose cases are
in ``tests/unit/test_fleet_invariants.py``; here they run against sites and a database, over the
site API too (:func:`gateway.migration.invariants.check_fleet`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import aiohttp
import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.clock import ManualClock
from gateway.db import unit_of_work
from gateway.migration.dispatch import Dispatcher
from gateway.migration.invariants import check_fleet, read_migrations
from gateway.planner.snapshot import MigrationDecision
from gateway.settings import parse_settings
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import JobSpec
from models import Job, Migration
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from tests.support.invariants import HttpProbe, InvariantMonitor, SimulatorProbe

JOB = JobSpec("job-1", gpus=2, power_kw=1.3, checkpoint_gb=3.0, work_remaining_gpu_h=100.0)


@dataclass
class Fleet:
    clock: ManualClock
    source: SimulatedSite
    target: SimulatedSite
    sessions: sessionmaker[Session]
    migration_id: str
    monitor: InvariantMonitor


@pytest.fixture
def fleet_of_two(session_factory: sessionmaker[Session]) -> Fleet:
    clock = ManualClock(datetime(2026, 6, 21, tzinfo=UTC))
    sites = [
        SimulatedSite(
            site_id=site_id,
            token=f"token-of-{site_id}",
            clock=clock,
            trace=RenewableTrace.constant(5.0),
            gpus_total=8,
            it_power_max_kw=6.0,
        )
        for site_id in ("source", "target")
    ]
    source, target = sites
    source.add_job(JOB)
    settings = parse_settings(
        {
            "site": [
                {
                    "id": site.site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": "http://127.0.0.1:9",
                    "controller_token": site.token,
                }
                for site in sites
            ]
        },
        "test",
    )
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, clock.now())
        fleet.sync_jobs(session, "source", source.status(), clock.now())
    dispatcher = Dispatcher(session_factory, {}, clock)
    migration_id = dispatcher.create(
        MigrationDecision(JOB.job_id, "source", "target", "test", 10.0, 0.01)
    )
    assert migration_id is not None
    monitor = InvariantMonitor(
        [SimulatorProbe(site) for site in sites], session_factory, [JOB.job_id]
    )
    return Fleet(clock, source, target, session_factory, migration_id, monitor)


def _run_at_both(f: Fleet) -> None:
    f.target.add_job(JOB)


def _lose_the_job(f: Fleet) -> None:
    del f.source.jobs[JOB.job_id]


def _checkpoint_nowhere(f: Fleet) -> None:
    f.source.jobs[JOB.job_id].state = "checkpointed"  # stopped, but no checkpoint was written


def _checkpoint_of_another_size(f: Fleet) -> None:
    f.target.reserve(f.migration_id, JOB.job_id, JOB.gpus, JOB.power_kw)
    f.source.checkpoint(JOB.job_id, f.migration_id)
    f.clock.advance(60)
    with unit_of_work(f.sessions) as session:
        m = session.get(Migration, f.migration_id)
        assert m is not None
        m.checkpoint_gb = 2.0  # the gateway expects another checkpoint than the one written


def _overfill_the_target(f: Fleet) -> None:
    f.target.reserve(f.migration_id, JOB.job_id, JOB.gpus, JOB.power_kw)
    f.target.add_job(replace(JOB, job_id="job-2", gpus=1))
    f.target.gpus_total = JOB.gpus  # the site shrank behind the gateway's back


def _keep_an_ended_migrations_reservation(f: Fleet) -> None:
    f.target.reserve(f.migration_id, JOB.job_id, JOB.gpus, JOB.power_kw)
    with unit_of_work(f.sessions) as session:
        m = session.get(Migration, f.migration_id)
        assert m is not None
        m.state, m.aborted_at, m.cleaned_up_at = "aborted", f.clock.now(), f.clock.now()


BREAKS: list[tuple[str, Callable[[Fleet], None], str]] = [
    ("job running at two sites", _run_at_both, "invariant 1"),
    ("job gone from every site", _lose_the_job, "invariant 2"),
    ("job stopped without a checkpoint", _checkpoint_nowhere, "invariant 2"),
    ("checkpoint of the wrong size", _checkpoint_of_another_size, "invariant 2"),
    (
        "reservation kept after its migration ended",
        _keep_an_ended_migrations_reservation,
        "invariant 3",
    ),
    ("a site over its GPUs", _overfill_the_target, "invariant 4"),
]


async def test_a_sound_fleet_breaks_no_invariant(fleet_of_two: Fleet) -> None:
    f = fleet_of_two
    f.target.reserve(f.migration_id, JOB.job_id, JOB.gpus, JOB.power_kw)  # in flight: fine
    f.source.checkpoint(JOB.job_id, f.migration_id)
    await f.monitor.sample()
    f.clock.advance(60)  # checkpointed, with its checkpoint verified at the source
    await f.monitor.sample()
    f.monitor.assert_held()


@pytest.mark.parametrize(("label", "breaks", "invariant"), BREAKS, ids=[b[0] for b in BREAKS])
async def test_each_broken_invariant_is_reported(
    fleet_of_two: Fleet, label: str, breaks: Callable[[Fleet], None], invariant: str
) -> None:
    f = fleet_of_two
    breaks(f)
    await f.monitor.sample()
    assert [v.split(":")[0] for v in f.monitor.violations] == [invariant], f.monitor.violations
    with pytest.raises(AssertionError, match=invariant):
        f.monitor.assert_held()


def _abort_and_clean_up(f: Fleet) -> None:
    """As if the gateway had aborted the migration and cleaned up: the job runs at the
    source."""
    with unit_of_work(f.sessions) as session:
        m = session.get(Migration, f.migration_id)
        job = session.get(Job, JOB.job_id)
        assert m is not None and job is not None
        m.state, m.aborted_at, m.cleaned_up_at = "aborted", f.clock.now(), f.clock.now()
        job.state = "running"


async def test_settled_needs_every_migration_ended(fleet_of_two: Fleet) -> None:
    f = fleet_of_two
    with pytest.raises(AssertionError, match="migrations not ended"):
        await f.monitor.assert_settled()
    _abort_and_clean_up(f)
    await f.monitor.assert_settled()


@pytest.mark.integration
async def test_http_probe_sees_what_the_simulator_probe_sees(fleet_of_two: Fleet) -> None:
    """The probe for real controllers (over the API) and the in-process one agree."""
    f = fleet_of_two
    runners = []
    try:
        async with aiohttp.ClientSession() as session:
            http: list[HttpProbe] = []
            for site in (f.source, f.target):
                runner, url = await start_site_server(site)
                runners.append(runner)
                http.append(HttpProbe(SiteControllerClient(site.site_id, url, site.token, session)))
            local = [SimulatorProbe(f.source), SimulatorProbe(f.target)]
            f.target.reserve(f.migration_id, JOB.job_id, JOB.gpus, JOB.power_kw)
            f.source.checkpoint(JOB.job_id, f.migration_id)
            for _ in range(2):  # checkpointing, then checkpointed (and verified)
                for over_http, in_process in zip(http, local, strict=True):
                    assert await over_http.view() == await in_process.view()
                    assert await over_http.checkpoint(
                        f.migration_id
                    ) == await in_process.checkpoint(f.migration_id)
                f.clock.advance(60)
            assert await http[0].checkpoint(f.migration_id) is not None
            assert (await http[1].view()).gpus_reserved == JOB.gpus
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.mark.integration
async def test_monitor_over_http_catches_a_job_live_at_two_sites(fleet_of_two: Fleet) -> None:
    """The monitor, asking real controllers over the site API, reports the job live at both
    sites by name; :func:`check_fleet` over the same probes says the same in one look."""
    f = fleet_of_two
    runners = []
    try:
        async with aiohttp.ClientSession() as session:
            probes = []
            for site in (f.source, f.target):
                runner, url = await start_site_server(site)
                runners.append(runner)
                client = SiteControllerClient(site.site_id, url, site.token, session)
                probes.append(HttpProbe(client))
            monitor = InvariantMonitor(probes, f.sessions, [JOB.job_id])
            await monitor.sample()
            monitor.assert_held()
            assert (await check_fleet(probes, f.sessions, [JOB.job_id])).held

            f.target.add_job(JOB)
            await monitor.sample()
            [violation] = monitor.violations
            assert violation.startswith("invariant 1: job job-1 is live at 2 sites")
            assert "source (running)" in violation and "target (running)" in violation
            report = await check_fleet(probes, f.sessions)  # every job the database knows
            assert [(v.invariant, v.job_id, v.site_ids) for v in report.violations] == [
                (1, JOB.job_id, ("source", "target"))
            ]
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_a_finished_job_its_site_no_longer_lists_is_not_lost(fleet_of_two: Fleet) -> None:
    """A site lists a finished job for ``finished_listed_s`` and then drops it; the job is
    not lost when the gateway recorded it as finished, and is when it did not."""
    f = fleet_of_two
    _abort_and_clean_up(f)
    probes = [SimulatorProbe(f.source), SimulatorProbe(f.target)]
    f.clock.advance(3600 * JOB.work_remaining_gpu_h / JOB.gpus)
    assert f.source.job_state(JOB.job_id) == "finished"
    with unit_of_work(f.sessions) as session:
        fleet.sync_jobs(session, "source", f.source.status(), f.clock.now())
    f.clock.advance(f.source.finished_listed_s + 1)
    assert f.source.job_state(JOB.job_id) is None
    assert JOB.job_id in f.source.forgotten
    assert (await check_fleet(probes, f.sessions, [JOB.job_id])).held
    # An ended migration of a finished job is history the checks no longer read.
    assert list(read_migrations(f.sessions)) == [f.migration_id]
    assert read_migrations(f.sessions, current=True) == {}
    with unit_of_work(f.sessions) as session:
        job = session.get(Job, JOB.job_id)
        assert job is not None and job.state == "finished"
        job.state = "running"  # as if the gateway had never seen it finish
    report = await check_fleet(probes, f.sessions, [JOB.job_id])
    assert [(v.invariant, v.job_id) for v in report.violations] == [(2, JOB.job_id)]
