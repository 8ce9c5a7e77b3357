"""``dr-gateway campaign``: a blind campaign of randomised events against the real gateway.

The real :class:`gateway.daemon.gateway.Gateway` runs in-process as in the demo, with real OpenADR
over loopback to a :class:`simulators.vtn.SimulatedVtn` and real HTTP to one
:class:`simulators.site_controller.SimulatedSite` server per site, on the bundled real
renewable traces (:mod:`simulators.campaign_fleet`). The events come from the seeded
generator of :mod:`simulators.campaign_events`.

Time is a :class:`simulators.campaign_clock.SteppedClock`, started at the next UTC midnight
(openleadr judges event status on the wall clock; simulated time stays ahead of it). The
daemon's scheduler does not run: the campaign steps the clock by ``step_s`` and runs the
daemon's rounds itself, ``poll_once`` every step and ``plan_once`` with it (concurrently,
as the scheduler can) every ``plan_interval_s``. Events, modifications, cancellations and
job arrivals happen at their own instants between steps; after each event message the
clock holds until the VTN has the VEN's answer to that version (or ``answer_timeout_s``
of wall time passed, which is counted), so notice 0 is honoured without timing luck.
After every round a hook checks the fleet's invariants (:func:`check_invariants`); after
the run :mod:`simulators.campaign_score` scores every event from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import next_midnight_utc
from gateway.daemon.gateway import Gateway
from gateway.db import (
    DatabaseUnreachable,
    make_engine,
    make_session_factory,
    open_problem,
    unit_of_work,
    upgrade,
    url_problem,
)
from gateway.errors import GatewayError, InputError
from gateway.evaluation.weather import TRACE_YEAR
from gateway.migration.invariants import check_fleet
from gateway.settings import (
    FeasibilitySettings,
    PlannerSettings,
    Settings,
    parse_model,
    parse_settings,
    read_toml,
)
from gateway.settings_base import KeyProblem
from models import Event, EventResponse, Migration
from simulators.campaign_clock import SteppedClock
from simulators.campaign_events import (
    CampaignEvent,
    EventParams,
    TargetSite,
    generate_events,
    overlapping_pairs,
)
from simulators.campaign_fleet import (
    DEFAULT_SITES,
    DEFAULT_TRACES,
    CampaignSite,
    JobArrival,
    generate_jobs,
    load_fleet,
)
from simulators.campaign_score import Scores, event_scores, fetch_intervals, fetch_predictions
from simulators.campaign_score import score as score_events
from simulators.probes import SimulatorProbe
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from simulators.vtn import ScenarioEvent, SimulatedVtn

log = logging.getLogger(__name__)

VTN_ID = "CAMPAIGN-UTILITY"
TOKEN = "campaign-site-token"
_ANSWER_POLL_S = 0.01
_SETTLE_ROUNDS = 90
VTN_MAX_BODY_BYTES = 64 * 1024 * 1024
READINGS_KEPT = 10_000
"""Telemetry readings the campaign's VTN keeps (it scores from the database, not from them):
a week of 100 sites' readings would otherwise grow the process for nothing [-]."""
"""The largest message the simulated VTN reads (aiohttp's default is 1 MiB) [bytes]."""


