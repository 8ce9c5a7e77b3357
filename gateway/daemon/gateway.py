"""The gateway daemon's :class:`Gateway`: one asyncio process that wires every layer together.

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

What start-up builds from the settings is in :mod:`gateway.daemon.wiring`; what the rounds
decide on a look at the fleet (plans, opt answers and reviews) in :mod:`gateway.daemon.decisions`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.clock import Clock
from gateway.daemon import wiring
from gateway.daemon.decisions import Decider
from gateway.db import unit_of_work
from gateway.errors import ConfigError, GatewayError, SiteControllerError
from gateway.events import DrEvent, OptDecision
from gateway.maintenance import store as maintenance_store
from gateway.maintenance.sender import AvailabilitySender, RoundResult
from gateway.migration.dispatch import Dispatcher
from gateway.planner.offers import SiteOffer, hourly_offers
from gateway.planner.snapshot import Snapshot
from gateway.settings import Settings
from gateway.settings_sites import SiteSettings
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import SiteStatus
from gateway.ven.client import VenConnection
from gateway.ven.ei_report import ResourceStatus
from gateway.web.app import WebServer, make_app
from gateway.web.context import DaemonState, VtnState

log = logging.getLogger(__name__)


class Gateway:
    """The daemon: its life cycle (start, stop) and its rounds (poll, plan, advance
    migrations, send maintenance windows), and the answers its VEN connections ask for."""

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
        self.next_plan_at: datetime | None = None
        """The next instant an opted-in event needs a planning round (set by each round)."""
        self.web: WebServer | None = None
        """The dashboard, API and metrics server while it runs (``[web]``)."""
        self.availability = AvailabilitySender(settings, clock, session_factory)
        self.decider = Decider(settings, clock, session_factory)
        """The decisions on a look at the fleet (run in worker threads)."""

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, *, schedule: bool = True, connect_vens: bool = True) -> None:
        wiring.use_worker_threads(len(self.settings.vtn))
        with unit_of_work(self._sessions) as session:
            fleet.sync_sites(session, self.settings.site, self.clock.now())
            fleet.sync_programmes(session, self.settings.baseline_programmes(), self.clock.now())
            maintenance_store.sync_config(session, self.settings.maintenance, self.clock.now())
        if self.settings.web.enabled:
            await self._start_web()
        self._http = aiohttp.ClientSession()
        self.clients = wiring.site_clients(self.settings, self._http)
        self.dispatcher = Dispatcher(
            self._sessions, self.clients, self.clock, wiring.dispatch_params(self.settings)
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
                        unsupported=self.decider.signal_policy.unsupported,
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
        self._scheduler = wiring.round_scheduler(
            self.settings,
            self.clock,
            poll=self._guarded(self.poll_once),
            plan=self._guarded(self.plan_once),
            availability=self._guarded(self.availability_once),
        )

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
        self.next_plan_at = await asyncio.to_thread(self.decider.next_plan_at, dict(self.statuses))
        self._run_once_at(self.next_plan_at, self.event_instant_once, "event-instant")

    async def _plan_and_dispatch(self) -> tuple[list[str], Snapshot, set[str]]:
        """One planning decision and its migrations created and started: their ids, the
        snapshot they were planned on, and the sites they leave or go to."""
        assert self.dispatcher is not None  # plan_once checked
        snapshot, decisions = await asyncio.to_thread(
            self.decider.look_and_plan, dict(self.statuses)
        )
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
            self.decider.policy_params,
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
            self.decider.opt_changes, snapshot, moved, dict(self.statuses), set(connections)
        )
        for event, decision in changes:
            await connections[event.vtn_id].update_opt(event, decision)
        for connection in self.vens:
            await connection.resend_unsent()
        return len(changes)

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

    # -- the VEN's questions ---------------------------------------------------------------

    async def decide(self, event: DrEvent) -> OptDecision:
        """The VEN's question: opt in or out of this event?"""
        (decision,) = await self.decide_many([event])
        return decision

    async def decide_many(self, events: Sequence[DrEvent]) -> list[OptDecision]:
        """The VEN's question for the new versions of one distribution: opt in or out of each?
        All are judged on one look at the fleet (the answers of a distribution are stored
        together, after the last decision, so no version of it sees another's), in a worker
        thread: a distribution of a hundred events does not hold up the event loop."""
        return await asyncio.to_thread(self.decider.decide, events, dict(self.statuses))

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
