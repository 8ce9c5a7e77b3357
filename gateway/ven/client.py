"""One connection to one VTN: the owner of an ``openleadr.OpenADRClient``.

It answers events (parse, store the version, ask the planner, store the answer) and offers
telemetry of every site it serves. What it adds to openleadr (``openadr-notes.md``):

- events are kept in our own store keyed by (VTN, event id, modification number); a version
  seen again is answered from the store, without asking the planner again (pitfalls 1, 2);
- a cancellation is stored and acknowledged with optIn, without asking the planner (pitfall 3);
- a cancelled or completed event that the VTN sends again makes openleadr look up an answer
  it has already forgotten; the KeyError would opt out of every event in that message. An
  ``after_parse_xml`` hook puts our stored answer back first (pitfall 3);
- telemetry measurements are copied before their scale is set: openleadr would otherwise
  change the shared ``enums.MEASUREMENTS`` entry for the whole process;
- a report with no reading at all (every value unknown) is not sent: the openleadr VTN
  answers it with HTTP 500;
- report granularities are checked up front: openleadr schedules them with cron and needs
  them to divide a minute, an hour or a day (pitfall 8);
- with mutual TLS (``cert_path``, ``key_path``, ``ca_path``, ``vtn_fingerprint``) the material
  is checked before openleadr sees it: the certificate and key load and match, the key is one
  openleadr can sign with, the CA loads, and a TLS handshake shows whether the VTN's
  certificate verifies against the CA. openleadr drops a response signed with another
  certificate than ``vtn_fingerprint`` with a log line and carries on as if the VTN had not
  answered; a ``before_schema_validation`` hook compares the fingerprint itself so that
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

Reconnection and back-off are not here yet: :meth:`VenConnection.start` raises
:class:`GatewayError` when the VTN cannot be reached and leaves retrying to its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal
from xml.etree import ElementTree

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from openleadr import OpenADRClient, enums
from openleadr import utils as openleadr_utils
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import db
from gateway.clock import Clock
from gateway.errors import ConfigError, GatewayError
from gateway.events import DrEvent, Opt, OptDecision
from gateway.settings import FINGERPRINT_PATTERN, SiteSettings, VtnSettings
from gateway.ven import store
from gateway.ven.adapter import MalformedEventError, parse_event
from models import VenRegistration

logger = logging.getLogger(__name__)

Decide = Callable[[DrEvent], Awaitable[OptDecision]]
"""The planner's answer to one event version."""
TelemetryKw = Callable[[str], float | None]
"""Current facility power of a site [kW], by site id; None when unknown."""

CANCELLATION_ACK = OptDecision(opt="optIn", reason="cancellation acknowledged")
EVENT_HANDLERS = ("on_event", "on_update_event")
"""openleadr's two event handlers; both go through :meth:`VenConnection._on_event`."""

TelemetrySource = Literal["power_kw"]


@dataclass(frozen=True)
class TelemetryPoint:
    """One report row every site offers: what openleadr announces and where the value comes from."""

    report_name: str
    """openleadr.enums.REPORT_NAME."""
    measurement: str
    """A member of openleadr.enums.MEASUREMENTS."""
    unit: str
    scale: str
    """openleadr.enums.SI_SCALE_CODE: ``k`` turns W into kW."""
    source: TelemetrySource
    """Which reader gives the value."""


TELEMETRY: tuple[TelemetryPoint, ...] = (
    TelemetryPoint(
        report_name="TELEMETRY_USAGE",
        measurement="REAL_POWER",
        unit="W",
        scale="k",
        source="power_kw",
    ),
)

_CRON_UNITS_S = ((60, 1), (3600, 60), (86400, 3600))
"""(below this [s], count in this [s]): openleadr's cron granularity for reports."""
_HANDSHAKE_TIMEOUT_S = 5.0
"""How long the TLS check at start waits for the VTN [wall s]; openleadr's own connect timeout."""
_XMLDSIG_CERTIFICATE = ".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate"


