"""The gateway daemon: one asyncio process that wires every layer together.

- polls every site controller, stores samples, jobs and ledger rows, and advances migrations
  (every ``scheduler.poll_interval_s``);
- runs the planner (every ``scheduler.plan_interval_s``), stores offers, dispatches moves;
- answers OpenADR events through one VEN connection per configured VTN.

Everything that must survive a restart is in the database: on start in-flight migrations are
advanced again (their calls are idempotent), events and answers are read back from the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, timedelta

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.clock import Clock
from gateway.db import unit_of_work
from gateway.dispatch import Dispatcher, DispatchParams
from gateway.errors import ConfigError, GatewayError, SiteControllerError
from gateway.events import DrEvent, OptDecision
from gateway.planner import opt
from gateway.planner.offers import site_offers
from gateway.planner.params import PolicyParams
from gateway.planner.plan import plan
from gateway.planner.signals import SignalPolicy, peak_requests, requests_at
from gateway.planner.snapshot import SiteRequest, Snapshot
from gateway.settings import Settings
from gateway.sites.client import SiteControllerClient
from gateway.sites.schema import SiteStatus
from gateway.ven import store as event_store
from gateway.ven.client import VenConnection

log = logging.getLogger(__name__)


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
        self.dispatcher: Dispatcher | None = None
        self.vens: list[VenConnection] = []
        self._connecting: list[asyncio.Task[None]] = []
        self._site_up: dict[str, bool] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._poll_lock = asyncio.Lock()
        self._plan_lock = asyncio.Lock()
        f = settings.feasibility
        self.policy_params = PolicyParams(
            feasibility=f.params(gpus=1),
            checkpoint_write_gb_per_s=f.checkpoint_write_gb_per_s,
            restore_gb_per_s=f.restore_gb_per_s,
            min_residence_s=settings.planner.min_residence_s,
            min_gain_s=settings.planner.min_gain_s,
            max_migrations=settings.planner.max_migrations_per_plan,
            horizon_s=settings.planner.forecast_horizon_s,
        )
        self.signal_policy = SignalPolicy(
            simple_shed_fraction=settings.signals.simple_shed_fraction,
            surplus_price_threshold=settings.signals.surplus_price_threshold,
        )

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, *, schedule: bool = True, connect_vens: bool = True) -> None:
        with unit_of_work(self._sessions) as session:
            fleet.sync_sites(session, self.settings.site, self.clock.now())
        self._http = aiohttp.ClientSession()
        self.clients = {
            s.id: SiteControllerClient(
                s.id, str(s.controller_url).rstrip("/"), s.controller_token, self._http
            )
            for s in self.settings.site
        }
        self.dispatcher = Dispatcher(
            self._sessions,
            self.clients,
            self.clock,
            DispatchParams(efficiency=self.settings.feasibility.efficiency),
        )
        await self.poll_once()  # also resumes migrations left in flight by a previous run
        if connect_vens:
            for vtn in self.settings.vtn:
                connection = VenConnection(
                    vtn,
                    [s for s in self.settings.site if s.vtn == vtn.id],
                    self.clock,
                    self._sessions,
                    self.decide,
                    self.site_load_kw,
                )
                self.vens.append(connection)
                try:
                    await connection.start()
                except ConfigError as exc:
                    # Configuration or authentication: that VTN stays stopped, the rest runs.
                    log.error("VTN %s stopped: %s", vtn.id, exc)
                except GatewayError:
                    # Not ready at start: keep trying in the background (the connection has
                    # logged why, once).
                    self._connecting.append(asyncio.create_task(self._keep_connecting(connection)))
        if schedule:
            self._start_scheduler()

    async def _keep_connecting(self, connection: VenConnection) -> None:
        """Try an unreachable VTN again with exponential back-off and jitter (wall time)."""
        delay_s = connection.vtn.reconnect_initial_s
        while True:
            await asyncio.sleep(delay_s * random.uniform(0.5, 1.5))
            try:
                await connection.start()
                return
            except ConfigError as exc:
                log.error("VTN %s stopped: %s", connection.vtn.id, exc)
                return
            except GatewayError:
                delay_s = min(delay_s * 2, connection.vtn.reconnect_max_s)

    def _start_scheduler(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        poll_s = self.clock.wall_s(self.settings.scheduler.poll_interval_s)
        plan_s = self.clock.wall_s(self.settings.scheduler.plan_interval_s)
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(self._guarded(self.poll_once), "interval", seconds=poll_s, **common)
        scheduler.add_job(self._guarded(self.plan_once), "interval", seconds=plan_s, **common)
        scheduler.start()
        self._scheduler = scheduler

    def _guarded(
        self, step: Callable[[], Awaitable[object]]
    ) -> Callable[[], Coroutine[None, None, None]]:
        """The task boundary: log a failed round and keep the daemon alive."""

        async def run() -> None:
            try:
                await step()
            except Exception:
                log.exception("%s failed; the next round will try again", run.__name__)

        run.__name__ = getattr(step, "__name__", "round")
        return run

    async def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
        for task in self._connecting:
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        self._connecting = []
        # Let a round in progress finish so that what it holds is committed.
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

    # -- rounds ---------------------------------------------------------------------------

    async def poll_once(self) -> None:
        """Poll every site, record what they say, then move migrations on."""
        async with self._poll_lock:
            results = await asyncio.gather(
                *(self.clients[s.id].status() for s in self.settings.site),
                return_exceptions=True,
            )
            now = self.clock.now()
            with unit_of_work(self._sessions) as session:
                for cfg, result in zip(self.settings.site, results, strict=True):
                    if isinstance(result, SiteControllerError):
                        self.statuses.pop(cfg.id, None)
                        fleet.mark_offline(session, cfg.id, now)
                        if self._site_up.get(cfg.id) is not False:
                            log.warning("site %s is unreachable: %s", cfg.id, result)
                        self._site_up[cfg.id] = False
                        continue
                    if isinstance(result, BaseException):
                        raise result
                    if self._site_up.get(cfg.id) is not True:
                        log.info("site %s is online", cfg.id)
                    self._site_up[cfg.id] = True
                    self.statuses[cfg.id] = result
                    fleet.record_status(session, cfg, result, now)
            if self.dispatcher is not None:
                await self.dispatcher.advance_all()

    async def plan_once(self) -> list[str]:
        """Plan and dispatch; returns the ids of the migrations planned."""
        async with self._plan_lock:
            if self.settings.planner.policy == "static" or self.dispatcher is None:
                return []
            now = self.clock.now()
            with unit_of_work(self._sessions) as session:
                snapshot = self._snapshot(session)
                decisions = plan(snapshot, self.policy_params, self.settings.planner.policy)
                hour = now.replace(minute=0, second=0, microsecond=0)
                fleet.save_offers(
                    session,
                    site_offers(snapshot, self.settings.feasibility.checkpoint_write_gb_per_s),
                    hour,
                    hour + timedelta(hours=1),
                    now,
                )
            planned = [m for d in decisions if (m := self.dispatcher.create(d)) is not None]
            for migration_id in planned:
                await self.dispatcher.advance(migration_id)
            return planned

    # -- events ---------------------------------------------------------------------------

    def _snapshot(self, session: Session) -> Snapshot:
        now = self.clock.now()
        base = fleet.build_snapshot(session, self.settings.site, self.statuses, (), now)
        requests = self._requests(session, base)
        return Snapshot(
            at=base.at,
            sites=base.sites,
            jobs=base.jobs,
            requests=tuple(requests),
            delivered_kw=base.delivered_kw,
        )

    def _requests(self, session: Session, base: Snapshot) -> list[SiteRequest]:
        """What opted-in, non-test events ask of the sites, now or soon."""
        flexible = opt.flexible_kw(base)
        horizon = base.at + timedelta(seconds=self.policy_params.horizon_s)
        out: list[SiteRequest] = []
        for event in event_store.latest_events(session):
            if event.cancelled or event.test_event:
                continue
            answer = event_store.last_response(
                session, event.vtn_id, event.event_id, event.modification_number
            )
            if answer is None or answer.opt != "optIn":
                continue
            end = event.end_at
            if end is not None and end <= base.at:
                continue
            if event.start_at <= base.at:
                out += requests_at(event, base.sites, flexible, base.at, self.signal_policy)
            elif event.start_at <= horizon:
                out += peak_requests(event, base.sites, flexible, self.signal_policy)
        return out

    async def decide(self, event: DrEvent) -> OptDecision:
        """The VEN's question: opt in or out of this event?"""
        with unit_of_work(self._sessions) as session:
            snapshot = self._snapshot(session)
        decision = opt.decide(event, snapshot, self.policy_params, self.signal_policy)
        log.info(
            "event %s/%s #%d: %s (%s)",
            event.vtn_id,
            event.event_id,
            event.modification_number,
            decision.opt,
            decision.reason,
        )
        return decision

    def site_load_kw(self, site_id: str) -> float | None:
        """Facility power of a site now, for telemetry reports [kW]."""
        status = self.statuses.get(site_id)
        if status is None:
            return None
        return status.it_power_kw * self.settings.site_by_id(site_id).pue
