"""``dr-gateway demo``: a simulated utility, simulated solar sites and the real daemon.

The simulators and the daemon run in one process but talk over loopback HTTP on OS-assigned
ports, exactly as they would across machines: OpenADR 2.0b between the VTN and the VEN, the
site-controller API (docs/site-api.md) between the dispatcher and the sites.

Time is a :class:`simulators.campaign_clock.SteppedClock` that starts at the next UTC
midnight (simulated time stays ahead of the wall, as openleadr judges event status on the
wall clock). The demo steps it and runs the daemon's rounds itself: a poll round every
``[scheduler] poll_interval_s``, a planning round every ``plan_interval_s`` and at each
instant an event needs one (``Gateway.next_plan_at``); an event is issued at its instant and
the clock holds until the VEN has answered it. The pace is at most ``speed`` simulated seconds
per wall second; on a busy machine the rounds set the pace, so load changes the wall time the
demo takes, never what it delivers. After every round the fleet's invariants
(:func:`gateway.migration.invariants.check_fleet`) are checked; at the end the demo prints
them and the delivery of every event it opted in to, and fails when either broke its promise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import next_midnight_utc
from gateway.daemon.gateway import Gateway
from gateway.db import make_engine, make_session_factory, unit_of_work, upgrade, url_problem
from gateway.errors import ConfigError
from gateway.evaluation.weather import BUNDLED_WEATHER, TRACE_YEAR, pv_power_kw
from gateway.migration.invariants import check_fleet
from gateway.reports.delivery import describe, read_delivery
from gateway.reports.summary import format_report, site_report
from gateway.settings import Settings, load_settings
from gateway.sites.records import JobSpec
from gateway.startup import check_database
from models import Event, EventResponse, Migration
from simulators.campaign_clock import SteppedClock
from simulators.probes import SimulatorProbe
from simulators.scenario import Scenario, load_scenario
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from simulators.vtn import ScenarioEvent, SimulatedVtn

log = logging.getLogger(__name__)

PROGRESS_EVERY_H = 3.0
ANSWER_TIMEOUT_S = 30.0
"""Wall seconds the clock holds for the VEN to register or to answer an event [s]."""


def run_demo(
    config_path: Path,
    scenario_path: Path,
    *,
    hours: float | None = None,
    speed: float | None = None,
    keep_db: bool = False,
) -> int:
    settings = load_settings(config_path)
    scenario = load_scenario(scenario_path)
    # The simulated VTN shares openleadr's logger; its set-up advice is noise in a demo.
    openleadr_log = logging.getLogger("openleadr")
    openleadr_log.setLevel(max(logging.ERROR, openleadr_log.getEffectiveLevel()))
    _check_matches(settings, scenario, config_path, scenario_path)
    if (problem := url_problem(settings.database.url)) is not None:
        raise ConfigError(f"{config_path}: database.url: {problem}")
    try:
        _prepare_database(settings.database.url, keep_db)
    except OSError as exc:
        raise ConfigError(f"{config_path}: database.url: {exc}") from exc
    check_database(settings, config_path)
    upgrade(settings.database.url)
    return asyncio.run(_run(settings, scenario, hours or scenario.hours, speed or scenario.speed))


def _check_matches(
    settings: Settings, scenario: Scenario, config_path: Path, scenario_path: Path
) -> None:
    if len(settings.vtn) != 1:
        raise ConfigError(f"{config_path}: vtn: the demo needs exactly one [[vtn]]")
    configured = {s.id for s in settings.site}
    for i, site in enumerate(scenario.site):
        if site.id not in configured:
            raise ConfigError(
                f"{scenario_path}: site[{i}].id: {site.id!r} is not a [[site]] of {config_path}"
            )
    for i, site_cfg in enumerate(settings.site):
        if site_cfg.id not in {s.id for s in scenario.site}:
            raise ConfigError(
                f"{config_path}: site[{i}].id: {site_cfg.id!r} has no [[site]] in {scenario_path}"
            )


def _prepare_database(url: str, keep_db: bool) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not keep_db:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _weather_path(name: str) -> Path:
    return BUNDLED_WEATHER.get(name) or Path(name)


async def _run(settings: Settings, scenario: Scenario, hours: float, speed: float) -> int:
    start_at = next_midnight_utc(datetime.now(UTC))
    month, day = (int(p) for p in scenario.trace_start.split("-"))
    trace_start_at = datetime(TRACE_YEAR, month, day, tzinfo=UTC)
    series: dict[str, pd.Series] = {
        s.id: pv_power_kw(_weather_path(s.weather), s.pv_capacity_kw) for s in scenario.site
    }
    clock = SteppedClock(start_at, nominal_speed=speed)
    print(
        f"demo: {hours:g} simulated hours from {start_at:%Y-%m-%d %H:%M} UTC at up to {speed:g}x "
        f"(about {hours * 3600 / speed:.0f} s); weather of {scenario.trace_start} from pvlib"
    )
    feas = settings.feasibility
    sites: dict[str, SimulatedSite] = {}
    for s in scenario.site:
        cfg = settings.site_by_id(s.id)
        sites[s.id] = SimulatedSite(
            site_id=s.id,
            token=cfg.controller_token,
            clock=clock,
            trace=RenewableTrace(series[s.id], start_at, trace_start_at),
            gpus_total=cfg.gpus_total,
            it_power_max_kw=cfg.it_power_max_kw,
            idle_kw_per_gpu=s.idle_kw_per_gpu,
            checkpoint_write_gb_per_s=feas.checkpoint_write_gb_per_s,
            restore_gb_per_s=feas.restore_gb_per_s,
            efficiency=feas.efficiency,
            jobs=[
                JobSpec(
                    job_id=j.id,
                    gpus=j.gpus,
                    power_kw=j.power_kw,
                    checkpoint_gb=j.checkpoint_gb,
                    work_remaining_gpu_h=j.work_gpu_h,
                    migratable=j.migratable,
                    flex_tier=j.flex_tier,
                )
                for j in scenario.job
                if j.site == s.id
            ],
        )
    runners = []
    urls: dict[str, str] = {}
    for site_id, site in sites.items():
        runner, url = await start_site_server(site)
        runners.append(runner)
        urls[site_id] = url
    events = [
        ScenarioEvent(
            issue_at=start_at + timedelta(hours=e.issue_h),
            start_at=start_at + timedelta(hours=e.start_h),
            duration_s=round(e.duration_h * 3600),
            signal_name=e.signal_name,
            signal_type=e.signal_type,
            intervals=tuple(e.values),
            resource_ids=tuple(settings.site_by_id(r).openadr_resource_id for r in e.resources),
            kind=e.kind,
        )
        for e in scenario.event
    ]
    vtn = SimulatedVtn(
        clock, vtn_id="DEMO-UTILITY", poll_interval_s=scenario.vtn_poll_interval_s, scenario=events
    )
    await vtn.start()
    live = settings.model_copy(
        update={
            "site": [s.model_copy(update={"controller_url": urls[s.id]}) for s in settings.site],
            "vtn": [settings.vtn[0].model_copy(update={"url": vtn.url})],
        }
    )
    engine = make_engine(settings.database.url)
    sessions = make_session_factory(engine)
    gateway = Gateway(live, clock, sessions)
    probes = [SimulatorProbe(site) for site in sites.values()]
    try:
        await gateway.start(schedule=False)
        await _registered(vtn)
        stepper = _Stepper(live, clock, gateway, vtn, probes, sessions, speed)
        await stepper.run(events, start_at + timedelta(hours=hours), start_at)
    finally:
        await gateway.stop()
        await vtn.stop()
        for runner in runners:
            await runner.cleanup()
    code = _summary(sessions, vtn, events, stepper.checks, stepper.violations)
    engine.dispose()
    return code


class _Stepper:
    """Steps the clock and runs the daemon's rounds, as its scheduler would, in order."""

    def __init__(
        self,
        settings: Settings,
        clock: SteppedClock,
        gateway: Gateway,
        vtn: SimulatedVtn,
        probes: list[SimulatorProbe],
        sessions: sessionmaker[Session],
        speed: float,
    ) -> None:
        self.clock = clock
        self.gateway = gateway
        self.vtn = vtn
        self.probes = probes
        self.sessions = sessions
        self.speed = speed
        self.poll_s = settings.scheduler.poll_interval_s
        self.plan_s = settings.scheduler.plan_interval_s
        self.checks = 0
        self.violations: list[str] = []

    async def run(self, events: list[ScenarioEvent], end_at: datetime, start_at: datetime) -> None:
        pending = sorted(events, key=lambda e: e.issue_at)
        next_poll_at = next_plan_at = self.clock.now()
        next_progress = start_at + timedelta(hours=PROGRESS_EVERY_H)
        wall_start = time.monotonic()
        while True:
            instant = self.gateway.next_plan_at
            step_at = self.gateway.next_step_at  # a migration's operation is due
            candidates = [next_poll_at, next_plan_at]
            for at in (instant, step_at):
                if at is not None and at > self.clock.now():
                    candidates.append(at)
            if pending:
                candidates.append(pending[0].issue_at)
            due = max(min(candidates), self.clock.now())
            if due > end_at:
                return
            await self._pace(due, start_at, wall_start)
            await self.clock.set(due)
            if pending and pending[0].issue_at <= due:
                await self._issue(pending.pop(0))
                continue
            if instant is not None and instant <= due:
                await self.gateway.event_instant_once()  # polls, then plans, as the daemon
                await self._check()
                continue
            rounds: list[Awaitable[object]] = []
            if due >= next_poll_at:
                rounds.append(self.gateway.poll_once())
                next_poll_at += timedelta(seconds=self.poll_s)
            elif step_at is not None and step_at <= due:
                rounds.append(self.gateway.advance_once())
            if due >= next_plan_at:
                rounds.append(self.gateway.plan_once())
                next_plan_at += timedelta(seconds=self.plan_s)
            await asyncio.gather(*rounds)  # concurrent, as the daemon's scheduler runs them
            await self._check()
            if due >= next_progress:
                _progress(self.sessions, due, start_at, self.vtn)
                next_progress += timedelta(hours=PROGRESS_EVERY_H)

    async def _pace(self, due: datetime, start_at: datetime, wall_start: float) -> None:
        """No faster than ``speed`` simulated seconds per wall second."""
        ahead_s = (due - start_at).total_seconds() / self.speed - (time.monotonic() - wall_start)
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)

    async def _issue(self, spec: ScenarioEvent) -> None:
        """Issue an event now and hold the clock until the VEN has answered it (and the
        early planning round an optIn asks for has run)."""
        event_id = self.vtn.add_event_now(spec)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not any(a.event_id == event_id for a in self.vtn.received_answers):
            if time.monotonic() > deadline:
                log.warning("the VEN did not answer %s within %g s", event_id, ANSWER_TIMEOUT_S)
                return
            await asyncio.sleep(0.01)
        early = self.gateway.plan_task
        if early is not None and not early.done():
            await asyncio.wait([early])

    async def _check(self) -> None:
        report = await check_fleet(self.probes, self.sessions)
        self.checks += 1
        for line in report.lines():
            if line not in self.violations:
                self.violations.append(line)
                log.error("invariant broken: %s", line)