@dataclass(frozen=True)
class TlsMaterial:
    """Checked mutual-TLS material for one VTN, as openleadr's client takes it."""

    cert_path: str
    key_path: str
    ca_path: str
    vtn_fingerprint: str
    check_hostname: bool
    passphrase: str | None = field(repr=False)
    """Read from the environment at start; never logged."""
    ssl_context: ssl.SSLContext = field(repr=False)
    """The same TLS client context openleadr builds, for the handshake check."""

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``OpenADRClient``."""
        return {
            "cert": self.cert_path,
            "key": self.key_path,
            "passphrase": self.passphrase,
            "ca_file": self.ca_path,
            "vtn_fingerprint": self.vtn_fingerprint,
            "check_hostname": self.check_hostname,
        }


class VenConnection:
    """The gateway's VEN towards one VTN.

    vtn: the VTN's settings (its URL, our VEN name, an assigned VEN id if any)
    sites: the sites this VTN serves (each with ``vtn`` equal to ``vtn.id``)
    clock: the injected clock; stored times and report timestamps come from it
    session_factory: sessions of the state store
    decide: the planner's answer to an event version
    telemetry_kw: current facility power of a site, by site id [kW]; None when unknown
    report_interval_s: sampling rate offered for telemetry [s]; must divide 60 s, 60 min or 24 h
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
    ) -> None:
        self.vtn = vtn
        self.sites = _served_sites(vtn, sites)
        self.clock = clock
        self._session_factory = session_factory
        self._decide = decide
        self._readers: Mapping[TelemetrySource, TelemetryKw] = {"power_kw": telemetry_kw}
        self._report_granularity = _report_granularity(report_interval_s)
        self._client: Any = None
        self._available: bool | None = None
        """The VTN's state as last seen: None before the first attempt."""
        self._ven_id: str | None = vtn.ven_id
        self._registration_id: str | None = None
        self._answers: dict[tuple[str, int], Opt] = {}
        """What we answered to each (event id, modification number) since start."""
        self._config_problem: ConfigError | None = None
        """Why this connection stopped for good (configuration or authentication)."""
        self._signature_problem: str | None = None
        """Why the last response of the VTN failed our fingerprint check; None when it passed."""

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
        return self._client is not None and self._available is True

    async def start(self) -> None:
        """Register with the VTN, offer telemetry and start polling.

        Raises :class:`GatewayError` when the VTN cannot be reached or does not register us;
        the connection is then stopped and :meth:`start` may be called again. Raises
        :class:`ConfigError` (naming the VTN and the key to fix) when the TLS material is
        unusable, the VTN's certificate does not verify against ``ca_path`` or the VTN signs
        with another certificate than ``vtn_fingerprint``; that is final for this connection.
        """
        if self._config_problem is not None:
            raise ConfigError(str(self._config_problem))
        await self.stop()
        try:
            tls = load_tls_material(self.vtn)
            if tls is not None:
                await self._check_vtn_certificate(tls)
        except ConfigError as exc:
            self._give_up(exc)
            raise
        self._signature_problem = None
        client = self._build_client(tls)
        self._client = client
        try:
            await client.run()
        except GatewayError:  # the stored registration could not be read
            await self.stop()
            raise
        except Exception as exc:  # openleadr raises whatever it meets; translate at the edge
            await self.stop()
            self._went_down(f"{type(exc).__name__}: {exc}")
            raise GatewayError(f"VTN {self.vtn.id} at {self.vtn.url}: {exc}") from exc
        if client.registration_id is None:
            await self.stop()
            if self._signature_problem is not None:
                error = ConfigError(
                    f"VTN {self.vtn.id} at {self.vtn.url}: {self._signature_problem}; "
                    "openleadr ignores every message the VTN sends. Check vtn_fingerprint"
                )
                self._give_up(error)
                raise error
            self._went_down("not reachable or did not register us")
            raise GatewayError(
                f"VTN {self.vtn.id} at {self.vtn.url} is not reachable or did not register "
                f"VEN {self.vtn.ven_name!r}"
            )
        await self._keep_registration(client)
        self._came_up()

    async def stop(self) -> None:
        """Stop polling and reporting and close the HTTP session; safe to call twice."""
        client, self._client = self._client, None
        if client is None:
            return
        jobs = _running_jobs(client)
        if client.scheduler.running:
            client.scheduler.shutdown(wait=False)
        if client.report_queue_task is not None:
            jobs.append(client.report_queue_task)
            client.report_queue_task.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=2.0)
        if client.client_session is not None:
            await client.client_session.close()

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
            await self.stop()
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
        client = OpenADRClient(
            ven_name=self.vtn.ven_name,
            vtn_url=str(self.vtn.url),
            ven_id=self._ven_id,  # keep the VEN id the VTN gave us across restarts
            show_fingerprint=False,  # openleadr would print it on stdout
            **(tls.client_options() if tls is not None else {}),
        )
        client.query_registration = partial(
            self._query_then_resume, client, client.query_registration
        )
        for handler in EVENT_HANDLERS:
            client.add_handler(handler, self._on_event)
        client.add_hook("after_parse_xml", self._restore_forgotten_answers)
        if tls is not None:
            client.add_hook("before_schema_validation", self._check_vtn_signature)
        client.pending_reports = _ReportsWithReadings()
        for site in self.sites:
            for point in TELEMETRY:
                self._add_report(client, site, point)
        return client

    def _add_report(self, client: Any, site: SiteSettings, point: TelemetryPoint) -> None:
        measurement = replace(getattr(enums.MEASUREMENTS, point.measurement), scale=point.scale)
        client.add_report(
            callback=partial(self._read, point, site.id),
            resource_id=site.openadr_resource_id,
            measurement=measurement,
            unit=point.unit,
            scale=point.scale,
            report_name=point.report_name,
            report_specifier_id=f"dr-gateway-{point.report_name}",
            r_id=f"{site.openadr_resource_id}-{point.source}",
            sampling_rate=self._report_granularity,
            report_duration=self._report_granularity,
        )

    def _read(self, point: TelemetryPoint, site_id: str) -> list[tuple[datetime, float]]:
        """One reading for openleadr's report job; no reading when the value is unknown."""
        try:
            value = self._readers[point.source](site_id)
        except Exception:  # a report job is a task boundary inside openleadr's scheduler
            logger.exception("reading %s of site %s failed", point.source, site_id)
            return []
        if value is None:
            return []
        return [(self.clock.now(), float(value))]

    async def _on_event(self, raw: dict[str, Any]) -> Opt:
        """openleadr's on_event and on_update_event: the opt for one event version.

        Never raises: openleadr would opt out of every event in the message.
        """
        key = _version_key(raw)
        try:
            event = parse_event(raw, self.vtn.id)
        except MalformedEventError as exc:
            logger.warning("VTN %s sent a malformed event, opting out: %s", self.vtn.id, exc)
            opt: Opt = "optOut"
        else:
            try:
                opt = await self._answer(event)
            except Exception:  # task boundary: see the docstring
                logger.exception(
                    "VTN %s: answering event %s (modification %s) failed, opting out",
                    self.vtn.id,
                    event.event_id,
                    event.modification_number,
                )
                opt = "optOut"
        if key is not None:
            self._answers[key] = opt
        return opt

    async def _answer(self, event: DrEvent) -> Opt:
        stored = await asyncio.to_thread(self._store_version, event, self.clock.now())
        if stored is not None:
            logger.info(
                "VTN %s: event %s modification %d already answered %s",
                self.vtn.id,
                event.event_id,
                event.modification_number,
                stored.opt,
            )
            return stored.opt
        if event.cancelled:
            decision = CANCELLATION_ACK
        else:
            if event.test_event:
                logger.info("VTN %s: event %s is a test event", self.vtn.id, event.event_id)
            decision = await self._decide(event)
        await asyncio.to_thread(self._store_answer, event, decision, self.clock.now())
        logger.info(
            "VTN %s: event %s modification %d (%s): %s, %s",
            self.vtn.id,
            event.event_id,
            event.modification_number,
            event.status,
            decision.opt,
            decision.reason,
        )
        return decision.opt

    def _store_version(self, event: DrEvent, received_at: datetime) -> OptDecision | None:
        """Store the version; the answer already given to it when it was stored before."""
        with db.unit_of_work(self._session_factory) as session:
            _, created = store.save_event(session, event, received_at)
            if created:
                return None
            return store.last_response(
                session, event.vtn_id, event.event_id, event.modification_number
            )

    def _store_answer(self, event: DrEvent, decision: OptDecision, responded_at: datetime) -> None:
        with db.unit_of_work(self._session_factory) as session:
            row = store.event_row(session, event.vtn_id, event.event_id, event.modification_number)
            if row is None:
                raise GatewayError(
                    f"event {event.event_id} modification {event.modification_number} "
                    "vanished from the store before its answer was saved"
                )
            store.save_response(session, row, decision, responded_at)

    async def _restore_forgotten_answers(self, message_type: str, payload: Any) -> None:
        """Put back the answers openleadr forgot, before it looks them up.

        openleadr drops its answer to a cancelled or completed event; when the VTN sends that
        same version again, ``client._on_event`` fails on the lookup and opts out of every
        event in the message.
        """
        client = self._client
        if message_type != "oadrDistributeEvent" or client is None:
            return
        if not isinstance(payload, Mapping):
            return
        for raw in payload.get("events") or ():
            key = _version_key(raw)
            if key is None:
                continue
            raw_id = raw["event_descriptor"]["event_id"]
            if raw_id in client.responded_events:
                continue
            if any(_version_key(seen) == key for seen in client.received_events):
                opt = self._answers.get(key, "optOut")
                logger.debug("restoring answer %s to event %s for openleadr", opt, key)
                client.responded_events[raw_id] = opt

    # -- mutual TLS ------------------------------------------------------------------------

    async def _check_vtn_certificate(self, tls: TlsMaterial) -> None:
        """One TLS handshake with the VTN: ConfigError when its certificate does not verify.

        openleadr reports that as an unreachable VTN, which would be retried forever. A VTN
        that cannot be reached now is left to openleadr's own attempt to report.
        """
        url = self.vtn.url
        host = (url.host or "").strip("[]")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, url.port, ssl=tls.ssl_context),
                timeout=_HANDSHAKE_TIMEOUT_S,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(
                f"VTN {self.vtn.id} at {url}: its HTTPS certificate does not verify against "
                f"ca_path {tls.ca_path}: {exc.verify_message}; check ca_path and, for a "
                "host name mismatch, the url's host or check_hostname"
            ) from exc
        except ssl.SSLError as exc:
            if exc.reason == "WRONG_VERSION_NUMBER":
                raise ConfigError(
                    f"VTN {self.vtn.id} at {url} does not speak TLS (an openleadr VTN missing "
                    "any of its http_cert, http_key, http_ca_file serves plain HTTP)"
                ) from exc
            return
        except (OSError, TimeoutError):
            return
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

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


