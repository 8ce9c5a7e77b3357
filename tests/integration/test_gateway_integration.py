"""The walking skeleton end to end, over real loopback servers.

A real openleadr VTN (the simulator) on an OS-assigned port, two aiohttp site controllers
(simulated sites) and the gateway daemon on a real database (SQLite and PostgreSQL): an
event arrives, is stored, the opt answer reaches the VTN, the planner sheds by migrating a
job, the migration completes through every state and ledger rows exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock, next_midnight_utc
from gateway.daemon.gateway import Gateway
from gateway.db import unit_of_work
from gateway.settings import Settings, parse_settings
from gateway.sites.records import JobSpec, OperationKind
from models import Event, EventResponse, Job, LedgerRow, Migration, SiteSample
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from simulators.vtn import ScenarioEvent, SimulatedVtn
from tests.support.waiting import WAIT_S, wait_for

pytestmark = pytest.mark.integration

TOKENS = {"dark": "token-of-dark-site", "sunny": "token-of-sunny-site"}


def settings_for(urls: dict[str, str], vtn_url: str, database_url: str) -> Settings:
    return parse_settings(
        {
            "database": {"url": database_url},
            "planner": {"min_residence_s": 0.0},
            "vtn": [
                {
                    "id": "utility",
                    "url": vtn_url,
                    "ven_name": "gateway-under-test",
                    "report_interval_s": 1,
                }
            ],
            "site": [
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "pue": 1.2,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": url,
                    "controller_token": TOKENS[site_id],
                    "vtn": "utility",
                }
                for site_id, url in urls.items()
            ],
        },
        "test",
    )


@dataclass
class World:
    clock: ManualClock
    sites: dict[str, SimulatedSite]
    vtn: SimulatedVtn
    gateway: Gateway
    sessions: sessionmaker[Session]


@pytest.fixture
async def world(session_factory: sessionmaker[Session], database_url: str) -> AsyncIterator[World]:
    start_at = next_midnight_utc(datetime.now(UTC)) + timedelta(days=1)
    clock = ManualClock(start_at)
    renewable_kw = {"dark": 0.0, "sunny": 20.0}
    sites = {
        site_id: SimulatedSite(
            site_id=site_id,
            token=TOKENS[site_id],
            clock=clock,
            trace=RenewableTrace.constant(kw),
            gpus_total=8,
            it_power_max_kw=6.0,
        )
        for site_id, kw in renewable_kw.items()
    }
    sites["dark"].add_job(
        JobSpec(
            job_id="job-1",
            gpus=2,
            power_kw=1.3,
            checkpoint_gb=4.88,
            work_remaining_gpu_h=100.0,
            migratable=True,
        )
    )
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    for site_id, site in sites.items():
        runner, urls[site_id] = await start_site_server(site)
        runners.append(runner)
    vtn = SimulatedVtn(clock, vtn_id="TEST-VTN", poll_interval_s=1)
    await vtn.start()
    settings = settings_for(urls, vtn.url, database_url)
    gateway = Gateway(settings, clock, session_factory)
    try:
        await gateway.start(schedule=False)
        yield World(clock, sites, vtn, gateway, session_factory)
    finally:
        await gateway.stop()
        await vtn.stop()
        for runner in runners:
            await runner.cleanup()


def running_at(sites: dict[str, SimulatedSite], job_id: str) -> list[str]:
    return [s for s, site in sites.items() if site.job_state(job_id) == "running"]


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with unit_of_work(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_event_to_migration_to_ledger(world: World) -> None:
    clock, sites, vtn, gateway = world.clock, world.sites, world.vtn, world.gateway
    await wait_for(lambda: bool(vtn.registrations), "the registration", WAIT_S)
    assert count(world.sessions, Job) == 1

    event_id = vtn.add_event_now(
        ScenarioEvent(
            issue_at=clock.now(),
            start_at=clock.now() + timedelta(hours=1),
            duration_s=7200,
            signal_name="LOAD_DISPATCH",
            signal_type="delta",
            intervals=(-1.0,),
            resource_ids=("dark",),
            kind="curtailment",
        )
    )
    # The event reaches the VEN, is stored, and the opt answer reaches the VTN.
    await wait_for(lambda: bool(vtn.opts_for(event_id)), "the opt", WAIT_S)
    assert [o.opt_type for o in vtn.opts_for(event_id)] == ["optIn"]
    with unit_of_work(world.sessions) as session:
        stored = session.scalars(select(Event).where(Event.event_id == event_id)).one()
        assert stored.vtn_id == "utility"
        assert [s.signal_name for s in stored.signals] == ["LOAD_DISPATCH"]
        assert [i.value for i in stored.signals[0].intervals] == [-1.0]
        [response] = session.scalars(
            select(EventResponse).where(EventResponse.event_pk == stored.id)
        ).all()
        assert response.opt == "optIn" and "dark: shed" in response.reason

    # The optIn makes the daemon plan at once, but a shed waits for the event's start (an
    # earlier one would lower the baseline the meter judges it by): the daemon plans again
    # at that instant and moves the job to the other site then.
    start_at = stored.start_at + timedelta(seconds=stored.start_offset_s or 0.0)
    await wait_for(lambda: gateway.next_plan_at is not None, "the next plan round", WAIT_S)
    assert gateway.next_plan_at is not None
    assert gateway.next_plan_at.replace(tzinfo=None) == start_at.replace(tzinfo=None)
    assert count(world.sessions, Migration) == 0, "nothing moves before the start"
    clock.set(gateway.next_plan_at)
    await gateway.poll_once()
    planned = await gateway.plan_once()
    assert len(planned) == 1
    clock.advance(60)
    await gateway.poll_once()
    assert await gateway.plan_once() == [], "planned once, not again"
    seen_states = []
    for _ in range(60):
        assert len(running_at(sites, "job-1")) <= 1, "a job ran at two sites at once"
        with unit_of_work(world.sessions) as session:
            migration = session.get(Migration, planned[0])
            assert migration is not None
            seen_states.append(migration.state)
            if migration.state in ("completed", "aborted"):
                break
        clock.advance(30)
        await gateway.poll_once()
    assert seen_states[-1] == "completed", seen_states
    assert running_at(sites, "job-1") == ["sunny"]
    assert sites["dark"].job_state("job-1") is None  # released at the source
    with unit_of_work(world.sessions) as session:
        migration = session.get(Migration, planned[0])
        assert migration is not None
        for state in ("target_reserved", "checkpointing", "transferring", "restoring", "completed"):
            assert getattr(migration, f"{state}_at") is not None, state
        assert migration.event_ref == f"utility/{event_id}"
        assert migration.checkpoint_sha256
        assert migration.downtime_s and migration.downtime_s > 0
        job = session.get(Job, "job-1")
        assert job is not None and (job.site_id, job.state) == ("sunny", "running")
    assert count(world.sessions, SiteSample) > 2
    assert count(world.sessions, LedgerRow) >= 2 * len(seen_states)

    # Telemetry reports reach the VTN (TELEMETRY_USAGE per site).
    await wait_for(
        lambda: {r.resource_id for r in vtn.telemetry} >= {"dark", "sunny"},
        "telemetry of both sites",
        WAIT_S,
    )


async def test_reservation_released_when_a_migration_aborts(world: World) -> None:
    clock, sites, gateway = world.clock, world.sites, world.gateway
    # Make the dark site's job want to leave (no event), then fail the checkpoint for good.
    sites["dark"].fail_next("checkpoint", count=100)
    clock.advance(60)
    await gateway.poll_once()
    planned = await gateway.plan_once()
    assert len(planned) == 1
    for _ in range(10):
        clock.advance(30)
        await gateway.poll_once()
    with unit_of_work(world.sessions) as session:
        migration = session.get(Migration, planned[0])
        assert migration is not None
        assert migration.state == "aborted" and migration.cleaned_up_at is not None
        job = session.get(Job, "job-1")
        assert job is not None and (job.site_id, job.state) == ("dark", "running")
    assert sites["sunny"].reservations[planned[0]].state != "reserved"
    assert running_at(sites, "job-1") == ["dark"]


async def test_migration_advances_when_each_operation_is_due_not_at_the_next_poll(
    world: World,
) -> None:
    """Between polls the daemon advances a migration at the instant its site's operation is
    expected done (``done_at``): checkpoint, transfer and restore, one advance round each."""
    clock, sites, gateway = world.clock, world.sites, world.gateway
    clock.advance(60)
    await gateway.poll_once()
    [migration_id] = await gateway.plan_once()
    started_at = clock.now()
    steps: list[tuple[str, str]] = []
    for _ in range(10):
        with unit_of_work(world.sessions) as session:
            migration = session.get(Migration, migration_id)
            assert migration is not None
            state = migration.state
        if state == "completed":
            break
        due_at = gateway.next_step_at
        assert due_at is not None and due_at > clock.now(), state
        site = sites["sunny"] if state == "restoring" else sites["dark"]
        kind: OperationKind = (
            "checkpoint"
            if state == "checkpointing"
            else "transfer"
            if state == "transferring"
            else "restore"
        )
        assert site.operation(migration_id, kind).done_at == due_at
        steps.append((state, kind))
        clock.set(due_at)
        await gateway.advance_once()
    assert state == "completed"
    assert steps == [
        ("checkpointing", "checkpoint"),
        ("transferring", "transfer"),
        ("restoring", "restore"),
    ]
    assert gateway.next_step_at is None, "nothing in flight, nothing due"
    assert running_at(sites, "job-1") == ["sunny"]
    # The three operations back to back, well inside one poll interval of the settings.
    with unit_of_work(world.sessions) as session:
        migration = session.get(Migration, migration_id)
        assert migration is not None and migration.completed_at is not None
        took_s = (migration.completed_at.replace(tzinfo=UTC) - started_at).total_seconds()
    assert took_s < gateway.settings.scheduler.poll_interval_s, took_s


async def test_restart_resumes_a_migration_in_flight(world: World) -> None:
    """A gateway that stops mid-migration leaves it in the store; a new one finishes it."""
    clock, sites, gateway = world.clock, world.sites, world.gateway
    clock.advance(60)
    await gateway.poll_once()
    [migration_id] = await gateway.plan_once()
    with unit_of_work(world.sessions) as session:
        migration = session.get(Migration, migration_id)
        assert migration is not None and migration.state == "checkpointing"
    await gateway.stop()  # as after a crash: nothing more happens to the migration

    clock.advance(600)  # meanwhile the checkpoint finished at the site
    successor = Gateway(gateway.settings, clock, world.sessions)
    await successor.start(schedule=False, connect_vens=False)
    try:
        for _ in range(40):
            with unit_of_work(world.sessions) as session:
                migration = session.get(Migration, migration_id)
                assert migration is not None
                if migration.state == "completed":
                    break
            clock.advance(30)
            await successor.poll_once()
        assert migration.state == "completed"
        assert running_at(sites, "job-1") == ["sunny"]
        # The reservation was consumed, not duplicated: the target holds the job's GPUs once.
        assert sites["sunny"].status().gpus_free == 8 - 2
    finally:
        await successor.stop()


async def test_vtn_that_comes_up_later_is_joined(
    session_factory: sessionmaker[Session], database_url: str
) -> None:
    clock = ManualClock(next_midnight_utc(datetime.now(UTC)) + timedelta(days=1))
    site = SimulatedSite(
        site_id="dark",
        token=TOKENS["dark"],
        clock=clock,
        trace=RenewableTrace.constant(0.0),
        gpus_total=8,
        it_power_max_kw=6.0,
    )
    runner, url = await start_site_server(site)
    # A free port for the VTN, which is not listening yet.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    vtn = SimulatedVtn(clock, vtn_id="LATE-VTN", poll_interval_s=1)
    settings = settings_for(
        {"dark": url}, f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", database_url
    )
    settings = settings.model_copy(
        update={"vtn": [settings.vtn[0].model_copy(update={"reconnect_initial_s": 0.2})]}
    )
    gateway = Gateway(settings, clock, session_factory)
    try:
        await gateway.start(schedule=False)
        assert not gateway.vens[0].available
        await vtn.start(port=port)
        await wait_for(lambda: gateway.vens[0].available, "the registration", timeout_s=20)
        assert gateway.vens[0].ven_id in vtn.registrations
    finally:
        await gateway.stop()
        await vtn.stop()
        await runner.cleanup()


async def test_job_that_finished_before_its_checkpoint_aborts_cleanly(world: World) -> None:
    from gateway.planner.snapshot import MigrationDecision

    clock, sites, gateway = world.clock, world.sites, world.gateway
    sites["dark"].add_job(JobSpec("short", 1, 0.6, 1.0, work_remaining_gpu_h=0.01))
    await gateway.poll_once()  # the gateway learns of the job while it runs
    clock.advance(3600)  # ... and it finishes before any move
    assert gateway.dispatcher is not None
    migration_id = gateway.dispatcher.create(
        MigrationDecision("short", "dark", "sunny", "test", expected_s=10.0, expected_kwh=0.01)
    )
    assert migration_id is not None
    await gateway.dispatcher.advance(migration_id)  # checkpoint refused: the job is finished
    await gateway.dispatcher.advance(migration_id)  # clean-up
    with unit_of_work(world.sessions) as session:
        migration = session.get(Migration, migration_id)
        assert migration is not None
        assert migration.state == "aborted" and migration.cleaned_up_at is not None
    assert sites["sunny"].reservations[migration_id].state == "released"
    await gateway.poll_once()
    with unit_of_work(world.sessions) as session:
        job = session.get(Job, "short")
        assert job is not None and job.state == "finished"


async def _opted_out_while_sunny_is_unreachable(world: World) -> str:
    """A shed at dark an hour ahead, answered optOut while sunny (the only room) does not
    answer its polls; the event's id."""
    clock, sites, vtn, gateway = world.clock, world.sites, world.vtn, world.gateway
    await wait_for(lambda: bool(vtn.registrations), "the registration", WAIT_S)
    # Every try of one poll fails (a single failure would be retried and go unnoticed).
    sites["sunny"].fail_next("status", count=gateway.settings.site_controller.retry_attempts)
    clock.advance(30)
    await gateway.poll_once()  # sunny does not answer: nowhere to move the dark site's job
    event_id = vtn.add_event_now(
        ScenarioEvent(
            issue_at=clock.now(),
            start_at=clock.now() + timedelta(hours=1),
            duration_s=3600,
            signal_name="LOAD_DISPATCH",
            signal_type="delta",
            intervals=(-1.0,),
            resource_ids=("dark",),
            kind="curtailment",
        )
    )
    await wait_for(
        lambda: [a.opt_type for a in vtn.received_answers if a.event_id == event_id] == ["optOut"],
        "the optOut at the VTN",
        WAIT_S,
    )
    return event_id


