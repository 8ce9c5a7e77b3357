"""The gateway daemon: one asyncio process that wires every layer together.

- polls every site controller, stores samples, jobs and ledger rows, and advances migrations
  (every ``scheduler.poll_interval_s``, and when a site's operation is expected done);
- runs the planner (every ``scheduler.plan_interval_s``), stores offers, dispatches moves;
- answers OpenADR events through one VEN connection per configured VTN.

One asyncio loop carries every VTN's polls and reports, the site calls and the dashboard; so
the heavy parts of a round (reading the store, building the fleet's snapshot, planning,
deciding on the new events of a distribution) run in a worker thread (``asyncio.to_thread``),
while the loop only awaits them. The locks keep their meaning: one plan round at a time
(``_plan_lock``), one poll round at a time (``_poll_lock``), and one task at a time storing
or sending a VTN's answers (``VenConnection``). A thread reads the site statuses as a copy
taken on the loop.

Everything that must survive a restart is in the database: on start in-flight migrations are
advanced again (their calls are idempotent), events and answers are read back from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.baseline_forecast import BaselineForecast, predicted_baseline_kw
from gateway.clock import Clock
from gateway.db import unit_of_work
from gateway.deadlines import StepTimeouts
from gateway.dispatch import Dispatcher, DispatchParams
from gateway.errors import ConfigError, GatewayError, SiteControllerError
from gateway.events import DrEvent, OptDecision
from gateway.maintenance import store as maintenance_store
from gateway.maintenance.sender import AvailabilitySender, RoundResult
from gateway.planner import opt
from gateway.planner.offers import SiteOffer, hourly_offers
from gateway.planner.params import PolicyParams
from gateway.planner.plan import plan
from gateway.planner.requests import event_requests
from gateway.planner.review import review
from gateway.planner.signals import targeted_sites
from gateway.planner.snapshot import SiteRequest, Snapshot
from gateway.planner.timing import next_plan_at
from gateway.settings import Settings
from gateway.settings_sites import SiteSettings
from gateway.sites.client import RetryPolicy, SiteControllerClient
from gateway.sites.records import SiteStatus
from gateway.sites.tls import optional_client_context
from gateway.ven import store as event_store
from gateway.ven.client import VenConnection
from gateway.ven.ei_report import ResourceStatus
from gateway.web import DaemonState, VtnState, WebServer, make_app

log = logging.getLogger(__name__)

WORKER_THREADS_PER_VTN = 2
"""Worker threads per VTN: its distribution being answered, and an opt change or resend."""
WORKER_THREADS_BASE = 8
"""Worker threads for the rounds (poll, plan, offers) and the dashboard."""


class Gateway:
    def __init__(
        self, settings: Settings, clock: Clock, session_factory: sessionmaker[Session]
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._sessions = session_factory
        self._http: aiohttp.ClientSession | None = None
        self.clients: dict[str, SiteControllerClient] = {}
        self.statuses: dict[str, SiteStatus] = {}
        self.offers: dict[str, tuple[SiteOffer, ...]] = {}
        """The newest flexibility offers of each site, by interval start (reports read them)."""
        self.dispatcher: Dispatcher | None = None
        self.vens: list[VenConnection] = []
        self._site_up: dict[str, bool] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._poll_lock = asyncio.Lock()
        self._plan_lock = asyncio.Lock()
        self._plan_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rounds: set[asyncio.Task[Any]] = set()
        """Rounds in progress (scheduled or asked for): stop() lets them finish."""
        self._known_baselines: dict[tuple[str, int, str], float | None] = {}
        """Baselines of sheds in force, by (request source, modification, site) [kW]."""
        self.next_plan_at: datetime | None = None
        """The next instant an opted-in event needs a planning round (set by each round)."""
        self.web: WebServer | None = None
        """The dashboard, API and metrics server while it runs (``[web]``)."""
        self.availability = AvailabilitySender(settings, clock, session_factory)
        f = settings.feasibility
        self.policy_params = PolicyParams(
            feasibility=f.params(gpus=1),
            checkpoint_write_gb_per_s=f.checkpoint_write_gb_per_s,
            restore_gb_per_s=f.restore_gb_per_s,
            min_residence_s=settings.planner.min_residence_s,
            min_gain_s=settings.planner.min_gain_s,
            max_migrations=settings.planner.max_migrations_per_plan,
            horizon_s=settings.planner.forecast_horizon_s,
            event_guard_s=settings.planner.event_guard_s,
            delivery_margin=settings.planner.delivery_margin,
        )
        self.signal_policy = settings.signal_policy()

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, *, schedule: bool = True, connect_vens: bool = True) -> None:
        # The worker threads of asyncio.to_thread. Each VTN's distributions, the rounds and
        # the dashboard's database checks wait on the database in them, and SQLite lets one
        # write at a time: asyncio's default pool (CPU count + 4) fills with writers waiting
        # for their turn, and a quick /healthz check or a site poll queues behind them.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(
                max_workers=WORKER_THREADS_PER_VTN * len(self.settings.vtn) + WORKER_THREADS_BASE,
                thread_name_prefix="gateway-worker",
            )
        )
        with unit_of_work(self._sessions) as session:
            fleet.sync_sites(session, self.settings.site, self.clock.now())
            fleet.sync_programmes(session, self.settings.baseline_programmes(), self.clock.now())
            maintenance_store.sync_config(session, self.settings.maintenance, self.clock.now())
        if self.settings.web.enabled:
            await self._start_web()
        self._http = aiohttp.ClientSession()
        calls = self.settings.site_controller
        retry = RetryPolicy(calls.retry_attempts, calls.retry_initial_s, calls.retry_max_s)
        self.clients = {
            s.id: SiteControllerClient(
                s.id,
                str(s.controller_url).rstrip("/"),
                s.controller_token,
                self._http,
                calls.request_timeout_s,
                retry=retry,
                ssl_context=optional_client_context(
                    s.controller_ca_path, s.controller_cert_path, s.controller_key_path
                ),
            )
            for s in self.settings.site
        }
        f = self.settings.feasibility
        timeouts = StepTimeouts(
            margin=f.timeout_margin,
            floor_s=f.timeout_floor_s,
            efficiency=f.efficiency,
            checkpoint_write_gb_per_s=f.checkpoint_write_gb_per_s,
            restore_gb_per_s=f.restore_gb_per_s,
        )
        self.dispatcher = Dispatcher(
            self._sessions, self.clients, self.clock, DispatchParams(timeouts=timeouts)
        )
        await self.poll_once()  # also resumes migrations left in flight by a previous run
        self._load_offers()
        if connect_vens:
            for vtn in self.settings.vtn:
                self.vens.append(
                    VenConnection(
                        vtn,
                        [s for s in self.settings.site if s.vtn == vtn.id],
                        self.clock,
                        self._sessions,
                        self.decide,
                        self.site_load_kw,
                        vtn.report_interval_s,
                        status=self.site_status,
                        offers=self.site_offers,
                        unsupported=self.signal_policy.unsupported,
                        after_opt_in=self.plan_soon,
                        decide_many=self.decide_many,
                    )
                )
            # All at once: a VTN that is slow to answer does not hold up the others.
            await asyncio.gather(*(self._connect(connection) for connection in self.vens))
        if schedule:
            self._start_scheduler()

    async def _connect(self, connection: VenConnection) -> None:
        """Start one VEN connection; it keeps itself connected from then on (outages,
        re-registration: :mod:`gateway.ven.reconnect`)."""
        try:
            await connection.start()
        except ConfigError as exc:
            # Configuration or authentication: that VTN stays stopped, the rest runs.
            log.error("VTN %s stopped: %s", connection.vtn_id, exc)
        except GatewayError:
            # Not ready at start: keep trying in the background with back-off and jitter
            # (the connection has logged why, once).
            connection.retry_in_background()

    async def _start_web(self) -> None:
        """Serve the dashboard, API, /healthz and /metrics (``docs/web.md``)."""
        web = self.settings.web
        app = make_app(self._sessions, web, self.clock, self.web_state)
        server = WebServer(app, web.host, web.port)
        try:
            url = await server.start()
        except OSError as exc:
            raise ConfigError(f"web: cannot listen on {web.host}:{web.port}: {exc}") from exc
        self.web = server
        log.info("dashboard, API and metrics at %s/ (bearer token from [web])", url)

    def web_state(self) -> DaemonState:
        """What /healthz reports of the daemon beyond the database."""
        return DaemonState(
            scheduler_running=self._scheduler is not None and self._scheduler.running,
            stopping=self._stopping,
            vtns=tuple(VtnState(c.vtn_id, c.available) for c in self.vens),
        )

    def _start_scheduler(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        poll_s = self.clock.wall_s(self.settings.scheduler.poll_interval_s)
        plan_s = self.clock.wall_s(self.settings.scheduler.plan_interval_s)
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(self._guarded(self.poll_once), "interval", seconds=poll_s, **common)
        scheduler.add_job(self._guarded(self.plan_once), "interval", seconds=plan_s, **common)
        scheduler.add_job(  # maintenance windows: at once, then with every poll
            self._guarded(self.availability_once),
            "interval",
            seconds=poll_s,
            next_run_time=datetime.now(UTC),
            **common,
        )
        scheduler.start()
        self._scheduler = scheduler

    def _guarded(
        self, step: Callable[[], Awaitable[object]]
    ) -> Callable[[], Coroutine[None, None, None]]:
        """The task boundary: log a failed round and keep the daemon alive."""

        async def run() -> None:
            if self._stopping:
                return  # fired while the daemon stops: the HTTP session may be closed already
            task = asyncio.current_task()
            if task is not None:
                self._rounds.add(task)
            try:
                await step()
            except Exception:
                log.exception("%s failed; the next round will try again", run.__name__)
            finally:
                if task is not None:
                    self._rounds.discard(task)

        run.__name__ = getattr(step, "__name__", "round")
        return run

    async def stop(self) -> None:
        self._stopping = True
        # No new rounds; the rounds in progress finish, so that what they hold is committed
        # (shutting the scheduler down at once would cancel them mid-call).
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()
        current = asyncio.current_task()
        in_progress = [task for task in self._rounds if task is not current]
        if self._plan_task is not None:  # an early round asked for by a VEN
            in_progress.append(self._plan_task)
        await asyncio.gather(*in_progress, return_exceptions=True)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
        async with self._poll_lock, self._plan_lock:
            for connection in self.vens:
                try:
                    await connection.stop()
                except Exception:
                    log.exception("stopping the VEN for %s failed", connection)
            self.vens = []
            if self._http is not None:
                await self._http.close()
                self._http = None
        if self.web is not None:  # last: /healthz says "stopping" until the end
            await self.web.stop()
            self.web = None

    # -- rounds ---------------------------------------------------------------------------

    async def poll_once(self, site_ids: Collection[str] | None = None) -> None:
        """Poll every site (or those of ``site_ids``), record what they say, then move
        migrations on."""
        async with self._poll_lock:
            if self._stopping:
                return  # queued behind the round that stop() waited for
            polled = [s for s in self.settings.site if site_ids is None or s.id in site_ids]
            results = await asyncio.gather(
                *(self.clients[s.id].status() for s in polled),
                return_exceptions=True,
            )
            now = self.clock.now()
            answered: list[tuple[SiteSettings, SiteStatus | None]] = []
            for cfg, result in zip(polled, results, strict=True):
                if isinstance(result, SiteControllerError):
                    if self._site_up.get(cfg.id) is not False:
                        log.warning("site %s is unreachable: %s", cfg.id, result)
                    answered.append((cfg, None))
                elif isinstance(result, BaseException):
                    raise result
                else:
                    answered.append((cfg, result))
            # Stored in a worker thread: with SQLite a write waits while another thread
            # stores a large distribution, and the loop must not wait with it.
            await asyncio.to_thread(self._record_statuses, answered, now)
            for cfg, status in answered:
                if status is None:
                    self.statuses.pop(cfg.id, None)
                    self._site_up[cfg.id] = False
                    continue
                if self._site_up.get(cfg.id) is not True:
                    log.info("site %s is online", cfg.id)
                self._site_up[cfg.id] = True
                self.statuses[cfg.id] = status
            if self.dispatcher is not None:
                await self.dispatcher.advance_all()
        self._advance_when_due()

    def _record_statuses(
        self, answered: Sequence[tuple[SiteSettings, SiteStatus | None]], now: datetime
    ) -> None:
        """Store what each polled site said (None: unreachable) in one transaction."""
        with unit_of_work(self._sessions) as session:
            for cfg, status in answered:
                if status is None:
                    fleet.mark_offline(session, cfg.id, now)
                else:
                    fleet.record_status(session, cfg, status, now)

    async def advance_once(self) -> None:
        """At the instant a site's operation is expected done (:attr:`next_step_at`): poll
        the sites of the migrations in flight, so that the ledger samples their power as it
        changes, not a poll interval later, and move the migrations on."""
        if self.dispatcher is None:
            return
        await self.poll_once(self.dispatcher.sites_in_flight())

    @property
    def next_step_at(self) -> datetime | None:
        """When an operation of a migration in flight is next expected done, or None."""
        return None if self.dispatcher is None else self.dispatcher.next_due_at

    def _advance_when_due(self) -> None:
        """Run :meth:`advance_once` at :attr:`next_step_at` (one pending run, replaced)."""
        self._run_once_at(self.next_step_at, self.advance_once, "migration-step")

    def _run_once_at(
        self, at: datetime | None, step: Callable[[], Awaitable[object]], job_id: str
    ) -> None:
        """Run ``step`` once at simulated instant ``at``; a later call with the same
        ``job_id`` replaces the pending run. Nothing without a running scheduler."""
        if at is None or self._scheduler is None or not self._scheduler.running:
            return
        wait_s = self.clock.wall_s((at - self.clock.now()).total_seconds())
        self._scheduler.add_job(
            self._guarded(step),
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=max(0.0, wait_s)),
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def event_instant_once(self) -> list[str]:
        """At an instant an event needs (:attr:`next_plan_at`): poll every site, so that the
        ledger's rows break at the event's start, interval boundaries and end, then plan."""
        await self.poll_once()
        return await self.plan_once()

    async def plan_once(self) -> list[str]:
        """Plan and dispatch the moves first (what events wait for), then refresh the
        flexibility offers and review the opts; returns the ids of the migrations planned."""
        async with self._plan_lock:
            if self.dispatcher is None or self._stopping:
                return []
            planned, snapshot, moved = await self._plan_and_dispatch()
            await asyncio.to_thread(self._refresh_offers, snapshot)
            await self.review_opts(snapshot, moved)
            await self._plan_at_next_instant()
            self._advance_when_due()
            return planned

    async def _plan_at_next_instant(self) -> None:
        """Plan again at the next instant an event needs (a start, an interval boundary, an
        absorb's departure: :mod:`gateway.planner.timing`), when it comes before the next
        regular round; :attr:`next_plan_at` says when."""
        statuses = dict(self.statuses)

        def find() -> datetime | None:
            with unit_of_work(self._sessions) as session:
                snapshot = self._snapshot(session, statuses)
                events = [
                    (p.event, p.opt)
                    for p in event_store.participations(session, current_at=snapshot.at)
                ]
            return next_plan_at(events, snapshot, self.policy_params)

        self.next_plan_at = await asyncio.to_thread(find)
        self._run_once_at(self.next_plan_at, self.event_instant_once, "event-instant")

    async def _plan_and_dispatch(self) -> tuple[list[str], Snapshot, set[str]]:
        """One planning decision and its migrations created and started: their ids, the
        snapshot they were planned on, and the sites they leave or go to."""
        assert self.dispatcher is not None  # plan_once checked
        statuses = dict(self.statuses)
        policy = self.settings.planner.policy

        def look_and_plan() -> tuple[Snapshot, list[Any]]:
            with unit_of_work(self._sessions) as session:
                snapshot = self._snapshot(session, statuses)
            if policy == "static":
                return snapshot, []
            return snapshot, list(plan(snapshot, self.policy_params, policy))

        snapshot, decisions = await asyncio.to_thread(look_and_plan)
        planned, moved = [], set()
        for decision in decisions:
            if (migration_id := self.dispatcher.create(decision)) is not None:
                planned.append(migration_id)
                moved |= {decision.source_site_id, decision.target_site_id}
        for migration_id in planned:
            await self.dispatcher.advance(migration_id)
        return planned, snapshot, moved

    def _refresh_offers(self, snapshot: Snapshot) -> None:
        """Compute and store the offers for the coming hours; the VEN reports them."""
        offers = hourly_offers(
            snapshot,
            self.policy_params,
            self.settings.planner.offer_hours,
            overridden={s.id for s in self.settings.site if s.manual_override},
        )
        with unit_of_work(self._sessions) as session:
            fleet.save_offers(session, offers, self.clock.now())
        self.offers = _by_site(offers)

    async def review_opts(
        self, snapshot: Snapshot | None = None, moved: Collection[str] = ()
    ) -> int:
        """Change the opts of upcoming events where the plan changed them
        (:mod:`gateway.planner.review`), then send any answer a VTN has not acknowledged.

        snapshot: the fleet as the round's plan saw it, before its moves (which would
            otherwise count against the events they prepare for); None takes one now.
        moved: the sites the round's moves leave or go to. An optOut at one of them waits
            for the next round: the snapshot still shows the room and the jobs those moves
            take, and one look must not be spent twice.
        Returns the number of opts changed."""
        connections = {c.vtn_id: c for c in self.vens}
        changes = await asyncio.to_thread(
            self._opt_changes, snapshot, moved, dict(self.statuses), set(connections)
        )
        for event, decision in changes:
            await connections[event.vtn_id].update_opt(event, decision)
        for connection in self.vens:
            await connection.resend_unsent()
        return len(changes)

    def _opt_changes(
        self,
        snapshot: Snapshot | None,
        moved: Collection[str],
        statuses: Mapping[str, SiteStatus],
        vtn_ids: Collection[str],
    ) -> list[tuple[DrEvent, OptDecision]]:
        """The opts the plan changes (of events of ``vtn_ids``), for :meth:`review_opts`; run
        in a worker thread."""
        with unit_of_work(self._sessions) as session:
            if snapshot is None:
                snapshot = self._snapshot(session, statuses)
            current = [
                known
                for known in event_store.participations(session, current_at=snapshot.at)
                if known.opt != "optOut"
                or not any(s.site_id in moved for s in targeted_sites(known.event, snapshot.sites))
            ]
            forecast = BaselineForecast(session.connection())
            baselines = {
                (known.event.vtn_id, known.event.event_id): self._baselines(
                    forecast, known.event, snapshot
                )
                for known in current
                if known.event.vtn_id in vtn_ids
                and known.opt == "optOut"
                and known.response_code == 200
                and known.event.effective_start_at > snapshot.at
            }
        changes = []
        for known in current:
            if known.event.vtn_id not in vtn_ids:
                continue
            decision = review(
                known.event,
                known.opt,
                known.response_code,
                snapshot,
                self.policy_params,
                self.signal_policy,
                baselines.get((known.event.vtn_id, known.event.event_id)),
            )
            if decision is not None:
                changes.append((known.event, decision))
        return changes

    @property
    def plan_task(self) -> asyncio.Task[None] | None:
        """The early planning round an optIn asked for, while it runs (or once it ran)."""
        return self._plan_task

    def plan_soon(self) -> None:
        """Plan now rather than at the next round (a VEN opted in to an event)."""
        if self._stopping:
            return
        if self._plan_task is None or self._plan_task.done():
            self._plan_task = asyncio.create_task(self._guarded(self.plan_once)())

    async def availability_once(self) -> RoundResult:
        """Send new maintenance windows to their VTNs (EiOpt) and cancel removed ones."""
        async with self._plan_lock:
            return await self.availability.run_once({c.vtn_id: c for c in self.vens})

    # -- events ---------------------------------------------------------------------------

    def _snapshot(self, session: Session, statuses: Mapping[str, SiteStatus]) -> Snapshot:
        """The fleet now; ``statuses`` is a copy of :attr:`statuses` taken on the event loop
        (this runs in worker threads)."""
        now = self.clock.now()
        base = fleet.build_snapshot(
            session,
            self.settings.site,
            statuses,
            (),
            now,
            idle_kw_per_gpu=self.settings.feasibility.idle_kw_per_gpu,
        )
        requests = self._requests(session, base)
        return Snapshot(
            at=base.at,
            sites=base.sites,
            jobs=base.jobs,
            requests=tuple(requests),
            delivered_kw=base.delivered_kw,
            absorbed_kw=base.absorbed_kw,
            arriving_kw=base.arriving_kw,
        )

    def _requests(self, session: Session, base: Snapshot) -> list[SiteRequest]:
        """What opted-in, non-test events ask of the sites, now or soon; a shed or absorb
        in force carries the baseline the meter judges it against."""
        participations = event_store.participations(session, current_at=base.at)
        requests = event_requests(
            [(p.event, p.opt) for p in participations],
            base.sites,
            opt.flexible_kw(base),
            base.at,
            self.policy_params.horizon_s,
            self.signal_policy,
        )
        events = {f"{p.event.vtn_id}/{p.event.event_id}": p.event for p in participations}
        return [self._with_baseline(session, r, events.get(r.source), base) for r in requests]

    def _with_baseline(
        self, session: Session, request: SiteRequest, event: DrEvent | None, base: Snapshot
    ) -> SiteRequest:
        """The request with its baseline once its event has started (the rows a baseline
        reads then all lie in the past; kept per event version and site)."""
        if request.kind == "cap" or event is None or request.start_at > base.at:
            return request
        key = (request.source, event.modification_number, request.site_id)
        if key not in self._known_baselines:
            site = base.site(request.site_id)
            self._known_baselines[key] = predicted_baseline_kw(
                session.connection(), event, request.site_id, site.load_kw
            )
        known = self._known_baselines[key]
        return request if known is None else replace(request, baseline_kw=known)

    async def decide(self, event: DrEvent) -> OptDecision:
        """The VEN's question: opt in or out of this event?"""
        (decision,) = await self.decide_many([event])
        return decision

    async def decide_many(self, events: Sequence[DrEvent]) -> list[OptDecision]:
        """The VEN's question for the new versions of one distribution: opt in or out of each?
        All are judged on one look at the fleet (the answers of a distribution are stored
        together, after the last decision, so no version of it sees another's), in a worker
        thread: a distribution of a hundred events does not hold up the event loop."""
        return await asyncio.to_thread(self._decide_now, events, dict(self.statuses))

    def _decide_now(
        self, events: Sequence[DrEvent], statuses: Mapping[str, SiteStatus]
    ) -> list[OptDecision]:
        with unit_of_work(self._sessions) as session:
            snapshot = self._snapshot(session, statuses)
            forecast = BaselineForecast(session.connection())
            out = [self._decide_one(forecast, event, snapshot) for event in events]
        return out

    def _decide_one(
        self, forecast: BaselineForecast, event: DrEvent, snapshot: Snapshot
    ) -> OptDecision:
        """One version's answer; optOut with the reason when the planner fails on it (one
        event never sinks the others of its distribution)."""
        try:
            baselines = self._baselines(forecast, event, snapshot)
            decision = opt.decide(
                event, snapshot, self.policy_params, self.signal_policy, baselines
            )
        except Exception as exc:  # one event's boundary
            log.exception(
                "event %s/%s #%d: deciding failed, opting out",
                event.vtn_id,
                event.event_id,
                event.modification_number,
            )
            decision = OptDecision("optOut", f"the planner failed: {type(exc).__name__}: {exc}")
        log.info(
            "event %s/%s #%d: %s (%s)",
            event.vtn_id,
            event.event_id,
            event.modification_number,
            decision.opt,
            decision.reason,
        )
        return decision

    def _baselines(
        self, forecast: BaselineForecast, event: DrEvent, snapshot: Snapshot
    ) -> dict[str, float]:
        """The baseline each site the event addresses will be measured against, as predicted
        from the ledger and the programme's method [kW]."""
        out: dict[str, float] = {}
        for site in targeted_sites(event, snapshot.sites):
            predicted = forecast.predicted_kw(event, site.site_id, site.load_kw)
            if predicted is not None:
                out[site.site_id] = predicted
        return out

    def site_load_kw(self, site_id: str) -> float | None:
        """Facility power of a site now, for telemetry reports [kW]."""
        status = self.statuses.get(site_id)
        if status is None:
            return None
        return status.it_power_kw * self.settings.site_by_id(site_id).pue

    def site_status(self, site_id: str) -> ResourceStatus | None:
        """A site's TELEMETRY_STATUS: its controller answered the last poll, and the operator's
        ``manual_override``; None before the first poll."""
        up = self._site_up.get(site_id)
        if up is None:
            return None
        return ResourceStatus(
            online=up, manual_override=self.settings.site_by_id(site_id).manual_override
        )

    def site_offers(self, site_id: str) -> tuple[SiteOffer, ...]:
        """A site's newest offers, for the offers report; empty before the first plan round."""
        return self.offers.get(site_id, ())

    def _load_offers(self) -> None:
        """The stored offers still to come, so that a restarted daemon reports them at once."""
        with unit_of_work(self._sessions) as session:
            self.offers = _by_site(fleet.load_offers(session, self.clock.now()))


def _by_site(offers: list[SiteOffer]) -> dict[str, tuple[SiteOffer, ...]]:
    out: dict[str, list[SiteOffer]] = {}
    for offer in sorted(offers, key=lambda o: o.interval_start_at):
        out.setdefault(offer.site_id, []).append(offer)
    return {site_id: tuple(site_offers) for site_id, site_offers in out.items()}
