"""One connection to one VTN: the owner of an ``openleadr.OpenADRClient`` and its life cycle.

It answers events and reports on every site it serves; each concept lives in a room of its own,
and :class:`VenConnection` composes them:

- the openleadr client itself, with its event handling replaced and every answer of the VTN
  screened at the edge: :mod:`gateway.ven.openleadr_client`;
- the EiEvent exchange (distributions judged and stored by :mod:`gateway.ven.distribution`,
  answers sent under their distribution's requestID, one writer per answer, the poll's hold
  and back-pressure): :mod:`gateway.ven.ei_event`;
- the reports (telemetry, status and flexibility offers of every site, rows of
  :data:`gateway.ven.ei_report.REPORTS`; granularities checked up front because openleadr
  schedules them with cron, pitfall 8): :mod:`gateway.ven.ei_report`;
- the venID and registrationID across restarts (``ven_registrations``):
  :mod:`gateway.ven.registration`;
- availability schedules (EiOpt): :mod:`gateway.ven.availability`;
- mutual TLS: with ``cert_path``, ``key_path``, ``ca_path`` and ``vtn_fingerprint`` the
  material is checked before openleadr sees it (:mod:`gateway.ven.tls`): the certificate and
  key load and match, the key is one openleadr can sign with, the CA loads, and a TLS
  handshake shows whether the VTN's certificate verifies against the CA; a VTN that signs
  with another certificate than ``vtn_fingerprint`` is named as such
  (:class:`gateway.ven.tls.FingerprintCheck`). openleadr's fingerprint banner on stdout is off.

Problems of configuration or authentication raise :class:`ConfigError` and are final for the
connection: later :meth:`VenConnection.start` calls raise them again without contacting the
VTN. No key material (key text, passphrase) is ever logged or put into a message.

:meth:`VenConnection.start` is one attempt: it raises :class:`GatewayError` when the VTN cannot
be reached or does not register us. Once started, or after
:meth:`VenConnection.retry_in_background`, the connection keeps itself connected
(:mod:`gateway.ven.reconnect`): an outage of the VTN at runtime, a lost registration (463)
or a request to register again stops the openleadr client completely and builds and
registers a new one, with exponential back-off and jitter between attempts, until
:meth:`VenConnection.stop`. A VTN that refuses to register our stored venID is asked for a new
registration at the next attempt (:mod:`gateway.ven.registration`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.backoff import Backoff
from gateway.clock import Clock
from gateway.errors import ConfigError, GatewayError
from gateway.events import DrEvent, OptDecision
from gateway.planner.signals import unsupported_signals
from gateway.settings_sites import SiteSettings
from gateway.settings_vtn import VtnSettings
from gateway.ven import availability, ei_report, inbound, refusals
from gateway.ven.distribution import DistributionHandler
from gateway.ven.ei_event import EventExchange
from gateway.ven.ei_report import OffersReader, Readers, StatusReader, TelemetryKw
from gateway.ven.openleadr_client import GatewayClient, running_jobs
from gateway.ven.planner_decisions import Decide, DecideMany, Unsupported
from gateway.ven.reconnect import ClientWatch, Loss, Reconnector
from gateway.ven.registration import Registration
from gateway.ven.tls import FingerprintCheck, TlsMaterial, check_vtn_certificate, load_tls_material

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 1.0
"""How much longer than one request stopping a client waits for its jobs in flight before
cancelling them [wall s]."""


class VenConnection:
    """The gateway's VEN towards one VTN.

    vtn: the VTN's settings (its URL, our VEN name, an assigned VEN id if any)
    sites: the sites this VTN serves (each with ``vtn`` equal to ``vtn.id``)
    clock: the injected clock; stored times and report timestamps come from it
    session_factory: sessions of the state store
    decide: the planner's answer to an event version
    telemetry_kw: current facility power of a site, by site id [kW]; None when unknown
    report_interval_s: sampling rate offered for every report [s]; must divide 60 s, 60 min
        or 24 h (the offers may also be asked for hourly)
    status: a site's TELEMETRY_STATUS (online, manual override), by site id; None offers no
        status report
    offers: a site's stored flexibility offers for the coming hours, by site id; None offers
        no offers report (:mod:`gateway.ven.ei_report`, ``docs/ei-report.md``)
    unsupported: the signals of an event version the programme's signal mapping cannot act on
        (answered 460)
    decide_many: the planner's answers to the new versions of one distribution at once, off
        the event loop (:data:`gateway.ven.planner_decisions.DecideMany`); None asks
        ``decide`` per version
    rng: the jitter of the reconnection back-off (seed it in tests)
    """

    def __init__(
        self,
        vtn: VtnSettings,
        sites: Sequence[SiteSettings],
        clock: Clock,
        session_factory: sessionmaker[Session],
        decide: Decide,
        telemetry_kw: TelemetryKw,
        report_interval_s: float = 10.0,
        *,
        unsupported: Unsupported = unsupported_signals,
        after_opt_in: Callable[[], None] | None = None,
        decide_many: DecideMany | None = None,
        rng: random.Random | None = None,
        status: StatusReader | None = None,
        offers: OffersReader | None = None,
    ) -> None:
        self.vtn = vtn
        self.sites = _served_sites(vtn, sites)
        self.clock = clock
        self._readers = Readers(power_kw=telemetry_kw, status=status, offers=offers)
        self._report_granularity = ei_report.report_granularity(report_interval_s)
        self._client: Any = None
        self._available: bool | None = None
        """The VTN's state as last seen: None before the first attempt."""
        self._registered = False
        """The current client has registered (start() succeeded and it was not stopped since)."""
        self._registration = Registration(vtn, session_factory, clock)
        self._events = EventExchange(
            vtn.id,
            DistributionHandler(
                vtn.id,
                session_factory,
                clock,
                decide,
                lambda: self._registration.ven_id,
                unsupported,
                decide_many,
            ),
            clock,
            current_client=lambda: self._client,
            registered=lambda: self.available,
            after_opt_in=after_opt_in,
        )
        self._edge = inbound.Edge(
            vtn.max_message_size_bytes,
            inbound.RefusalLog(vtn.id, partial(refusals.count, session_factory, clock)),
        )
        """What every answer of the VTN must be before a parser sees it (kept across client
        rebuilds, so a VTN's refusals are logged once)."""
        self._config_problem: ConfigError | None = None
        """Why this connection stopped for good (configuration or authentication)."""
        self._signature: FingerprintCheck | None = None
        """Checks the current client's responses against ``vtn_fingerprint`` (mutual TLS)."""
        self._watch: ClientWatch | None = None
        """Watches the current openleadr client for a lost connection."""
        self._reconnector = Reconnector(
            vtn.id,
            connect=self.start,
            disconnect=self._stop_client,
            lost=self._lost,
            went_down=self._went_down,
            backoff=Backoff(vtn.reconnect_initial_s, vtn.reconnect_max_s, rng),
        )

    @property
    def vtn_id(self) -> str:
        return self.vtn.id

    @property
    def ven_id(self) -> str | None:
        """The VEN id the VTN assigned at the last successful :meth:`start`; before that the
        one stored by an earlier run (once :meth:`start` has read it) or the configured one."""
        return self._registration.ven_id

    @property
    def registration_id(self) -> str | None:
        """The registration id from the last successful :meth:`start`; None before."""
        return self._registration.registration_id

    @property
    def available(self) -> bool:
        """True while started and registered with the VTN."""
        return self._client is not None and self._registered and self._available is True

    @property
    def supervised(self) -> bool:
        """True while a background task keeps this connection connected (after a successful
        :meth:`start` or :meth:`retry_in_background`, until :meth:`stop` or a final
        configuration problem)."""
        return self._reconnector.running

    async def start(self) -> None:
        """Register with the VTN, offer telemetry and start polling: one attempt.

        Raises :class:`GatewayError` when the VTN cannot be reached or does not register us;
        the connection is then stopped and :meth:`start` (or :meth:`retry_in_background`)
        may be called again. Raises :class:`ConfigError` (naming the VTN and the key to fix)
        when the TLS material is unusable, the VTN's certificate does not verify against
        ``ca_path`` or the VTN signs with another certificate than ``vtn_fingerprint``; that
        is final for this connection. Once started, the connection keeps itself connected
        until :meth:`stop` (:mod:`gateway.ven.reconnect`).
        """
        if self._config_problem is not None:
            raise ConfigError(str(self._config_problem))
        await self._stop_client()
        try:
            tls = load_tls_material(self.vtn)
            if tls is not None:
                await check_vtn_certificate(self.vtn, tls)
        except ConfigError as exc:
            self._give_up(exc)
            raise
        client = self._build_client(tls)
        watch = self._watch = self._watch_client(client)
        self._client = client
        try:
            await client.run()
        except GatewayError:  # the stored registration could not be read
            await self._stop_client()
            raise
        except Exception as exc:  # openleadr raises whatever it meets; translate at the edge
            await self._stop_client()
            self._went_down(f"{type(exc).__name__}: {exc}")
            raise GatewayError(f"VTN {self.vtn.id} at {self.vtn.url}: {exc}") from exc
        if client.registration_id is None:
            await self._stop_client()
            raise self._not_registered(watch)
        try:
            await self._registration.keep(client)
        except GatewayError as exc:  # caused by the database's error
            await self._stop_client()
            self._went_down(f"cannot store the registration: {exc.__cause__}")
            raise
        self._registration.refused_ven_id = None
        self._registered = True
        self._came_up()
        self._reconnector.ensure_running(connected=True)

    def _not_registered(self, watch: ClientWatch) -> GatewayError:
        """Why the VTN did not register the client ``watch`` watched: the error to raise. A
        response signed with another certificate than ``vtn_fingerprint`` is final; a venID
        the VTN refused makes the next attempt register as a new VEN."""
        signature = self._signature
        if signature is not None and signature.problem is not None:
            error = ConfigError(
                f"VTN {self.vtn.id} at {self.vtn.url}: {signature.problem}; "
                "openleadr ignores every message the VTN sends. Check vtn_fingerprint"
            )
            self._give_up(error)
            return error
        refusal = watch.refusal
        if refusal is not None and refusal.ven_id is not None:
            self._registration.refused_ven_id = refusal.ven_id
            why = (
                f"refused to register VEN id {refusal.ven_id} ({refusal.code} "
                f"{refusal.description}); the next attempt registers as a new VEN"
            )
            self._went_down(why)
            return GatewayError(f"VTN {self.vtn.id} at {self.vtn.url} {why}")
        self._went_down("not reachable or did not register us")
        return GatewayError(
            f"VTN {self.vtn.id} at {self.vtn.url} is not reachable or did not register "
            f"VEN {self.vtn.ven_name!r}"
        )

    def retry_in_background(self) -> None:
        """Keep calling :meth:`start` in a background task, with exponential back-off and
        jitter (``reconnect_initial_s``, ``reconnect_max_s``), until the VTN registers us;
        from then on as after a successful :meth:`start`. Ends with a configuration problem
        or :meth:`stop`."""
        if self._config_problem is None:
            self._reconnector.ensure_running(connected=self.available)

    async def stop(self) -> None:
        """Stop keeping connected, polling and reporting, and close the HTTP session; safe
        to call twice."""
        await self._reconnector.cancel()
        await self._stop_client()
        await self._edge.refusals.settled()

    async def settled(self) -> None:
        """Wait until every distribution received so far has been answered (or failed) and
        every refusal at the edge counted."""
        await self._events.settled()
        await self._edge.refusals.settled()

    async def update_opt(self, event: DrEvent, decision: OptDecision) -> bool:
        """Change the answer to the stored version ``event`` (a change of plan) and send it
        to the VTN (:meth:`gateway.ven.ei_event.EventExchange.update_opt`). True when the VTN
        acknowledged it; an unacknowledged answer stays unsent and :meth:`resend_unsent`
        tries again."""
        return await self._events.update_opt(event, decision)

    async def resend_unsent(self) -> int:
        """Send again the answers the VTN asked for but never acknowledged (of versions not
        over yet), each under the requestID stored with it; the number acknowledged now
        (:meth:`gateway.ven.ei_event.EventExchange.resend_unsent`)."""
        return await self._events.resend_unsent()

    async def send_availability(self, request: availability.OptRequest) -> availability.OptAnswer:
        """Send an availability schedule (``oadrCreateOpt``) or its cancellation to this VTN;
        the VTN's answer. Raises :class:`GatewayError` while not registered and
        :class:`availability.OptNotAnswered` when the VTN does not answer."""
        client, ven_id = self._client, self.ven_id
        if client is None or not self.available or ven_id is None:
            raise GatewayError(f"VTN {self.vtn.id}: not registered; {request.opt_id} not sent")
        return await availability.send(client, ven_id, request, self.clock.now())

    # -- the openleadr client --------------------------------------------------------------

    def _build_client(self, tls: TlsMaterial | None) -> GatewayClient:
        client = GatewayClient(
            self._events.on_distribution,
            self._edge,
            ven_name=self.vtn.ven_name,
            vtn_url=str(self.vtn.url),
            ven_id=self.ven_id,  # keep the VEN id the VTN gave us across restarts
            show_fingerprint=False,  # openleadr would print it on stdout
            **(tls.client_options() if tls is not None else {}),
        )
        client.query_registration = partial(
            self._registration.query_then_resume, client, client.query_registration
        )
        client.add_hook("after_parse_xml", self._events.on_empty_distribution)
        self._signature = None
        if tls is not None:
            self._signature = FingerprintCheck(self.vtn)
            client.add_hook("before_schema_validation", self._signature.check)
        ei_report.offer(client, self.sites, self._readers, self._report_granularity, self.clock)
        return client

    async def _stop_client(self) -> None:
        """Stop the openleadr client completely: its scheduler (polls, report jobs), the
        jobs in flight, its report queue and its HTTP session."""
        client, self._client = self._client, None
        self._registered = False
        if client is None:
            return
        if client.scheduler.running:
            client.scheduler.pause()  # no new polls or reports; those in flight may finish
        current = asyncio.current_task()
        jobs = [job for job in running_jobs(client) if job is not current]
        if client.report_queue_task is not None:
            jobs.append(client.report_queue_task)
            client.report_queue_task.cancel()
        if jobs:  # each request is bounded by request_timeout_s
            await asyncio.wait(jobs, timeout=self.vtn.request_timeout_s + _STOP_GRACE_S)
        # distributions being answered: stored, then one send each
        await self._events.drain(2 * self.vtn.request_timeout_s + _STOP_GRACE_S)
        if client.scheduler.running:
            client.scheduler.shutdown(wait=False)  # cancels the jobs still in flight
        if client.client_session is not None:
            await client.client_session.close()
        client.xml_executor.shutdown(wait=False)

    # -- outage detection and rebuilds -------------------------------------------------------

    def _watch_client(self, client: Any) -> ClientWatch:
        """Watch a new openleadr client for a lost connection (:mod:`gateway.ven.reconnect`);
        it registers as a new VEN when the VTN refused our venID last time."""
        return ClientWatch(
            client,
            self.vtn.outage_after_failures,
            self.vtn.request_timeout_s,
            refused_ven_id=self._registration.refused_ven_id,
            name=self.vtn.id,
        )

    async def _lost(self) -> Loss:
        """Wait until the current client's connection is lost; why."""
        watch = self._watch
        if watch is None:
            raise GatewayError(f"VTN {self.vtn.id}: no client has been started")
        return await watch.lost()

    # -- state changes ---------------------------------------------------------------------

    def _give_up(self, problem: ConfigError) -> None:
        """Stop this connection for good: a configuration or authentication problem."""
        if self._config_problem is None:
            logger.error("VTN %s: stopped, fix the configuration: %s", self.vtn.id, problem)
        self._config_problem = problem
        self._available = False

    def _went_down(self, why: str) -> None:
        if self._available is not False:
            logger.warning("VTN %s at %s is unavailable: %s", self.vtn.id, self.vtn.url, why)
        self._available = False

    def _came_up(self) -> None:
        logger.info(
            "VTN %s at %s %s: VEN id %s, registration id %s",
            self.vtn.id,
            self.vtn.url,
            "is back" if self._available is False else "registered us",
            self.ven_id,
            self.registration_id,
        )
        self._available = True


def _served_sites(vtn: VtnSettings, sites: Sequence[SiteSettings]) -> tuple[SiteSettings, ...]:
    resource_ids: dict[str, str] = {}
    for site in sites:
        if site.vtn != vtn.id:
            raise ConfigError(
                f"site {site.id!r} is served by VTN {site.vtn!r}, not {vtn.id!r}; "
                "pass each connection only the sites whose vtn is its id"
            )
        other = resource_ids.setdefault(site.openadr_resource_id, site.id)
        if other != site.id:
            raise ConfigError(
                f"sites {other!r} and {site.id!r} share the OpenADR resource id "
                f"{site.openadr_resource_id!r}; set a distinct resource_id for each"
            )
    return tuple(sites)
