"""A simulated VTN for tests and the demo, on openleadr's ``OpenADRServer``.

It registers any VEN, asks for every report a VEN offers at the offered rate and records the
readings, issues scenario events on the injected clock and records every opt it receives.

Reports: ``on_register_report`` runs in openleadr's "full" mode (it sees each report's
descriptions: rID, reportType, readingType, measurement) and asks for every data point at the
fastest rate the VEN offers. Readings are recorded from the whole ``oadrUpdateReport``
(:meth:`SimulatedVtn._receive_readings`), each with what the VEN registered for its rID and
its duration: openleadr's per-point callbacks would get bare (dtstart, value) pairs and fail
(KeyError 'value', HTTP 500) on the 2.0b ``oadrPayloadResourceStatus`` of a TELEMETRY_STATUS
report. Values go to ``telemetry``, statuses to ``statuses``. openleadr's VTN requests only
reports named TELEMETRY_USAGE or TELEMETRY_STATUS.
Events are built as openleadr objects and queued with ``add_raw_event`` rather than
``add_event``, which cannot set test events, priority, ``startafter`` or the VTN comment.

Things to know (``docs/openadr-notes.md``):

- it serves on 127.0.0.1 with an OS-assigned port (``url`` after :meth:`start`), set up by
  :class:`simulators.vtn_server.LoopbackServer`;
- with ``tls`` (:class:`VtnTls`) it serves HTTPS that requires a client certificate from the
  CA, signs its messages and checks each VEN's connection and signature against the
  fingerprint given for its VEN name (:meth:`SimulatedVtn._ven_lookup`);
- its VTN id must be upper case (pitfall 7);
- openleadr writes durations in whole seconds (``PT1S``) and drops fractions, so the poll
  interval and every event duration must be whole seconds;
- openleadr judges event status on the wall clock: an event whose end is in the wall-clock
  past is dropped as completed and the VEN does not answer it. A simulated clock must start
  at or after the present and run forward;
- openleadr hands the opt of an event to its callback once; the simulator registers the
  callback again for every modification and cancellation so each answer is recorded in
  ``opts``. Every answer the VTN receives, repeats included (a restarted VEN answers the
  events it is sent again), is in ``received_answers``;
- a VEN that registers with a venID keeps it (a VEN the simulator registered before, or one
  given a venID out of band); a VEN without one gets a new one. ``registration_count`` says
  how often a venID registered.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from openleadr import objects, utils

from gateway.clock import Clock, SystemClock
from gateway.errors import GatewayError, InputError
from simulators.eiopt import EiOptService
from simulators.vtn_server import LoopbackServer, on_each_event_response
from simulators.vtn_tls import VtnTls

logger = logging.getLogger(__name__)

EventKind = Literal["curtailment", "surplus"]

_WALL = SystemClock()
"""Only to warn about events openleadr will consider completed; simulated time is ``clock``."""
_REGISTERING_VEN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "registering_ven", default=None
)
"""The venID of the ``oadrRegisterReport`` being handled."""
_ReportRequest = tuple[str, Callable[[list[tuple[datetime, float]]], None], timedelta]
"""(rID, callback, sampling interval): what openleadr's full mode asks per data point."""
_MIN_WALL_SLEEP_S = 0.02
_MAX_WALL_SLEEP_S = 0.5