class CampaignConfig(BaseModel):
    """The ``[campaign]`` table of a campaign file; ``planner`` and ``feasibility`` are the
    daemon's sections of the same names."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    days: Annotated[float, Field(gt=0, le=3660)] = 30.0
    events: Annotated[int, Field(ge=0, le=1_000_000)] = 200
    sites: Annotated[int, Field(ge=1, le=10_000)] = 6
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 1
    sites_file: Path = DEFAULT_SITES
    traces_file: Path = DEFAULT_TRACES
    trace_start: Annotated[str, Field(pattern=r"^\d\d-\d\d$")] = "06-01"
    """The day of the traces' year the campaign's first day replays (MM-DD)."""
    database_url: str = "sqlite:///var/campaign.db"
    step_s: Annotated[float, Field(ge=10, le=3600)] = 120.0
    """Simulated time between poll rounds [s]."""
    plan_interval_s: Annotated[float, Field(ge=10, le=86400)] = 300.0
    utilisation: Annotated[float, Field(gt=0, le=1)] = 0.6
    warmup_h: Annotated[float, Field(ge=0, le=87840)] = 24.0
    """No event starts in the first hours (the baseline wants days without events) [h]."""
    tail_h: Annotated[float, Field(ge=0, le=87840)] = 6.0
    """Every event ends this long before the campaign ends (the ledger covers it) [h]."""
    answer_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Wall seconds the clock holds for the VEN's answer to an event message [s]."""
    vtn_poll_interval_s: Annotated[int, Field(ge=1, le=60)] = 1
    """The poll interval the VTN asks the VEN for [wall s]."""
    planner: dict[str, Any] = Field(default_factory=dict)
    feasibility: dict[str, Any] = Field(default_factory=dict)

    @field_validator("trace_start")
    @classmethod
    def _day_of_year(cls, value: str) -> str:
        month, day = (int(part) for part in value.split("-"))
        try:
            datetime(TRACE_YEAR, month, day, tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"not a day of {TRACE_YEAR} (MM-DD): {exc}") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        if (problem := url_problem(url)) is not None:
            raise KeyProblem((), problem)  # a KeyProblem: the URL (and its password) not shown
        return url

    @model_validator(mode="after")
    def _daemon_sections(self) -> CampaignConfig:
        for key, model in (("planner", PlannerSettings), ("feasibility", FeasibilitySettings)):
            try:
                parse_model(model, getattr(self, key), key, "config/example.toml")
            except GatewayError as exc:
                raise KeyProblem((), str(exc)) from None
        return self


class _CampaignFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign: CampaignConfig = Field(default_factory=CampaignConfig)


def load_config(path: Path, **overrides: Any) -> CampaignConfig:
    """Read a campaign file; ``overrides`` that are not None replace its values."""
    data = read_toml(path, "campaign file", InputError)
    parsed = parse_model(_CampaignFile, data, str(path), "config/campaign.toml", InputError)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return parsed.campaign
    merged = parsed.campaign.model_dump() | changes
    return parse_model(CampaignConfig, merged, f"{path} (with options)", "--help", InputError)


# --- the invariant hook ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """What the round hook sees: the simulated sites, the gateway's database, the jobs."""

    sites: dict[str, SimulatedSite]
    sessions: sessionmaker[Session]
    job_ids: tuple[str, ...]
    at: datetime


RoundHook = Callable[[Fleet], Awaitable[list[str]]]
"""Called after every round; returns the invariant violations it found (messages)."""


async def check_invariants(fleet: Fleet) -> list[str]:
    """The fleet's four invariants (:mod:`gateway.migration.invariants`) now: their violations. The
    sites are read in-process (:class:`simulators.probes.SimulatorProbe`)."""
    probes = [SimulatorProbe(site) for site in fleet.sites.values()]
    report = await check_fleet(probes, fleet.sessions, fleet.job_ids)
    return report.lines()


# --- the run -------------------------------------------------------------------------------


@dataclass
class RunStats:
    """What the engine counts while it runs."""

    rounds: int = 0
    plan_rounds: int = 0
    invariant_checks: int = 0
    violations: list[str] = field(default_factory=list)
    messages_sent: Counter[str] = field(default_factory=Counter)
    """Event messages sent: issue, modify, cancel."""
    answers_awaited: int = 0
    answer_timeouts: list[str] = field(default_factory=list)
    answer_wall_s: list[float] = field(default_factory=list)
    jobs_arrived: int = 0
    jobs_rejected: int = 0
    rss_mb_by_day: list[float] = field(default_factory=list)
    deliverable: dict[str, bool] = field(default_factory=dict)
    """Per event: did the fleet's flexible power at its start cover its first request."""
    settle_rounds: int = 0


@dataclass(frozen=True)
class CampaignResult:
    config: CampaignConfig
    start_at: datetime
    wall_s: float
    events: tuple[CampaignEvent, ...]
    overlapping_pairs: int
    stats: RunStats
    scores: Scores
    migrations: dict[str, int]
    jobs_not_at_one_site: list[str]
    ledger_duplicates: int
    repeated_answers: int


