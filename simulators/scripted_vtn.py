"""A scripted VTN: openleadr's ``OpenADRServer`` in its external ``on_poll`` mode.

The stock openleadr VTN cannot send what a conformance test needs (a lower modification
number, a cancelled event sent again, a distribution that leaves an event out, an empty one,
unknown signal names, events without per-interval dtstart, odd targets, hostile bytes). In
``on_poll`` mode the VTN answers each ``oadrPoll`` with whatever message the test queued,
built from plain dicts by openleadr's own message templates (or raw bytes), so every byte
still goes through the VEN's XML, schema validation and HTTP on loopback. Distributions go
out as written: openleadr's sender-side preflight (which would stretch an active period to
the sum of its intervals and zero a SIMPLE signal's currentValue) is skipped for them, as
other VTNs do not have it.

It serves plain HTTP on 127.0.0.1 with an OS-assigned port
(:class:`simulators.vtn_server.LoopbackServer`). It registers any VEN (a VEN that brings its
venID keeps it), accepts the reports a VEN offers without asking for any, answers
``oadrRequestEvent`` with the events set in :attr:`ScriptedVtn.standing`, and records every
``eventResponse`` it receives with its response code and requestID
(:attr:`ScriptedVtn.responses`) before acknowledging it. The requestID of every distribution
it sends, from a poll or in answer to ``oadrRequestEvent``, is in
:attr:`ScriptedVtn.distributions` (openleadr sets it, not the script).

A test or benchmark may also queue ``bytes``: that poll is answered with exactly those bytes
(``application/xml``, HTTP 200), past openleadr, so that malformed, truncated or hostile XML
reaches the VEN as a VTN could send it.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from openleadr import utils as openleadr_utils
from openleadr.messaging import TEMPLATES, create_message

from gateway.ven.wire import escape
from simulators.vtn_server import LoopbackServer, on_each_event_response

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedResponse:
    """One eventResponse of an ``oadrCreatedEvent`` as the VTN received it."""

    ven_id: str
    event_id: str
    modification_number: int
    opt_type: str
    response_code: int
    request_id: str


@dataclass(frozen=True)
class SentDistribution:
    """One ``oadrDistributeEvent`` as the VTN sent it."""

    request_id: str
    event_ids: tuple[str, ...]


class ScriptedVtn:
    """A VTN on 127.0.0.1 (OS-assigned port) whose messages the test script decides.

    vtn_id: sent in every message; lower case is allowed here (to test pitfall 7)
    poll_interval_s: the poll interval the VTN asks for [wall s], whole seconds >= 1
    """

    def __init__(self, vtn_id: str = "SCRIPTED-VTN", poll_interval_s: int = 1) -> None:
        self.vtn_id = vtn_id
        self.queue: deque[tuple[str, dict[str, Any]] | bytes] = deque()
        """Messages for the next polls, one per poll, oldest first; ``bytes`` go out verbatim."""
        self.standing: list[dict[str, Any]] = []
        """The events ``oadrRequestEvent`` answers with (the VEN asks at start)."""
        self.responses: list[ReceivedResponse] = []
        self.polls = 0
        self.registrations: list[str] = []
        """The venID of every registration, in order."""
        self.distributions: list[SentDistribution] = []
        """Every distribution sent, in order."""
        self.assigned_ven_id: str | None = None
        """The venID this VTN gives every VEN that registers; None: the one the VEN asks for,
        else a new one. It goes out escaped (openleadr's templates do not escape)."""
        self.loopback = LoopbackServer(vtn_id, poll_interval_s, name="the scripted VTN")
        self.server: Any = self.loopback.server
        self.server.app.middlewares.insert(0, self._raw_answers)
        self.loopback.add_handlers(
            {
                "on_poll": self._on_poll,
                "on_request_event": self._on_request_event,
                "on_created_event": self._on_created_event,
                "on_create_party_registration": self._on_create_party_registration,
                "on_register_report": self._on_register_report,
            }
        )
        self._record_response_codes()
        for service in self.server.services.values():
            service._create_message = self._create_message

    @property
    def url(self) -> str:
        return self.loopback.url

    async def start(self) -> None:
        await self.loopback.start()

    async def stop(self) -> None:
        await self.loopback.stop()

    def distribute(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Queue an ``oadrDistributeEvent`` carrying exactly ``events`` (may be empty)."""
        self.queue.append(
            (
                "oadrDistributeEvent",
                {"events": [dict(e) for e in events]},  # openleadr sets the requestID
            )
        )

    def send_raw(self, body: str | bytes) -> None:
        """Queue an answer to the next poll that goes out exactly as ``body`` (a ``str`` as
        UTF-8), with no check at all: a DTD, an entity, an empty or an oversized body, broken
        XML."""
        self.queue.append(body.encode() if isinstance(body, str) else body)

    def responses_to(self, event_id: str) -> list[ReceivedResponse]:
        return [r for r in self.responses if r.event_id == event_id]

    def _create_message(self, message_type: str, **payload: Any) -> str:
        """The XML of one message: distributions as written (recorded with their requestID),
        anything else through openleadr's ``create_message``."""
        if message_type != "oadrDistributeEvent":
            return str(create_message(message_type, **payload))
        events = payload.get("events") or []
        self.distributions.append(
            SentDistribution(
                request_id=str(payload.get("request_id")),
                event_ids=tuple(str(e["event_descriptor"]["event_id"]) for e in events),
            )
        )
        return render_distribution(payload)

    # -- openleadr handlers ----------------------------------------------------------------

    @web.middleware
    async def _raw_answers(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Answer a poll with the queued bytes, verbatim, when the next message is raw."""
        if request.path.endswith("/OadrPoll") and self.queue and isinstance(self.queue[0], bytes):
            self.polls += 1
            body = self.queue.popleft()
            assert isinstance(body, bytes)  # checked above; the queue is this loop's only
            return web.Response(body=body, content_type="application/xml")
        return await handler(request)

    def _on_poll(self, ven_id: str) -> tuple[str, dict[str, Any]] | None:
        self.polls += 1
        if not self.queue or isinstance(self.queue[0], bytes):
            return None  # raw bytes go out through _raw_answers, never from here
        message = self.queue.popleft()
        assert not isinstance(message, bytes)
        return message

    def _on_request_event(self, ven_id: str) -> list[dict[str, Any]] | None:
        return [dict(e) for e in self.standing] or None

    def _on_created_event(self, ven_id: str, event_id: str, opt_type: str) -> None:
        """Recorded with the response codes by :meth:`_record_response_codes`."""

    def _on_create_party_registration(self, payload: Mapping[str, Any]) -> tuple[str, str]:
        ven_id = self.assigned_ven_id or str(payload.get("ven_id") or _new_id("VEN"))
        self.registrations.append(ven_id)
        return escape(ven_id), _new_id("REG")

    def _on_register_report(self, *_: Any, **__: Any) -> None:
        return None

    def _record_response_codes(self) -> None:
        """openleadr passes ``on_created_event`` only the opt; keep the whole response."""

        def record(ven_id: str, response: Mapping[str, Any]) -> None:
            self.responses.append(
                ReceivedResponse(
                    ven_id=ven_id,
                    event_id=str(response.get("event_id")),
                    modification_number=int(response.get("modification_number") or 0),
                    opt_type=str(response.get("opt_type")),
                    response_code=int(response.get("response_code") or 0),
                    request_id=str(response.get("request_id")),
                )
            )

        on_each_event_response(self.server, record)


def render_distribution(payload: Mapping[str, Any]) -> str:
    """The XML of an ``oadrDistributeEvent`` (``events``, ``request_id``, ``vtn_id``) as
    openleadr's templates write it, without its sender-side preflight and unsigned."""
    body = TEMPLATES.get_template("oadrDistributeEvent.xml").render(**payload)
    return str(
        TEMPLATES.get_template("oadrPayload.xml").render(
            template="oadrDistributeEvent",
            signature=None,
            signed_object=openleadr_utils.flatten_xml(body),
        )
    )


def event_dict(
    event_id: str,
    *,
    start_at: datetime,
    modification_number: int = 0,
    status: str = "far",
    duration: timedelta = timedelta(hours=1),
    intervals: Sequence[tuple[timedelta, float]] = ((timedelta(hours=1), 1.0),),
    signal_name: str = "SIMPLE",
    signal_type: str = "level",
    market_context: str = "http://utility.example/dr",
    priority: int = 0,
    test_event: bool = False,
    response_required: str = "always",
    targets: Sequence[Mapping[str, str]] = ({"group_id": "ALL-SITES"},),
    start_after: timedelta | None = None,
    created_at: datetime | None = None,
    interval_dtstart: Sequence[datetime] | None = None,
    current_value: float | None = None,
) -> dict[str, Any]:
    """One event as openleadr's ``oadrDistributeEvent`` template takes it.

    interval_dtstart: per-interval dtstart values to send (2.0b makes them optional; a VEN
    must not rely on them); None sends none.
    current_value: the signal's currentValue to send (a VEN must not rely on it either).
    targets: 2.0b's schema wants at least one; the default, a group, addresses the whole VEN.
    """
    active_period: dict[str, Any] = {"dtstart": start_at, "duration": duration}
    if start_after is not None:
        active_period["tolerance"] = {"startafter": start_after}
    signal_intervals = []
    for i, (length, value) in enumerate(intervals):
        interval: dict[str, Any] = {"duration": length, "signal_payload": value, "uid": i}
        if interval_dtstart is not None:
            interval["dtstart"] = interval_dtstart[i]
        signal_intervals.append(interval)
    signal: dict[str, Any] = {
        "signal_name": signal_name,
        "signal_type": signal_type,
        "signal_id": f"{event_id}-S0",
        "intervals": signal_intervals,
    }
    if current_value is not None:
        signal["current_value"] = current_value
    event: dict[str, Any] = {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": modification_number,
            "modification_date_time": created_at or start_at,
            "priority": priority,
            "market_context": market_context,
            "created_date_time": created_at or start_at,
            "event_status": status,
            "test_event": test_event,
        },
        "active_period": active_period,
        "event_signals": [signal],
        "response_required": response_required,
    }
    event["targets"] = [dict(t) for t in targets]
    return event


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12].upper()}"