@dataclass(frozen=True)
class ScenarioEvent:
    """An event the VTN issues at ``issue_at`` (simulated time), with one signal.

    issue_at, start_at: aware UTC
    duration_s: length of the active period [s], whole seconds
    intervals: the signal's values, one per interval
    interval_durations_s: each interval's length [s]; empty splits ``duration_s`` equally
    resource_ids: the sites (OpenADR resource ids) it targets; empty targets the whole VEN
    kind: a label for the demo (sent as the VTN comment)
    """

    issue_at: datetime
    start_at: datetime
    duration_s: float
    signal_name: str
    signal_type: str
    intervals: tuple[float, ...]
    interval_durations_s: tuple[float, ...] = ()
    resource_ids: tuple[str, ...] = ()
    kind: EventKind = "curtailment"
    market_context: str = "http://sim-vtn.example/programme"
    priority: int = 0
    test_event: bool = False
    ramp_up_s: float | None = None
    start_after_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("issue_at", "start_at"):
            if getattr(self, name).tzinfo is None:
                raise InputError(f"ScenarioEvent.{name} must be timezone-aware UTC")
        if not self.intervals:
            raise InputError("ScenarioEvent.intervals: at least one value is needed")
        _whole_seconds("duration_s", self.duration_s, positive=True)
        for name in ("ramp_up_s", "start_after_s"):
            value = getattr(self, name)
            if value is not None:
                _whole_seconds(name, value, positive=False)
        durations = self.durations_s()
        for duration_s in durations:
            _whole_seconds("interval_durations_s", duration_s, positive=True)
        if sum(durations) != self.duration_s:
            raise InputError(
                f"ScenarioEvent.interval_durations_s add up to {sum(durations)} s, "
                f"not duration_s = {self.duration_s} s"
            )

    def durations_s(self) -> tuple[float, ...]:
        """Each interval's length [s]."""
        if self.interval_durations_s:
            if len(self.interval_durations_s) != len(self.intervals):
                raise InputError(
                    f"ScenarioEvent: {len(self.intervals)} interval values but "
                    f"{len(self.interval_durations_s)} interval durations"
                )
            return self.interval_durations_s
        return (self.duration_s / len(self.intervals),) * len(self.intervals)

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(seconds=self.duration_s)


@dataclass(frozen=True)
class Registration:
    ven_id: str
    ven_name: str
    registration_id: str
    at: datetime


@dataclass(frozen=True)
class IssuedEvent:
    ven_id: str
    event_id: str
    spec: ScenarioEvent
    at: datetime


@dataclass(frozen=True)
class OptRecord:
    """An opt the VTN received; ``modification_number`` is the version it answers."""

    ven_id: str
    event_id: str
    opt_type: str
    at: datetime
    modification_number: int = 0


@dataclass(frozen=True)
class TelemetryReading:
    """One reported value; ``at`` is the VEN's timestamp (a projected reading's is in the
    future), ``unit`` e.g. ``kW``; the rest is what the VEN registered for ``r_id``."""

    resource_id: str | None
    measurement: str
    value: float
    at: datetime
    unit: str | None = None
    ven_id: str | None = None
    report_name: str | None = None
    """e.g. TELEMETRY_USAGE."""
    report_type: str | None = None
    """e.g. ``reading``, ``upRegulationCapacityAvailable``."""
    reading_type: str | None = None
    """e.g. ``Direct Read``, ``Projected``."""
    r_id: str | None = None
    duration_s: float | None = None
    """How long the reading holds, when the VEN says [s]."""


@dataclass(frozen=True)
class StatusReading:
    """One TELEMETRY_STATUS reading (``oadrPayloadResourceStatus``); ``at`` is the VEN's."""

    resource_id: str | None
    online: bool
    manual_override: bool
    at: datetime
    ven_id: str
    r_id: str


@dataclass(frozen=True)
class _Point:
    """A data point a VEN registered: what its readings are."""

    report_name: str
    resource_id: str | None
    report_type: str | None
    reading_type: str | None
    measurement: str
    unit: str | None


@dataclass
class _Live:
    """An event the VTN distributes to one VEN."""

    ven_id: str
    event: Any
    """openleadr.objects.Event."""