def rss_mb() -> float:
    """Resident memory of this process [MB] (``/proc/self/statm``; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    import resource

    return pages * resource.getpagesize() / 1e6


def prepare_database(url: str, source: str = "database") -> None:
    """Start from nothing: an SQLite file is removed; a PostgreSQL database must hold no
    events yet. Then upgrade the schema. InputError led by ``source`` (where the URL came
    from) when the database cannot be opened."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        except OSError as exc:
            raise InputError(f"{source}: cannot start afresh at {path}: {exc.strerror}") from exc
    try:
        problem = open_problem(url)
    except DatabaseUnreachable as exc:
        raise GatewayError(f"{source}: {exc}") from exc
    if problem is not None:
        raise InputError(f"{source}: {problem}")
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if connection.scalar(text("SELECT COUNT(*) FROM events")):
                raise InputError(f"{parsed!r}: the database holds events; use an empty one")
    finally:
        engine.dispose()


def _settings(
    config: CampaignConfig, sites: Sequence[CampaignSite], urls: dict[str, str], vtn_url: str
) -> Settings:
    return parse_settings(
        {
            "database": {"url": config.database_url},
            "scheduler": {
                "poll_interval_s": config.step_s,
                "plan_interval_s": config.plan_interval_s,
            },
            "planner": dict(config.planner),
            "feasibility": dict(config.feasibility),
            "vtn": [{"id": "campaign-utility", "url": vtn_url, "ven_name": "dr-gateway-campaign"}],
            "site": [
                {
                    "id": s.site_id,
                    "gpus_total": s.spec.gpus_total,
                    "it_power_max_kw": s.spec.it_power_max_kw,
                    "pue": s.spec.pue,
                    "wan_bandwidth_gbps": s.spec.wan_bandwidth_gbps,
                    "controller_url": urls[s.site_id],
                    "controller_token": TOKEN,
                    "vtn": "campaign-utility",
                }
                for s in sites
            ],
        },
        "campaign",
    )


def _scenario_event(event: CampaignEvent) -> ScenarioEvent:
    return ScenarioEvent(
        issue_at=event.issue_at,
        start_at=event.start_at,
        duration_s=event.duration_s,
        signal_name="LOAD_DISPATCH",
        signal_type="delta",
        intervals=event.values_kw,
        interval_durations_s=event.interval_durations_s,
        resource_ids=event.resource_ids,
        kind="surplus" if event.direction == "absorb" else "curtailment",
    )


@dataclass(frozen=True, order=True)
class _Action:
    at: datetime
    order: int
    kind: str
    """issue, modify, cancel or job."""
    key: str
    payload: Any = field(compare=False)


def _timeline(
    events: Sequence[CampaignEvent], jobs: Sequence[JobArrival], start_at: datetime
) -> list[_Action]:
    actions: list[_Action] = []
    for job in jobs:
        at = start_at + timedelta(seconds=job.at_s)
        actions.append(_Action(at, 0, "job", job.spec.job_id, job))
    for event in events:
        actions.append(_Action(event.issue_at, 1, "issue", event.event_id, event))
        if event.modification is not None:
            actions.append(_Action(event.modification.at, 2, "modify", event.event_id, event))
        if event.cancel_at is not None:
            actions.append(_Action(event.cancel_at, 3, "cancel", event.event_id, event))
    return sorted(actions)


