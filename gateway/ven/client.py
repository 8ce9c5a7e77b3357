"""One connection to one VTN: the owner of an ``openleadr.OpenADRClient``.

It answers events and reports on every site it serves. What it adds to openleadr
(``docs/openadr-notes.md``):

- openleadr's event handling is replaced (:class:`_GatewayClient`): every
  ``oadrDistributeEvent`` goes to :mod:`gateway.ven.distribution`, which applies the 2.0b
  rules of :mod:`gateway.ven.rules` (modification numbers and 450, cancellations sent again,
  implied cancel, startafter, 460, response_required; ``docs/conformance.md``), stores every
  version and answer, and returns an answer to every event of the distribution (conformance
  rules 12 and 62: unchanged, new, changed and cancelled ones, known ones answered again from
  the store), sent in one ``oadrCreatedEvent`` under the distribution's requestID (rule 42);
  they are marked sent once the VTN acknowledges them. An empty distribution (which openleadr
  does not pass on) reaches it through an ``after_parse_xml`` hook. A change of plan sends a
  new answer (:meth:`VenConnection.update_opt`); answers never acknowledged go out again
  (:meth:`VenConnection.resend_unsent`). Every send groups its answers by the requestID
  stored with each (one ``oadrCreatedEvent`` per requestID) and never sends an answer to a
  distribution under an empty or generated requestID;
- one writer per answer: a lock per connection (``_answering``) is held by the task that
  handles a distribution, changes an opt or resends unacknowledged answers, from reading or
  storing the answers until the VTN acknowledged (or refused) them. So the answer to one
  event version is changed and sent by one task at a time, and an answer awaiting the VTN's
  acknowledgement is never sent a second time meanwhile by another task (two tasks racing
  to send the same stored answer); answering a version again because the VTN sent it again
  is another matter, and required. A resend finding the lock taken does nothing: the holder
  sends what it owes and the next plan round resends what is left;
- the poll that brings a distribution waits a second at most for its answers; a longer one
  (a hundred events, thousands of intervals) is answered in the background, in arrival
  order, while the VEN polls on at the VTN's rhythm; two at most wait so, a third holds the
  poll (back-pressure). :meth:`VenConnection.settled` waits for them;
- the reports (telemetry, status and flexibility offers of every site) are rows of
  :data:`gateway.ven.reports.REPORTS`; that module says what it changes in openleadr's
  reporting (status payloads, one rID list per report request, durations of projected
  readings, no report without a reading, measurements copied before their scale is set);
- report granularities are checked up front: openleadr schedules them with cron and needs
  them to divide a minute, an hour or a day (pitfall 8);
- with mutual TLS (``cert_path``, ``key_path``, ``ca_path``, ``vtn_fingerprint``) the material
  is checked before openleadr sees it (:mod:`gateway.ven.tls`): the certificate and key load
  and match, the key is one openleadr can sign with, the CA loads, and a TLS handshake shows
  whether the VTN's certificate verifies against the CA. openleadr drops a response signed
  with another certificate than ``vtn_fingerprint`` with a log line and carries on as if the
  VTN had not answered; a ``before_schema_validation`` hook compares the fingerprint itself so that
  :meth:`VenConnection.start` can say so. openleadr's fingerprint banner on stdout is off.

Problems of configuration or authentication raise :class:`ConfigError` and are final for the
connection: later :meth:`VenConnection.start` calls raise them again without contacting the
VTN. No key material (key text, passphrase) is ever logged or put into a message.

The venID survives restarts: after each successful registration the venID and registrationID
are stored (``ven_registrations``, one row per VTN), and the next :meth:`VenConnection.start`,
in this process or after a crash, registers with the stored venID (read once the VTN has
answered openleadr's query of registration), so that the VTN sees the same VEN and distributes
its events again rather than registering a second VEN. A stored venID takes precedence over a
configured ``ven_id``. openleadr does not send a registrationID when
it registers (only its re-registration does), so the stored one is a record, not a request.
A VTN that answers with another venID wins: that one is stored and logged once.

:meth:`VenConnection.start` is one attempt: it raises :class:`GatewayError` when the VTN cannot
be reached or does not register us. Once started, or after
:meth:`VenConnection.retry_in_background`, the connection keeps itself connected
(:mod:`gateway.ven.reconnect`): an outage of the VTN at runtime, a lost registration (463)
or a request to register again stops the openleadr client completely and builds and
registers a new one, with exponential back-off and jitter between attempts, until
:meth:`VenConnection.stop`. A VTN that refuses to register our stored venID (463, as an
openleadr VTN with mutual TLS does after a restart that lost its registrations) is asked
for a new registration at the next attempt; the new venID is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from openleadr import OpenADRClient
from openleadr import utils as openleadr_utils
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import db
from gateway.backoff import Backoff
from gateway.clock import Clock
from gateway.errors import ConfigError, GatewayError
from gateway.events import DrEvent, OptDecision
from gateway.planner.signals import unsupported_signals
from gateway.settings import (
    REPORT_INTERVAL_RULE,
    SiteSettings,
    VtnSettings,
    is_report_interval,
)
from gateway.ven import availability, inbound, parsing, refusals, reports, wire
from gateway.ven.distribution import Answer, Decide, DecideMany, DistributionHandler, Unsupported
from gateway.ven.reconnect import ClientWatch, Loss, Reconnector
from gateway.ven.reports import (
    OffersReader,
    Readers,
    Reading,
    ReportPoint,
    StatusReader,
    TelemetryKw,
)
from gateway.ven.tls import (
    TlsMaterial,
    check_vtn_certificate,
    load_tls_material,
    signature_problem,
)
from gateway.ven.wire import created_event_payload
from models import VenRegistration

logger = logging.getLogger(__name__)

_SHOWN_BYTES = 200
"""How much of a VTN's failed answer a log line quotes [bytes]."""
_STOP_GRACE_S = 1.0
"""How much longer than one request stopping a client waits for its jobs in flight before
cancelling them [wall s]."""
_POLL_HOLD_S = 1.0
"""How long after its request the poll that brought a distribution waits for it to be
answered [wall s]; the time spent receiving and reading the distribution counts. A
distribution that takes longer (a hundred events, thousands of intervals) is answered in the
background while the VEN polls on at the VTN's rhythm."""
_BACKLOG = 2
"""Distributions of one VTN answered in the background at most: a poll bringing more waits
for the oldest (back-pressure; the messages waiting in memory stay bounded)."""


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
        the event loop (:data:`gateway.ven.distribution.DecideMany`); None asks ``decide`` per
        version
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
        self._session_factory = session_factory
        self._decide = decide
        self._readers = Readers(power_kw=telemetry_kw, status=status, offers=offers)
        self._report_granularity = _report_granularity(report_interval_s)
        self._client: Any = None
        self._available: bool | None = None
        """The VTN's state as last seen: None before the first attempt."""
        self._registered = False
        """The current client has registered (start() succeeded and it was not stopped since)."""
        self._ven_id: str | None = vtn.ven_id
        self._registration_id: str | None = None
        self._answering = asyncio.Lock()
        """Held while one task stores or sends answers to this VTN (see the module notes)."""
        self._background: set[asyncio.Task[None]] = set()
        """Distributions being answered after the poll that brought them returned; they take
        ``_answering`` in arrival order (asyncio locks are fair)."""
        self._distribution = DistributionHandler(
            vtn.id, session_factory, clock, decide, lambda: self._ven_id, unsupported, decide_many
        )
        self._edge = inbound.Edge(
            vtn.max_message_size_bytes,
            inbound.RefusalLog(vtn.id, partial(refusals.count, session_factory, clock)),
        )
        """What every answer of the VTN must be before a parser sees it (kept across client
        rebuilds, so a VTN's refusals are logged once)."""
        self._lower_case_vtn_logged = False
        self._after_opt_in = after_opt_in
        self._config_problem: ConfigError | None = None
        """Why this connection stopped for good (configuration or authentication)."""
        self._signature_problem: str | None = None
        """Why the last response of the VTN failed our fingerprint check; None when it passed."""
        self._watch: ClientWatch | None = None
        """Watches the current openleadr client for a lost connection."""
        self._refused_ven_id: str | None = None
        """A venID the VTN refused to register (463); the next attempt registers afresh."""
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
        return self._ven_id

    @property
    def registration_id(self) -> str | None:
        """The registration id from the last successful :meth:`start`; None before."""
        return self._registration_id

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
        self._signature_problem = None
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
            if self._signature_problem is not None:
                error = ConfigError(
                    f"VTN {self.vtn.id} at {self.vtn.url}: {self._signature_problem}; "
                    "openleadr ignores every message the VTN sends. Check vtn_fingerprint"
                )
                self._give_up(error)
                raise error
            refusal = watch.refusal
            if refusal is not None and refusal.ven_id is not None:
                self._refused_ven_id = refusal.ven_id
                why = (
                    f"refused to register VEN id {refusal.ven_id} ({refusal.code} "
                    f"{refusal.description}); the next attempt registers as a new VEN"
                )
                self._went_down(why)
                raise GatewayError(f"VTN {self.vtn.id} at {self.vtn.url} {why}")
            self._went_down("not reachable or did not register us")
            raise GatewayError(
                f"VTN {self.vtn.id} at {self.vtn.url} is not reachable or did not register "
                f"VEN {self.vtn.ven_name!r}"
            )
        await self._keep_registration(client)
        self._refused_ven_id = None
        self._registered = True
        self._came_up()
        self._reconnector.ensure_running(connected=True)

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
        jobs = [job for job in _running_jobs(client) if job is not current]
        if client.report_queue_task is not None:
            jobs.append(client.report_queue_task)
            client.report_queue_task.cancel()
        if jobs:  # each request is bounded by request_timeout_s
            await asyncio.wait(jobs, timeout=self.vtn.request_timeout_s + _STOP_GRACE_S)
        if self._background:  # distributions being answered: stored, then one send each
            pending = set(self._background)
            await asyncio.wait(pending, timeout=2 * self.vtn.request_timeout_s + _STOP_GRACE_S)
            for task in pending:
                task.cancel()  # an answer stored and not sent goes out with the next resend
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
            refused_ven_id=self._refused_ven_id,
            name=self.vtn.id,
        )

    async def _lost(self) -> Loss:
        """Wait until the current client's connection is lost; why."""
        watch = self._watch
        if watch is None:
            raise GatewayError(f"VTN {self.vtn.id}: no client has been started")
        return await watch.lost()

    # -- registration across restarts ----------------------------------------------------

    async def _query_then_resume(self, client: Any, query: Callable[[], Awaitable[Any]]) -> Any:
        """openleadr's ``query_registration``, then the stored venID for its registration.

        openleadr's ``run`` queries the VTN, then registers with ``client.ven_id``. The store
        is read only once the VTN has answered: a VTN that cannot be reached (or whose
        answers are dropped) never costs a database round trip.
        """
        result = await query()
        if isinstance(result, tuple) and result and result[0] is not None:
            await self._resume_registration()
            client.ven_id = self._ven_id
        return result

    async def _resume_registration(self) -> None:
        """Register with the venID an earlier run stored, if any; GatewayError when the
        store cannot be read (registering as a new VEN instead would orphan the old one)."""
        try:
            stored = await asyncio.to_thread(self._stored_ven_id)
        except SQLAlchemyError as exc:
            raise GatewayError(
                f"VTN {self.vtn.id}: cannot read the stored registration: {exc}"
            ) from exc
        if stored is None or stored == self._ven_id:
            return
        if self._ven_id is not None:
            logger.warning(
                "VTN %s: registering with VEN id %s from the last registration, not %s "
                "(the configured ven_id); delete its ven_registrations row to change it",
                self.vtn.id,
                stored,
                self._ven_id,
            )
        self._ven_id = stored

    async def _keep_registration(self, client: Any) -> None:
        """Take the venID and registrationID the VTN gave us and store them.

        Raises :class:`GatewayError` (the connection stopped) when they cannot be stored: the
        next :meth:`start` registers again.
        """
        asked = self._ven_id
        self._ven_id = _optional_str(client.ven_id)
        self._registration_id = _optional_str(client.registration_id)
        if asked is not None and self._ven_id != asked:
            logger.warning(
                "VTN %s registered us as VEN id %s, not %s as asked; keeping %s",
                self.vtn.id,
                self._ven_id,
                asked,
                self._ven_id,
            )
        if self._ven_id is None or self._registration_id is None:
            return
        try:
            await asyncio.to_thread(
                self._save_registration, self._ven_id, self._registration_id, self.clock.now()
            )
        except SQLAlchemyError as exc:
            await self._stop_client()
            self._went_down(f"cannot store the registration: {exc}")
            raise GatewayError(
                f"VTN {self.vtn.id}: registered as VEN id {self._ven_id}, but the "
                f"registration could not be stored: {exc}"
            ) from exc

    def _stored_ven_id(self) -> str | None:
        with db.unit_of_work(self._session_factory) as session:
            row = session.get(VenRegistration, self.vtn.id)
            return None if row is None else row.ven_id

    def _save_registration(self, ven_id: str, registration_id: str, at: datetime) -> None:
        """Insert or update this VTN's row; ``at`` is when the VTN registered us [aware UTC]."""
        with db.unit_of_work(self._session_factory) as session:
            row = session.get(VenRegistration, self.vtn.id)
            if row is None:
                row = VenRegistration(vtn_id=self.vtn.id, registered_at=at)
                session.add(row)
            elif row.ven_id != ven_id:
                row.registered_at = at
            row.ven_id = ven_id
            row.registration_id = registration_id
            row.vtn_url = str(self.vtn.url)
            row.updated_at = at

    # -- openleadr wiring ----------------------------------------------------------------

    def _build_client(self, tls: TlsMaterial | None) -> Any:
        client = _GatewayClient(
            self._on_distribution,
            self._edge,
            ven_name=self.vtn.ven_name,
            vtn_url=str(self.vtn.url),
            ven_id=self._ven_id,  # keep the VEN id the VTN gave us across restarts
            show_fingerprint=False,  # openleadr would print it on stdout
            **(tls.client_options() if tls is not None else {}),
        )
        client.query_registration = partial(
            self._query_then_resume, client, client.query_registration
        )
        client.add_hook("after_parse_xml", self._on_empty_distribution)
        if tls is not None:
            client.add_hook("before_schema_validation", self._check_vtn_signature)
        points = reports.offered(self._readers)
        client.pending_reports = reports.OutgoingReports(
            {
                reports.r_id(point, site.openadr_resource_id): timedelta(
                    seconds=point.reading_duration_s
                )
                for site in self.sites
                for point in points
                if point.reading_duration_s is not None
            }
        )
        reports.own_points_only(client)
        reports.render_status_payloads(client)
        for site in self.sites:
            for point in points:
                self._add_report(client, site, point)
        return client

    def _add_report(self, client: Any, site: SiteSettings, point: ReportPoint) -> None:
        client.add_report(
            callback=partial(self._read, point, site.id),
            resource_id=site.openadr_resource_id,
            measurement=reports.measurement(point),
            unit=point.unit,
            scale=point.scale,
            report_name=point.report_name,
            report_type=point.report_type,
            reading_type=point.reading_type,
            report_specifier_id=point.report_specifier_id,
            r_id=reports.r_id(point, site.openadr_resource_id),
            sampling_rate=reports.sampling_rate(point, self._report_granularity),
            report_duration=self._report_granularity,
        )

    def _read(self, point: ReportPoint, site_id: str) -> list[Reading]:
        """The readings for openleadr's report job; none when the value is unknown."""
        try:
            return reports.read(point, self._readers, site_id, self.clock.now())
        except Exception:  # a report job is a task boundary inside openleadr's scheduler
            logger.exception("reading %s of site %s failed", point.source, site_id)
            return []

    async def _on_distribution(self, client: Any, message: Mapping[str, Any]) -> None:
        """One ``oadrDistributeEvent``, answered by :meth:`_answer_distribution`. The poll that
        brought it waits until ``_POLL_HOLD_S`` after its request at most: a distribution that
        takes longer is answered in the background and the VEN polls on (no more than
        ``_BACKLOG`` wait so)."""
        task = asyncio.create_task(self._answer_distribution(client, message))
        self._background.add(task)
        task.add_done_callback(self._answered)
        loop = asyncio.get_running_loop()
        sent_at = getattr(client, "request_sent_at", None)
        hold_s = _POLL_HOLD_S if sent_at is None else sent_at + _POLL_HOLD_S - loop.time()
        if hold_s > 0:
            await asyncio.wait({task}, timeout=hold_s)
        while len(self._background) > _BACKLOG:
            await asyncio.wait(set(self._background), return_when=asyncio.FIRST_COMPLETED)

    def _answered(self, task: asyncio.Task[None]) -> None:
        """A distribution's task ended: a failure is logged here, the task boundary."""
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error(
                "VTN %s: answering a distribution failed; its answers go out when stored "
                "and the VTN distributes the events again: %s: %s",
                self.vtn.id,
                type(error).__name__,
                error,
                exc_info=error,
            )

    async def settled(self) -> None:
        """Wait until every distribution received so far has been answered (or failed) and
        every refusal at the edge counted."""
        while self._background:
            await asyncio.wait(set(self._background))
        await self._edge.refusals.settled()

    async def _answer_distribution(self, client: Any, message: Mapping[str, Any]) -> None:
        """One ``oadrDistributeEvent``: judged, stored and answered by our rules
        (:mod:`gateway.ven.distribution`), then one ``oadrCreatedEvent`` with the answers the
        VTN asked for and has not had yet."""
        events = message.get("events") or []
        if isinstance(events, Mapping):
            events = [events]
        vtn_id = message.get("vtn_id")
        if isinstance(vtn_id, str) and vtn_id.islower() and not self._lower_case_vtn_logged:
            # openleadr would answer 452 to every event (pitfall 7); the id is the VTN's.
            logger.info("VTN %s uses a lower-case VTN id %r; accepted", self.vtn.id, vtn_id)
            self._lower_case_vtn_logged = True
        request_id = self._request_id_of(message)
        async with self._answering:
            handled = await self._distribution.handle(events, request_id)
            if handled.to_send:
                await self._send_answers(client, handled.to_send)
        if handled.opted_in and self._after_opt_in is not None:
            self._after_opt_in()

    def _request_id_of(self, message: Mapping[str, Any]) -> str:
        """The distribution's requestID. The schema requires one and openleadr drops a
        message without; should one still arrive, the answers get an id of their own, stored
        with them so that every later send of them carries the same one."""
        request_id = message.get("request_id")
        if request_id is not None and str(request_id):
            return str(request_id)
        generated = str(openleadr_utils.generate_id())
        logger.warning(
            "VTN %s sent a distribution without a requestID; its answers carry %s",
            self.vtn.id,
            generated,
        )
        return generated

    async def update_opt(self, event: DrEvent, decision: OptDecision) -> bool:
        """Change the answer to the stored version ``event`` (a change of plan): store it,
        then send it in an ``oadrCreatedEvent`` (openleadr's ``created_event`` cannot carry a
        response code) under the requestID of the distribution the version's answer answered
        last (``docs/conformance.md``, rule 42). True when the VTN acknowledged it; an
        unacknowledged answer stays unsent and :meth:`resend_unsent` tries again."""
        async with self._answering:
            answer = await self._distribution.record(event, decision)
            client = self._client
            if answer is None or client is None or not self.available:
                return False
            return await self._send_answers(client, [answer]) == 1

    async def resend_unsent(self) -> int:
        """Send again the answers the VTN asked for but never acknowledged (of versions not
        over yet), each under the requestID stored with it; the number acknowledged now.

        Does nothing while another task stores or sends answers to this VTN: that task
        sends what it owes, and the next round what is left."""
        client = self._client
        if client is None or not self.available or self._answering.locked():
            return 0
        async with self._answering:
            answers = await self._distribution.unsent()
            return await self._send_answers(client, answers)

    async def _send_answers(self, client: Any, answers: Sequence[Answer]) -> int:
        """Send ``answers``, one ``oadrCreatedEvent`` per requestID (conformance rule 42), and
        record each message's answers sent once the VTN acknowledged it; the number of answers
        acknowledged. Those not acknowledged stay unsent and go out again (at the next plan
        round, or when the VTN distributes their events again). An answer without a requestID
        (stored before revision 0007) is not sent: the VTN's next distribution of its event
        answers it under that distribution's requestID."""
        by_request: dict[str, list[Answer]] = {}
        for answer in answers:
            if answer.request_id is None:
                logger.debug(
                    "VTN %s: the answer to %s#%d has no requestID; it waits for the next "
                    "distribution of the event",
                    self.vtn.id,
                    answer.event_id,
                    answer.modification_number,
                )
                continue
            by_request.setdefault(answer.request_id, []).append(answer)
        acknowledged = 0
        for request_id, group in by_request.items():
            if await self._send_answers_now(client, group, request_id):
                acknowledged += len(group)
        return acknowledged

    async def _send_answers_now(
        self, client: Any, answers: Sequence[Answer], request_id: str
    ) -> bool:
        message = client._create_message(
            "oadrCreatedEvent", **created_event_payload(answers, request_id, client.ven_id)
        )
        response_type, payload = await client._perform_request("EiEvent", message)
        code = (payload or {}).get("response", {}).get("response_code")
        if response_type != "oadrResponse" or code != 200:
            logger.warning(
                "VTN %s did not acknowledge the answers to %s (%s, code %s); they stay unsent",
                self.vtn.id,
                ", ".join(f"{a.event_id}#{a.modification_number}" for a in answers),
                response_type,
                code,
            )
            return False
        await self._distribution.mark_sent(answers, self.clock.now())
        return True

    async def _on_empty_distribution(self, message_type: str, payload: Any) -> None:
        """openleadr's ``after_parse_xml`` hook: a distribution with no events at all (which
        openleadr does not pass on) cancels every known event by implication."""
        client = self._client
        if message_type != "oadrDistributeEvent" or client is None:
            return
        if isinstance(payload, Mapping) and not payload.get("events"):
            async with self._answering:
                await self._distribution.handle([], self._request_id_of(payload))

    # -- mutual TLS ------------------------------------------------------------------------

    async def _check_vtn_signature(self, content: str) -> None:
        """openleadr's ``before_schema_validation`` hook: is the response signed with the
        certificate of ``vtn_fingerprint``? openleadr drops it if not; this says why."""
        expected = self.vtn.vtn_fingerprint
        if expected is None:
            return
        problem = signature_problem(content, expected)
        if problem is not None and problem != self._signature_problem:
            logger.warning("VTN %s: %s", self.vtn.id, problem)
        self._signature_problem = problem

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

    # -- availability schedules (EiOpt) ----------------------------------------------------

    async def send_availability(self, request: availability.OptRequest) -> availability.OptAnswer:
        """Send an availability schedule (``oadrCreateOpt``) or its cancellation to this VTN;
        the VTN's answer. Raises :class:`GatewayError` while not registered and
        :class:`availability.OptNotAnswered` when the VTN does not answer."""
        client, ven_id = self._client, self.ven_id
        if client is None or not self.available or ven_id is None:
            raise GatewayError(f"VTN {self.vtn.id}: not registered; {request.opt_id} not sent")
        return await availability.send(client, ven_id, request, self.clock.now())