class SimulatedVtn:
    """A VTN on loopback for tests and the demo.

    clock: simulated time; scenario events are issued when ``clock.now() >= issue_at``
    vtn_id: upper case (openleadr pitfall 7)
    poll_interval_s: the poll interval the VTN asks VENs for [wall s], whole seconds >= 1
    scenario: events that :meth:`run_scenario` issues
    resend_cancelled: keep distributing a cancelled event after the VEN acknowledged it,
        like VTNs that send cancelled events until they end
    tls: serve HTTPS with client certificates and signed messages; None for plain HTTP
    readings_kept: keep only this many of the newest telemetry and status readings (a long
        campaign or soak reads none of them); None keeps every one
    """

    def __init__(
        self,
        clock: Clock,
        vtn_id: str = "SIM-VTN",
        poll_interval_s: float = 1.0,
        scenario: Sequence[ScenarioEvent] = (),
        *,
        resend_cancelled: bool = False,
        tls: VtnTls | None = None,
        readings_kept: int | None = None,
    ) -> None:
        if vtn_id != vtn_id.upper():
            raise InputError(
                f"vtn_id {vtn_id!r}: use upper case; openleadr VENs answer a lower-case "
                "VTN id with code 452"
            )
        if poll_interval_s < 1 or poll_interval_s != int(poll_interval_s):
            raise InputError(
                f"poll_interval_s = {poll_interval_s}: OpenADR durations travel in whole "
                "seconds; use 1 or more"
            )
        self.clock = clock
        self.vtn_id = vtn_id
        self.poll_interval_s = poll_interval_s
        self.scenario = tuple(sorted(scenario, key=lambda spec: spec.issue_at))
        self.resend_cancelled = resend_cancelled
        self.tls = tls
        self.registrations: dict[str, Registration] = {}
        self.issued: list[IssuedEvent] = []
        self.opts: list[OptRecord] = []
        self.received_answers: list[OptRecord] = []
        """Every answer in every ``oadrCreatedEvent`` received, repeats included."""
        self._registration_counts: Counter[str] = Counter()
        if readings_kept is not None and readings_kept < 0:
            raise InputError(f"readings_kept must be >= 0, got {readings_kept}")
        self.telemetry: deque[TelemetryReading] = deque(maxlen=readings_kept)
        """Every value reported (the newest ``readings_kept``), in arrival order (see
        :meth:`readings`)."""
        self.statuses: deque[StatusReading] = deque(maxlen=readings_kept)
        """Every TELEMETRY_STATUS reading (the newest ``readings_kept``), in arrival order."""
        self._points: dict[tuple[str, str], _Point] = {}
        """What each (venID, rID) registered is."""
        self._live: dict[str, _Live] = {}
        self._ids = itertools.count(1)
        lookup = self._ven_lookup
        self.loopback = LoopbackServer(
            vtn_id, poll_interval_s, tls=tls, ven_lookup=lookup, name="the simulated VTN"
        )
        self.server: Any = self.loopback.server
        self.eiopt = EiOptService.install(self.server, clock, self.registrations, tls, lookup)
        """The EiOpt route openleadr lacks; ``eiopt.opts`` holds the opts received."""
        self._record_every_answer()
        self._take_over_readings()
        self.loopback.add_handlers(
            {
                "on_create_party_registration": self._on_create_party_registration,
                "on_register_report": self._on_register_report,
            }
        )

    @property
    def url(self) -> str:
        """The VTN's endpoint, e.g. ``http://127.0.0.1:PORT/OpenADR2/Simple/2.0b``."""
        return self.loopback.url

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:``port``; 0 lets the OS assign one (see :attr:`url`)."""
        url = await self.loopback.start(port)
        logger.info("simulated VTN %s listening at %s", self.vtn_id, url)

    async def stop(self) -> None:
        await self.loopback.stop()

    async def run_scenario(self) -> None:
        """Issue every scenario event to every registered VEN once the clock reaches its
        ``issue_at``; an event due while no VEN is registered waits for one. Returns when
        all are issued; run it as a task and cancel it to stop early."""
        pending = list(self.scenario)
        while pending:
            now = self.clock.now()
            due = [spec for spec in pending if spec.issue_at <= now]
            if due and self.registrations:
                for spec in due:
                    for ven_id in list(self.registrations):
                        self._issue(spec, ven_id, f"EVT-{next(self._ids):04d}")
                    pending.remove(spec)
                continue
            ahead_s = (pending[0].issue_at - now).total_seconds()
            wall_s = self.clock.wall_s(ahead_s) if ahead_s > 0 else 0.0
            await asyncio.sleep(min(max(wall_s, _MIN_WALL_SLEEP_S), _MAX_WALL_SLEEP_S))

    def add_event_now(
        self, spec: ScenarioEvent, *, ven_id: str | None = None, event_id: str | None = None
    ) -> str:
        """Issue ``spec`` now to ``ven_id`` (default: the only registered VEN); its id."""
        if ven_id is None:
            if len(self.registrations) != 1:
                raise InputError(f"{len(self.registrations)} VENs are registered; name the ven_id")
            (ven_id,) = self.registrations
        elif ven_id not in self.registrations:
            raise InputError(f"VEN {ven_id!r} is not registered")
        return self._issue(spec, ven_id, event_id or f"EVT-{next(self._ids):04d}")

    def modify(self, event_id: str, values: Sequence[float]) -> int:
        """Give the event new interval values (same durations); its new modification number."""
        live = self._find(event_id)
        intervals = live.event.event_signals[0].intervals
        if len(values) != len(intervals):
            raise InputError(f"event {event_id} has {len(intervals)} intervals, not {len(values)}")
        for interval, value in zip(intervals, values, strict=True):
            interval.signal_payload = float(value)
        number: int = utils.increment_event_modification_number(live.event)
        live.event.event_descriptor.modification_date_time = self.clock.now()
        self._distribute(live, event_id)
        return number

    def cancel(self, event_id: str) -> int:
        """Cancel the event; its new modification number."""
        live = self._find(event_id)
        self.server.cancel_event(live.ven_id, event_id)
        self._distribute(live, event_id)
        return int(live.event.event_descriptor.modification_number)

    def opts_for(self, event_id: str) -> list[OptRecord]:
        return [record for record in self.opts if record.event_id == event_id]

    def readings(
        self,
        *,
        report_type: str | None = None,
        resource_id: str | None = None,
        reading_type: str | None = None,
    ) -> list[TelemetryReading]:
        """The values reported, optionally only of one report type, site or reading type."""
        return [
            r
            for r in self.telemetry
            if (report_type is None or r.report_type == report_type)
            and (resource_id is None or r.resource_id == resource_id)
            and (reading_type is None or r.reading_type == reading_type)
        ]

    def registration_count(self, ven_id: str) -> int:
        """How many times the VEN ``ven_id`` registered (its first registration included)."""
        return self._registration_counts[ven_id]

    # -- openleadr handlers ----------------------------------------------------------------

    def _record_every_answer(self) -> None:
        """Record each answer of each ``oadrCreatedEvent`` before openleadr handles it."""

        def record(ven_id: str, response: Mapping[str, Any]) -> None:
            self.received_answers.append(
                OptRecord(
                    ven_id=ven_id,
                    event_id=str(response.get("event_id")),
                    opt_type=str(response.get("opt_type")),
                    at=self.clock.now(),
                    modification_number=int(response.get("modification_number") or 0),
                )
            )

        on_each_event_response(self.server, record)

    def _ven_lookup(self, ven_id: str | None) -> dict[str, Any] | None:
        """openleadr's ``ven_lookup``: who the VEN is and the fingerprint it must present."""
        registration = self.registrations.get(str(ven_id))
        if registration is None or self.tls is None:
            return None
        return {
            "ven_id": registration.ven_id,
            "ven_name": registration.ven_name,
            "fingerprint": self.tls.ven_fingerprints.get(registration.ven_name),
            "registration_id": registration.registration_id,
        }

    def _on_create_party_registration(self, payload: dict[str, Any]) -> tuple[str, str] | None:
        ven_name = str(payload.get("ven_name"))
        if self.tls is not None:
            expected = self.tls.ven_fingerprints.get(ven_name)
            presented = payload.get("fingerprint")
            if expected is None or presented != expected:
                logger.warning(
                    "refusing VEN %s: its client certificate fingerprint %s is not the one "
                    "given for it (%s)",
                    ven_name,
                    presented,
                    expected,
                )
                return None
        # A VEN that knows its venID keeps it; a new VEN gets one.
        ven_id = str(payload.get("ven_id") or f"VEN-{uuid.uuid4().hex[:12].upper()}")
        earlier = self.registrations.get(ven_id)
        registration_id = f"REG-{uuid.uuid4().hex[:12].upper()}"
        if earlier is not None and payload.get("registration_id") == earlier.registration_id:
            registration_id = earlier.registration_id  # a re-registration keeps its id
        registration = Registration(
            ven_id=ven_id,
            ven_name=ven_name,
            registration_id=registration_id,
            at=self.clock.now(),
        )
        self.registrations[ven_id] = registration
        self._registration_counts[ven_id] += 1
        logger.info(
            "VEN %s %s as %s",
            ven_name,
            "registered" if earlier is None else "registered again",
            ven_id,
        )
        return registration.ven_id, registration.registration_id

    def _take_over_readings(self) -> None:
        """Record readings from whole ``oadrUpdateReport`` messages (see the module notes) and
        know which VEN registers reports (openleadr's full mode does not say)."""
        service = self.server.services["report_service"]
        register = service.handlers["oadrRegisterReport"]
        update = service.handlers["oadrUpdateReport"]

        async def register_report(payload: dict[str, Any]) -> Any:
            token = _REGISTERING_VEN.set(str(payload.get("ven_id")))
            try:
                return await register(payload)
            finally:
                _REGISTERING_VEN.reset(token)

        async def update_report(payload: dict[str, Any]) -> Any:
            self._receive_readings(payload)
            return await update(payload)

        service.handlers["oadrRegisterReport"] = register_report
        service.handlers["oadrUpdateReport"] = update_report

    def _on_register_report(self, report: dict[str, Any]) -> list[_ReportRequest]:
        """Ask for every data point of an offered report at the fastest rate all its points
        allow (one rate per report)."""
        ven_id = _REGISTERING_VEN.get()
        descriptions = report.get("report_descriptions") or []
        fastest = [
            rd["sampling_rate"]["min_period"]
            for rd in descriptions
            if (rd.get("sampling_rate") or {}).get("min_period") is not None
        ]
        if ven_id is None or not fastest:
            return []
        sampling: timedelta = max(fastest)
        name = str(report.get("report_name", "")).removeprefix("METADATA_")
        requests: list[_ReportRequest] = []
        for rd in descriptions:
            measurement = rd.get("measurement") or {}
            unit, scale = measurement.get("unit"), measurement.get("scale")
            self._points[ven_id, str(rd["r_id"])] = _Point(
                report_name=name,
                resource_id=(rd.get("report_data_source") or {}).get("resource_id"),
                report_type=rd.get("report_type"),
                reading_type=rd.get("reading_type"),
                measurement=str(measurement.get("description") or "Status"),
                unit=unit if scale in (None, "none") or unit is None else f"{scale}{unit}",
            )
            requests.append((str(rd["r_id"]), self._readings_taken_over, sampling))
        return requests

    def _readings_taken_over(self, values: list[tuple[datetime, float]]) -> None:
        """The per-point callback openleadr needs to request a point; never called, since
        :meth:`_receive_readings` takes every reading out of the message first."""
        raise GatewayError(f"{len(values)} readings bypassed SimulatedVtn._receive_readings")

    def _receive_readings(self, payload: dict[str, Any]) -> None:
        """Record every reading of an ``oadrUpdateReport`` and take it out of the message,
        which openleadr then only acknowledges."""
        ven_id = str(payload.get("ven_id"))
        for report in payload.get("reports") or ():
            for interval in report.get("intervals") or ():
                self._record(ven_id, interval)
            report["intervals"] = []

    def _record(self, ven_id: str, interval: dict[str, Any]) -> None:
        body = interval.get("report_payload") or {}
        r_id = str(body.get("r_id"))
        point = self._points.get((ven_id, r_id))
        if point is None:
            logger.warning("VEN %s reported rID %s, which it did not register", ven_id, r_id)
            return
        at: datetime = interval["dtstart"]
        status = body.get("payload_resource_status")
        if isinstance(status, dict):
            self.statuses.append(
                StatusReading(
                    resource_id=point.resource_id,
                    online=bool(status.get("online")),
                    manual_override=bool(status.get("manual_override")),
                    at=at,
                    ven_id=ven_id,
                    r_id=r_id,
                )
            )
            return
        duration: timedelta | None = interval.get("duration")
        self.telemetry.append(
            TelemetryReading(
                resource_id=point.resource_id,
                measurement=point.measurement,
                value=float(body["value"]),
                at=at,
                unit=point.unit,
                ven_id=ven_id,
                report_name=point.report_name,
                report_type=point.report_type,
                reading_type=point.reading_type,
                r_id=r_id,
                duration_s=None if duration is None else duration.total_seconds(),
            )
        )

    def _on_opt(
        self, ven_id: str, event_id: str, opt_type: str, *, modification_number: int
    ) -> None:
        self.opts.append(
            OptRecord(
                ven_id=ven_id,
                event_id=event_id,
                opt_type=opt_type,
                at=self.clock.now(),
                modification_number=modification_number,
            )
        )
        live = self._live.get(event_id)
        if (
            self.resend_cancelled
            and live is not None
            and live.event.event_descriptor.event_status == "cancelled"
            and live.event not in self.server.events.get(ven_id, [])
        ):
            # openleadr dropped it on the acknowledgement; keep it in the next distributions
            self.server.events.setdefault(ven_id, []).append(live.event)

    # -- events ------------------------------------------------------------------------------

    def _issue(self, spec: ScenarioEvent, ven_id: str, event_id: str) -> str:
        if event_id in self._live:
            raise InputError(f"event id {event_id!r} is already in use")
        if spec.end_at <= _WALL.now():
            logger.warning(
                "event %s ends at %s, before the wall-clock present: openleadr treats it as "
                "completed and the VEN will not answer it",
                event_id,
                spec.end_at.isoformat(),
            )
        event = _openleadr_event(spec, ven_id, event_id, created_at=self.clock.now())
        self._live[event_id] = _Live(ven_id=ven_id, event=event)
        self.server.add_raw_event(
            ven_id=ven_id, event=event, callback=self._opt_callback(modification_number=0)
        )
        self.issued.append(IssuedEvent(ven_id, event_id, spec, self.clock.now()))
        logger.info("issued %s event %s to %s", spec.kind, event_id, ven_id)
        return event_id

    def _find(self, event_id: str) -> _Live:
        live = self._live.get(event_id)
        if live is None or live.event not in self.server.events.get(live.ven_id, []):
            raise InputError(f"event {event_id!r} is not distributed by this VTN (any more)")
        return live

    def _distribute(self, live: _Live, event_id: str) -> None:
        """Send the changed event with the next poll and record the answer to it."""
        number = int(live.event.event_descriptor.modification_number)
        self.server.event_callbacks[event_id] = (
            live.event,
            self._opt_callback(modification_number=number),
        )
        self.server.events_updated[live.ven_id] = True

    def _opt_callback(self, *, modification_number: int) -> Callable[..., None]:
        return partial(self._on_opt, modification_number=modification_number)