class _Engine:
    def __init__(
        self,
        config: CampaignConfig,
        clock: SteppedClock,
        sites: dict[str, SimulatedSite],
        vtn: SimulatedVtn,
        gateway: Gateway,
        sessions: sessionmaker[Session],
        hook: RoundHook,
        progress: Callable[[str], None] | None,
        pue: dict[str, float],
    ) -> None:
        self.config = config
        self.pue = pue
        self.clock = clock
        self.sites = sites
        self.vtn = vtn
        self.gateway = gateway
        self.sessions = sessions
        self.hook = hook
        self.progress = progress
        self.stats = RunStats()
        self.wall_started = time.monotonic()
        self.job_ids: list[str] = []
        self._answered: set[tuple[str, int]] = set()
        self._seen_answers = 0
        self._versions: dict[str, int] = {}
        self._ends: dict[str, datetime] = {}
        self._cancelled: set[str] = set()

    # -- actions --------------------------------------------------------------------------

    async def act(self, action: _Action) -> None:
        if action.kind == "job":
            self._add_job(action.payload)
            return
        event: CampaignEvent = action.payload
        if action.kind == "issue":
            self.vtn.add_event_now(_scenario_event(event), event_id=event.event_id)
            self._versions[event.event_id] = 0
            self._ends[event.event_id] = event.end_at
        elif event.event_id in self._cancelled or self.clock.now() >= event.end_at:
            return
        elif action.kind == "modify":
            assert event.modification is not None
            self._versions[event.event_id] = self.vtn.modify(
                event.event_id, event.modification.values_kw
            )
        else:
            self._versions[event.event_id] = self.vtn.cancel(event.event_id)
            self._cancelled.add(event.event_id)
        self.stats.messages_sent[action.kind] += 1
        await self._await_answer(event.event_id, self._versions[event.event_id])

    def _add_job(self, job: JobArrival) -> None:
        self.stats.jobs_arrived += 1
        ordered = list(self.sites.values())
        for index in job.site_order:
            try:
                ordered[index].add_job(job.spec)
            except ValueError:
                continue
            self.job_ids.append(job.spec.job_id)
            return
        self.stats.jobs_rejected += 1

    async def _await_answer(self, event_id: str, modification_number: int) -> None:
        """Hold the clock until the VTN has the VEN's answer to this version, then let the
        early plan round that an optIn asks for finish."""
        self.stats.answers_awaited += 1
        started = time.monotonic()
        while (event_id, modification_number) not in self._answered:
            for record in self.vtn.received_answers[self._seen_answers :]:
                self._answered.add((record.event_id, record.modification_number))
            self._seen_answers = len(self.vtn.received_answers)
            if (event_id, modification_number) in self._answered:
                break
            if time.monotonic() - started > self.config.answer_timeout_s:
                self.stats.answer_timeouts.append(f"{event_id} #{modification_number}")
                return
            await asyncio.sleep(_ANSWER_POLL_S)
        self.stats.answer_wall_s.append(time.monotonic() - started)
        # An optIn makes the daemon plan at once (Gateway.plan_soon); let it finish at this
        # instant, as the clock holds, rather than run into the next steps.
        early = getattr(self.gateway, "_plan_task", None)
        if isinstance(early, asyncio.Task) and not early.done():
            await asyncio.wait([early])

    # -- rounds ---------------------------------------------------------------------------

    async def round(self, plan: bool, poll: bool = True, advance: bool = False) -> None:
        # The poll first: a plan on the last step's statuses would miss the jobs that
        # arrived since (and send migrations to sites that filled up meanwhile).
        if poll:
            await self.gateway.poll_once()
        elif advance:
            await self.gateway.advance_once()
        if plan:
            await self.gateway.plan_once()
            self.stats.plan_rounds += 1
        self.stats.rounds += 1
        fleet = Fleet(self.sites, self.sessions, tuple(self.job_ids), self.clock.now())
        found = await self.hook(fleet)
        self.stats.invariant_checks += 1
        for message in found:
            if message not in self.stats.violations:
                self.stats.violations.append(message)

    def retire_ended(self) -> None:
        """Stop distributing events that are over, as a VTN does (openleadr's VTN would only
        drop them once the wall clock passes their end)."""
        now = self.clock.now()
        over = {e for e, end_at in self._ends.items() if end_at <= now}
        if not over:
            return
        for ven_id, queued in self.vtn.server.events.items():
            self.vtn.server.events[ven_id] = [
                e for e in queued if e.event_descriptor.event_id not in over
            ]
        for event_id in over:
            del self._ends[event_id]

    def estimate(self, event: CampaignEvent) -> None:
        """Could the fleet have delivered the event at its start? Its first request per
        site [kW] against, for a shed, the site's migratable running jobs (facility power)
        and, for an absorb, the site's free IT power (facility), each bounded by what the
        other sites could take or give. Ignores migration time: an upper bound."""
        asked_kw = event.peak_kw
        if event.modification is not None and event.modification.at <= event.start_at:
            asked_kw = max(abs(v) for v in event.modification.values_kw)
        others = [s for s in self.sites.values() if s.site_id not in event.site_ids]
        ok = True
        for site_id in event.site_ids:
            site = self.sites[site_id]
            if event.direction == "shed":
                it_kw = min(_movable_kw(site), sum(_headroom_kw(s) for s in others))
            else:
                it_kw = min(_headroom_kw(site), sum(_movable_kw(s) for s in others))
            ok = ok and it_kw * self.pue[site_id] + 1e-6 >= asked_kw
        self.stats.deliverable[event.event_id] = ok

    async def settle(self) -> None:
        """Poll without planning until no migration is in flight (or a bound is reached)."""
        for _ in range(_SETTLE_ROUNDS):
            with unit_of_work(self.sessions) as session:
                in_flight = session.scalar(
                    select(func.count())
                    .select_from(Migration)
                    .where(Migration.state.not_in(("completed", "aborted")))
                )
            if not in_flight:
                return
            await self.clock.advance(self.config.step_s)
            await self.round(plan=False)
            self.stats.settle_rounds += 1