class _ReportsWithReadings(asyncio.Queue[Any]):
    """openleadr's outgoing report queue, minus reports without a single reading.

    A report whose every value is unknown has no intervals; the openleadr VTN answers it
    with HTTP 500 (KeyError 'intervals'). No reading, no report.
    """

    async def put(self, item: Any) -> None:
        if not getattr(item, "intervals", None):
            logger.debug("not sending report %s: no readings", getattr(item, "report_name", "?"))
            return
        await super().put(item)


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
    for below_s, unit_s in _CRON_UNITS_S:
        if 0 < interval_s < below_s:
            count = interval_s / unit_s
            if count == int(count) and (below_s // unit_s) % int(count) == 0:
                return timedelta(seconds=interval_s)
            break
    if interval_s == _CRON_UNITS_S[-1][0]:
        return timedelta(seconds=interval_s)
    raise ConfigError(
        f"report_interval_s = {interval_s}: expected whole seconds dividing a minute, whole "
        "minutes dividing an hour or whole hours dividing a day (e.g. 1, 10, 60, 300, 3600)"
    )


def _version_key(raw: object) -> tuple[str, int] | None:
    """(event id, modification number) of a raw event, or None when it has none."""
    if not isinstance(raw, Mapping):
        return None
    descriptor = raw.get("event_descriptor")
    if not isinstance(descriptor, Mapping):
        return None
    event_id = descriptor.get("event_id")
    number = descriptor.get("modification_number")
    if event_id is None or not isinstance(number, int):
        return None
    return str(event_id), number


def _running_jobs(client: Any) -> list[asyncio.Future[Any]]:
    """openleadr's scheduled jobs in flight (polls, reports), to await them after shutdown."""
    with contextlib.suppress(Exception):
        executor = client.scheduler._lookup_executor("default")
        return [job for job in executor._pending_futures if not job.done()]
    return []


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def load_tls_material(vtn: VtnSettings) -> TlsMaterial | None:
    """Check and gather the mutual-TLS material of ``vtn``; None for plain HTTP.

    The passphrase comes from the environment variable ``key_passphrase_env`` names. Raises
    :class:`ConfigError` naming the VTN and the key; no message contains key material.
    """
    if (
        vtn.cert_path is None
        or vtn.key_path is None
        or vtn.ca_path is None
        or vtn.vtn_fingerprint is None
    ):
        return None
    where = f"VTN {vtn.id}"
    passphrase: str | None = None
    if vtn.key_passphrase_env is not None:
        passphrase = os.environ.get(vtn.key_passphrase_env)
        if not passphrase:
            raise ConfigError(
                f"{where}: key_passphrase_env names the environment variable "
                f"{vtn.key_passphrase_env}, which is not set or empty"
            )
    cert_pem = _read_pem(where, "cert_path", vtn.cert_path)
    key_pem = _read_pem(where, "key_path", vtn.key_path)
    ca_pem = _read_pem(where, "ca_path", vtn.ca_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"{where}: cert_path {vtn.cert_path} is not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(
            key_pem, password=passphrase.encode() if passphrase else None
        )
    except TypeError as exc:  # encrypted without a passphrase or the other way round
        raise ConfigError(
            f"{where}: key_path {vtn.key_path}: {exc}; check key_passphrase_env"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{where}: key_path {vtn.key_path} is not a PEM private key or the passphrase is wrong"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"{where}: key_path {vtn.key_path} is a {type(key).__name__}; openleadr signs "
            "only with RSA or EC keys"
        )
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(
            f"{where}: key_path {vtn.key_path} is not the key of cert_path {vtn.cert_path}"
        )
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise ConfigError(f"{where}: ca_path {vtn.ca_path} holds no PEM certificate") from exc
    if not FINGERPRINT_PATTERN.match(vtn.vtn_fingerprint):
        raise ConfigError(
            f"{where}: vtn_fingerprint {vtn.vtn_fingerprint!r} is not 10 hex pairs joined by colons"
        )
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # as openleadr's client builds it
        context.load_verify_locations(cafile=str(vtn.ca_path))
        context.load_cert_chain(str(vtn.cert_path), str(vtn.key_path), passphrase)
        context.check_hostname = vtn.check_hostname
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}: cert_path, key_path or ca_path unusable for TLS: {exc.reason}"
        ) from exc
    return TlsMaterial(
        cert_path=str(vtn.cert_path),
        key_path=str(vtn.key_path),
        ca_path=str(vtn.ca_path),
        vtn_fingerprint=vtn.vtn_fingerprint,
        check_hostname=vtn.check_hostname,
        passphrase=passphrase,
        ssl_context=context,
    )


def signature_problem(content: str, expected_fingerprint: str) -> str | None:
    """Why a VTN response fails the fingerprint check openleadr applies; None when it passes
    (or is not XML at all, which openleadr reports itself)."""
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return None
    node = root.find(_XMLDSIG_CERTIFICATE)
    if node is None or not (node.text or "").strip():
        return "the VTN's response is not signed, though vtn_fingerprint is configured"
    try:
        received = str(
            openleadr_utils.certificate_fingerprint(openleadr_utils.extract_pem_cert(root))
        )
    except ValueError:
        return "the VTN's response carries an unreadable signing certificate"
    if received != expected_fingerprint:
        return (
            f"the VTN signs with a certificate whose fingerprint is {received}, not the "
            f"configured vtn_fingerprint {expected_fingerprint}"
        )
    return None


def _read_pem(where: str, key: str, path: os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"{where}: {key} {path}: cannot read: {exc.strerror}") from exc


def _public_der(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