def _stored_opts(sessions: sessionmaker[Session], event_id: str) -> list[str]:
    with unit_of_work(sessions) as session:
        return list(
            session.scalars(
                select(EventResponse.opt)
                .join(Event)
                .where(Event.event_id == event_id)
                .order_by(EventResponse.id)
            )
        )


async def test_a_round_that_moves_jobs_at_an_events_site_leaves_its_optout_to_the_next(
    world: World,
) -> None:
    """sunny comes back and the round moves dark's job there for its renewable power: the
    snapshot the round reviewed the opts on still shows that job at dark, so the optOut of
    the shed at dark is not changed on it (opting in would promise a shed of a job that has
    just left, an hour before the event, lowering the baseline). The next round, on a fresh
    look, finds nothing left to shed at dark and keeps the optOut."""
    event_id = await _opted_out_while_sunny_is_unreachable(world)
    world.clock.advance(30)
    await world.gateway.poll_once()  # sunny is back
    [migration_id] = await world.gateway.plan_once()
    with unit_of_work(world.sessions) as session:
        migration = session.get(Migration, migration_id)
        assert migration is not None and migration.source_site_id == "dark"
        assert migration.event_ref is None, "a move for renewable power, not for the event"
    assert _stored_opts(world.sessions, event_id) == ["optOut"]
    world.clock.advance(60)
    await world.gateway.poll_once()
    await world.gateway.plan_once()
    assert _stored_opts(world.sessions, event_id) == ["optOut"]