def _movable_kw(site: SimulatedSite) -> float:
    """IT power of the site's running migratable jobs [kW]."""
    return sum(
        j.spec.power_kw for j in site.jobs.values() if j.state == "running" and j.spec.migratable
    )


def _headroom_kw(site: SimulatedSite) -> float:
    """IT power the site could still take [kW]."""
    return max(0.0, site.it_power_max_kw - site.it_power_kw())


async def run_campaign(
    config: CampaignConfig,
    *,
    hook: RoundHook = check_invariants,
    progress: Callable[[str], None] | None = None,
) -> CampaignResult:
    """Run a whole campaign on ``config.database_url`` (already prepared, see
    :func:`prepare_database`) and score it."""
    wall_start = time.monotonic()
    start_at = next_midnight_utc(datetime.now(UTC))
    span_s = config.days * 86400.0
    end_at = start_at + timedelta(seconds=span_s)
    fleet = load_fleet(config.sites, config.seed, config.sites_file, config.traces_file)
    month, day = (int(p) for p in config.trace_start.split("-"))
    trace_start_at = datetime(TRACE_YEAR, month, day, tzinfo=UTC)
    targets = [TargetSite(s.site_id, s.site_id, s.facility_max_kw) for s in fleet]
    events = generate_events(
        config.seed,
        config.events,
        targets,
        start_at,
        span_s,
        EventParams(warmup_s=config.warmup_h * 3600.0, tail_s=config.tail_h * 3600.0),
    )
    jobs = generate_jobs(config.seed, fleet, start_at, span_s, config.utilisation)
    clock = SteppedClock(start_at)
    sites = {
        s.site_id: SimulatedSite(
            site_id=s.site_id,
            token=TOKEN,
            clock=clock,
            trace=RenewableTrace(_series(s.renewable_kw), start_at, trace_start_at),
            gpus_total=s.spec.gpus_total,
            it_power_max_kw=s.spec.it_power_max_kw,
        )
        for s in fleet
    }
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    vtn = SimulatedVtn(
        clock,
        vtn_id=VTN_ID,
        poll_interval_s=config.vtn_poll_interval_s,
        readings_kept=READINGS_KEPT,
    )
    engine = make_engine(config.database_url)
    sessions = make_session_factory(engine)
    gateway: Gateway | None = None
    try:
        for site_id, site in sites.items():
            runner, urls[site_id] = await start_site_server(site)
            runners.append(runner)
        # A large fleet's reports (offers of every site for the coming hours) outgrow
        # aiohttp's 1 MiB default body; the simulated utility accepts them.
        vtn.server.app._client_max_size = VTN_MAX_BODY_BYTES
        await vtn.start()
        settings = _settings(config, fleet, urls, vtn.url)
        gateway = Gateway(settings, clock, sessions)
        pue = {s.site_id: s.spec.pue for s in fleet}
        runner_engine = _Engine(config, clock, sites, vtn, gateway, sessions, hook, progress, pue)
        await gateway.start(schedule=False)
        await _await_registration(vtn, config.answer_timeout_s)
        await _run_steps(runner_engine, _timeline(events, jobs, start_at), events, end_at)
        await runner_engine.settle()
        stats = runner_engine.stats
        job_ids = tuple(runner_engine.job_ids)
    finally:
        if gateway is not None:
            await gateway.stop()
        await vtn.stop()
        for runner in runners:
            await runner.cleanup()
    with engine.connect() as connection:
        rows = fetch_intervals(connection)
        predictions = fetch_predictions(connection)
        migrations = dict(
            connection.execute(
                select(Migration.state, func.count()).group_by(Migration.state)
            ).all()
        )
        ledger_duplicates = int(
            connection.scalar(
                text(
                    "SELECT COUNT(*) FROM (SELECT site_id, interval_start_at FROM ledger "
                    "GROUP BY site_id, interval_start_at HAVING COUNT(*) > 1) AS d"
                )
            )
            or 0
        )
        stored_events = int(
            connection.scalar(select(func.count(func.distinct(Event.event_id)))) or 0
        )
        answered = set(
            connection.scalars(
                select(func.distinct(Event.event_id)).join(
                    EventResponse, EventResponse.event_pk == Event.id
                )
            )
        )
    engine.dispose()
    log.info("%d events stored", stored_events)
    scores = score_events(event_scores(rows, predictions), len(events), stats.deliverable, answered)
    repeated = sum(
        n - 1
        for n in Counter((r.event_id, r.modification_number) for r in vtn.received_answers).values()
        if n > 1
    )
    return CampaignResult(
        config=config,
        start_at=start_at,
        wall_s=time.monotonic() - wall_start,
        events=events,
        overlapping_pairs=overlapping_pairs(events),
        stats=stats,
        scores=scores,
        migrations={str(k): int(v) for k, v in migrations.items()},
        jobs_not_at_one_site=_misplaced(sites, job_ids),
        ledger_duplicates=ledger_duplicates,
        repeated_answers=repeated,
    )