def _openleadr_event(spec: ScenarioEvent, ven_id: str, event_id: str, created_at: datetime) -> Any:
    intervals = []
    start_at = spec.start_at
    for uid, (value, duration_s) in enumerate(zip(spec.intervals, spec.durations_s(), strict=True)):
        intervals.append(
            objects.Interval(
                dtstart=start_at,
                duration=timedelta(seconds=duration_s),
                signal_payload=float(value),
                uid=uid,
            )
        )
        start_at += timedelta(seconds=duration_s)
    period = objects.ActivePeriod(
        dtstart=spec.start_at,
        duration=timedelta(seconds=spec.duration_s),
        ramp_up_period=None if spec.ramp_up_s is None else timedelta(seconds=spec.ramp_up_s),
        tolerance=(
            None
            if spec.start_after_s is None
            else {"startafter": timedelta(seconds=spec.start_after_s)}
        ),
    )
    targets = [{"resource_id": r} for r in spec.resource_ids] or [{"ven_id": ven_id}]
    return objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id=event_id,
            modification_number=0,
            market_context=spec.market_context,
            event_status="far",
            created_date_time=created_at,
            modification_date_time=created_at,
            priority=spec.priority,
            test_event=spec.test_event,
            vtn_comment=spec.kind,
        ),
        event_signals=[
            objects.EventSignal(
                intervals=intervals,
                signal_name=spec.signal_name,
                signal_type=spec.signal_type,
                signal_id=f"{event_id}-S0",
            )
        ],
        targets=targets,
        active_period=period,
        response_required="always",
    )


def _whole_seconds(name: str, value: float, *, positive: bool) -> None:
    if value != int(value) or value < (1 if positive else 0):
        raise InputError(
            f"ScenarioEvent.{name} = {value}: OpenADR durations travel in whole seconds; "
            f"use a whole number {'>= 1' if positive else '>= 0'}"
        )