async def test_a_change_of_plan_changes_the_opt_at_the_vtn(world: World) -> None:
    """optOut while the only room is offline, optIn once it is back, optOut again when the
    site the event names goes offline: each change reaches the VTN with its reason stored."""
    clock, sites, vtn, gateway = world.clock, world.sites, world.vtn, world.gateway
    # No renewable power anywhere: no round moves the job for green energy, only the event.
    sites["sunny"].trace = RenewableTrace.constant(0.0)
    event_id = await _opted_out_while_sunny_is_unreachable(world)

    def answers_for(event_id: str) -> list[str]:
        return [a.opt_type for a in vtn.received_answers if a.event_id == event_id]

    tries = gateway.settings.site_controller.retry_attempts
    clock.advance(30)
    await gateway.poll_once()  # sunny is back
    assert await gateway.plan_once() == [], "no move but the event's, which is not due"
    await wait_for(lambda: answers_for(event_id) == ["optOut", "optIn"], "the optIn", WAIT_S)

    sites["dark"].fail_next("status", count=tries)
    clock.advance(30)
    await gateway.poll_once()  # the site the event names is gone
    await gateway.plan_once()
    await wait_for(
        lambda: answers_for(event_id) == ["optOut", "optIn", "optOut"], "the second optOut", WAIT_S
    )

    with unit_of_work(world.sessions) as session:
        reasons = list(
            session.scalars(
                select(EventResponse.reason)
                .join(Event)
                .where(Event.event_id == event_id)
                .order_by(EventResponse.id)
            )
        )
        sent = list(
            session.scalars(
                select(EventResponse.sent_at).join(Event).where(Event.event_id == event_id)
            )
        )
    assert reasons[1].startswith("plan changed: ") and "dark: shed" in reasons[1]
    assert reasons[2] == "plan changed: dark is offline"
    assert all(at is not None for at in sent), "every answer acknowledged by the VTN"