def _series(series: pd.Series) -> pd.Series:
    return series.astype("float64")


async def _await_registration(vtn: SimulatedVtn, timeout_s: float) -> None:
    started = time.monotonic()
    while not vtn.registrations:
        if time.monotonic() - started > timeout_s:
            raise InputError(f"the VEN did not register with the simulated VTN in {timeout_s:g} s")
        await asyncio.sleep(_ANSWER_POLL_S)


async def _run_steps(
    engine: _Engine,
    actions: list[_Action],
    events: Sequence[CampaignEvent],
    end_at: datetime,
) -> None:
    config, clock = engine.config, engine.clock
    next_round_at = clock.now()
    next_plan_at = clock.now()
    next_day = 1
    starting = sorted(events, key=lambda e: e.start_at)
    position = 0
    estimated = 0
    while True:
        # Between regular rounds the daemon polls and plans again at the instants events
        # need (a start, an interval boundary, an absorb's departure: Gateway.next_plan_at)
        # and advances its migrations when a site's operation is due (Gateway.next_step_at).
        instant = _earliest(engine.gateway.next_plan_at, engine.gateway.next_step_at)
        if instant is not None and clock.now() < instant < next_round_at:
            if position < len(actions) and actions[position].at <= instant:
                pass  # the action comes first
            elif instant <= end_at:
                await clock.set(instant)
                # As the daemon: an event's instant polls every site and plans
                # (Gateway.event_instant_once); an operation's, the sites in flight.
                plan_due = engine.gateway.next_plan_at
                if plan_due is not None and plan_due <= instant:
                    await engine.round(plan=True)
                else:
                    await engine.round(plan=False, poll=False, advance=True)
                continue
        if position < len(actions) and actions[position].at <= next_round_at:
            action = actions[position]
            position += 1
            if action.at > clock.now():
                await clock.set(action.at)
            await engine.act(action)
            continue
        if next_round_at > end_at:
            break
        await clock.set(max(clock.now(), next_round_at))
        while estimated < len(starting) and starting[estimated].start_at <= clock.now():
            event = starting[estimated]
            estimated += 1
            cancelled_early = event.cancel_at is not None and event.cancel_at <= event.start_at
            if not cancelled_early:
                engine.estimate(event)
        plan = clock.now() >= next_plan_at
        if plan:
            next_plan_at += timedelta(seconds=config.plan_interval_s)
        await engine.round(plan)
        engine.retire_ended()
        next_round_at += timedelta(seconds=config.step_s)
        if clock.elapsed_s >= next_day * 86400.0:
            engine.stats.rss_mb_by_day.append(rss_mb())
            if engine.progress is not None:
                s = engine.stats
                wall_s = time.monotonic() - engine.wall_started
                engine.progress(
                    f"  day {next_day:3d} ({wall_s:5.0f} s wall): rounds {s.rounds}, events sent "
                    f"{s.messages_sent['issue']}, answer timeouts {len(s.answer_timeouts)}, "
                    f"invariant breaks {len(s.violations)}, rss {s.rss_mb_by_day[-1]:.0f} MB"
                )
            next_day += 1