async def _registered(vtn: SimulatedVtn) -> None:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while not vtn.registrations:
        if time.monotonic() > deadline:
            raise ConfigError(f"the VEN did not register within {ANSWER_TIMEOUT_S:g} s")
        await asyncio.sleep(0.01)


def _progress(sessions: object, now: datetime, start_at: datetime, vtn: SimulatedVtn) -> None:
    with unit_of_work(sessions) as session:  # type: ignore[arg-type]
        states = Counter(
            dict(
                session.execute(
                    select(Migration.state, func.count()).group_by(Migration.state)
                ).all()
            )
        )
    hours = (now - start_at).total_seconds() / 3600
    print(
        f"  +{hours:4.1f} h  events issued {len(vtn.issued)}, answers {len(vtn.opts)}, "
        f"migrations completed {states.get('completed', 0)}, aborted {states.get('aborted', 0)}, "
        f"in flight {sum(v for k, v in states.items() if k not in ('completed', 'aborted'))}"
    )


def _summary(
    sessions: object,
    vtn: SimulatedVtn,
    events: list[ScenarioEvent],
    checks: int,
    violations: list[str],
) -> int:
    with unit_of_work(sessions) as session:  # type: ignore[arg-type]
        answers = session.execute(
            select(
                Event.event_id, Event.modification_number, EventResponse.opt, EventResponse.reason
            )
            .join(EventResponse, EventResponse.event_pk == Event.id)
            .order_by(Event.start_at)
        ).all()
        completed = session.scalar(
            select(func.count()).select_from(Migration).where(Migration.state == "completed")
        )
        rows = site_report(session.connection())
        delivery = read_delivery(session.connection())
    print("\nEvents (sent by the simulated VTN over OpenADR, answered by the gateway):")
    kinds: dict[str, str] = {}
    for issued in vtn.issued:
        kinds[issued.event_id] = issued.spec.kind
    for event_id, mod, opt_type, reason in answers:
        print(f"  {kinds.get(event_id, '?'):<11} {event_id} #{mod}: {opt_type}  ({reason})")
    print("\nPer-site report (dr-gateway report, from the site_report SQL view):")
    print(format_report(rows, "table"), end="")
    print(
        "\nDelivery of the events opted in to (event_delivery view: requested against "
        "delivered at the facility meter):"
    )
    print("\n".join(describe(delivery)))
    print(
        f"\nFleet invariants (one site per job, no job lost, reservations balance, no site "
        f"over its GPUs), checked after each of {checks} rounds: "
        + ("all held" if not violations else f"{len(violations)} broken")
    )
    for line in violations:
        print(f"  {line}")
    answered_kinds = {kinds.get(r.event_id) for r in vtn.opts}
    problems = [f"{len(violations)} invariant violation(s)"] if violations else []
    for short in delivery.short:
        problems.append(
            f"event {short.event_id} delivered {100 * short.ratio:.1f} % of its request "
            f"(at least {100 * delivery.threshold:.0f} % promised)"
        )
    for kind in ("curtailment", "surplus"):
        if any(e.kind == kind for e in events) and kind not in answered_kinds:
            problems.append(f"no {kind} event was answered")
    if not completed:
        problems.append("no migration completed")
    if problems:
        print(f"\ndemo: FAILED: {'; '.join(problems)}")
        return 1
    print(
        f"\ndemo: OK: {len(vtn.opts)} answers reached the VTN, {completed} migrations completed, "
        f"{delivery.met} of {delivery.opted_in} opted-in events delivered, "
        f"invariants held in {checks} checks"
    )
    return 0