class _GatewayClient(OpenADRClient):  # type: ignore[misc]
    """openleadr's client with its event handling replaced by the gateway's.

    openleadr's ``_on_event`` keeps events in memory, answers repeats from a dictionary it
    prunes (a cancelled event sent again raises KeyError and opts out of every event in the
    message), always answers 200 (or 452 for a lower-case VTN id) and cannot answer 450. Here
    the whole ``oadrDistributeEvent`` (from a poll or from the ``oadrRequestEvent`` at start)
    goes to ``on_distribution``; openleadr's own ``on_event`` handlers are never called.
    """

    def __init__(
        self,
        on_distribution: Callable[[Any, Mapping[str, Any]], Awaitable[None]],
        edge: inbound.Edge,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._gateway_on_distribution = on_distribution
        self._edge = edge
        # openleadr's own, with the signing material bound, renders what it is given as it is
        self._create_message = wire.escaping(self._create_message)  # type: ignore[has-type]
        """Every message's arguments escaped (:mod:`gateway.ven.wire`): openleadr's templates
        put them in as they are, and the VTN chooses our venID and the ids we echo."""
        self.request_sent_at: float | None = None
        """When the last request to the VTN was sent [event-loop s]."""
        self.xml_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ven-xml")
        """The thread that screens, validates and reads this VTN's answers: a poll never
        queues behind the database and planner work of asyncio's default pool."""

    async def _on_event(self, message: Mapping[str, Any]) -> None:
        await self._gateway_on_distribution(self, message)

    async def _perform_request(self, service: str, message: Any) -> tuple[Any, Any]:
        """Send ``message`` to the VTN's ``service``; the answer's message type and payload,
        or ``(None, {})`` when there is no usable answer (never a bare None).

        Replaces openleadr's: the answer is read up to ``max_message_size_bytes`` and screened
        by :mod:`gateway.ven.inbound` before any XML parser sees it; validation (schema,
        signature) and reading (:mod:`gateway.ven.parsing`) run in the client's own thread
        (``xml_executor``). openleadr's
        hooks run in its order: before_send_xml, after_receive_xml, before_schema_validation,
        before_parse_xml, after_parse_xml.
        """
        await self._ensure_client_session()
        self.request_sent_at = asyncio.get_running_loop().time()
        url = f"{self.vtn_url}/{service}"
        vtn = self._edge.refusals.vtn_id
        try:
            await self._execute_hooks("before_send_xml", openleadr_utils.ensure_str(message))
            async with self.client_session.post(url, data=message) as response:
                content = await inbound.read_body(response, self._edge.max_message_size_bytes)
                status = response.status
        except inbound.TooLargeError as exc:
            await self._edge.refusals.refused(service, exc.refusal)
            return None, {}
        except Exception as exc:  # aiohttp raises what it meets: no usable answer, no traceback
            logger.warning(
                "VTN %s: request to %s failed: %s: %s", vtn, url, type(exc).__name__, exc
            )
            return None, {}
        await self._execute_hooks("after_receive_xml", content.decode("utf-8", "replace"))
        if status != 200:
            logger.warning(
                "VTN %s answered HTTP %d to %s: %s",
                vtn,
                status,
                service,
                content[:_SHOWN_BYTES].decode("utf-8", "replace"),
            )
            return None, {}
        if not await self._edge.screen(service, content, self.xml_executor):
            return None, {}
        return await self._read(service, content)

    async def _read(self, service: str, content: bytes) -> tuple[Any, Any]:
        """Validate and read an answer that passed the edge; ``(None, {})`` when it fails."""
        vtn = self._edge.refusals.vtn_id
        text = content.decode("utf-8", "replace")
        try:
            await self._execute_hooks("before_schema_validation", text)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self.xml_executor, parsing.validate, content, self.vtn_fingerprint
            )
            await self._execute_hooks("before_parse_xml", text)
            message_type, payload = await loop.run_in_executor(
                self.xml_executor, parsing.parse_message, content
            )
            await self._execute_hooks("after_parse_xml", message_type, payload)
        except Exception as exc:  # lxml, signxml and xmltodict raise what they meet
            logger.warning(
                "VTN %s: the answer to %s failed the schema, the signature or could not be "
                "read: %s: %s",
                vtn,
                service,
                type(exc).__name__,
                str(exc)[:_SHOWN_BYTES],
            )
            return None, {}
        response = payload.get("response") if isinstance(payload, Mapping) else None
        code = response.get("response_code") if isinstance(response, Mapping) else None
        if code is not None and code != 200:
            logger.warning(
                "VTN %s answered %s with code %s: %s",
                vtn,
                service,
                code,
                str(response.get("response_description") if response else "")[:_SHOWN_BYTES],
            )
        return message_type, payload


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


def _report_granularity(interval_s: float) -> timedelta:
    """The report sampling rate; openleadr schedules reports with cron (``utils.cron_config``)."""
    if not is_report_interval(interval_s):
        raise ConfigError(f"report_interval_s = {interval_s}: expected {REPORT_INTERVAL_RULE}")
    return timedelta(seconds=interval_s)


def _running_jobs(client: Any) -> list[asyncio.Future[Any]]:
    """openleadr's scheduled jobs in flight (polls, reports), to await them after shutdown."""
    with contextlib.suppress(Exception):
        executor = client.scheduler._lookup_executor("default")
        return [job for job in executor._pending_futures if not job.done()]
    return []


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