def _earliest(*instants: datetime | None) -> datetime | None:
    return min((i for i in instants if i is not None), default=None)


def _misplaced(sites: dict[str, SimulatedSite], job_ids: Sequence[str]) -> list[str]:
    """Jobs not listed at exactly one site (with where they are listed); a job a site
    listed as finished and then dropped (``SimulatedSite.forgotten``) counts as there."""
    out = []
    for job_id in job_ids:
        where = [s.site_id for s in sites.values() if job_id in s.jobs or job_id in s.forgotten]
        if len(where) != 1:
            out.append(f"{job_id}: {where}")
    return out


def run_summary(result: CampaignResult) -> dict[str, Any]:
    """The headline figures of a run, flat (what the benchmarks print)."""
    s, stats = result.scores, result.stats
    latencies = stats.answer_wall_s
    return {
        "days": result.config.days,
        "sites": result.config.sites,
        "wall_s": round(result.wall_s, 1),
        "events_issued": s.events_issued,
        "modifications": stats.messages_sent["modify"],
        "cancellations": stats.messages_sent["cancel"],
        "opted_in": s.opted_in,
        "opted_out": s.opted_out,
        "unanswered": s.unanswered,
        "delivered_90_share": s.delivered_90_share,
        "energy_share": s.energy_share,
        "opted_out_deliverable": s.opted_out_deliverable,
        "opted_out_estimated": s.opted_out_estimated,
        "rounds": stats.rounds,
        "invariant_checks": stats.invariant_checks,
        "invariant_breaks": len(stats.violations),
        "answer_timeouts": len(stats.answer_timeouts),
        "answer_median_s": sorted(latencies)[len(latencies) // 2] if latencies else 0.0,
    }


def main_campaign(
    config_path: Path,
    *,
    days: float | None = None,
    events: int | None = None,
    sites: int | None = None,
    seed: int | None = None,
    database: str | None = None,
    json_path: Path | None = None,
) -> int:
    """``dr-gateway campaign``: run, print the table, write JSON; 1 when an invariant broke
    or an event went unanswered."""
    from simulators.campaign_report import format_result, write_json

    config = load_config(
        config_path, days=days, events=events, sites=sites, seed=seed, database_url=database
    )
    openleadr_log = logging.getLogger("openleadr")
    openleadr_log.setLevel(max(logging.ERROR, openleadr_log.getEffectiveLevel()))
    prepare_database(
        config.database_url,
        "--database" if database is not None else f"{config_path}: campaign.database_url",
    )
    print(
        f"campaign: {config.events} events over {config.days:g} simulated days, "
        f"{config.sites} sites, seed {config.seed}, steps of {config.step_s:g} s",
        flush=True,
    )
    result = asyncio.run(run_campaign(config, progress=lambda line: print(line, flush=True)))
    print(format_result(result), end="")
    if json_path is not None:
        write_json(result, json_path)
    broken = result.stats.violations or result.scores.unanswered or result.stats.answer_timeouts
    return 1 if broken else 0
