"""The EiOpt service the openleadr VTN lacks (it answers HTTP 404), for the simulated VTN.

:meth:`EiOptService.install` adds a POST route ``{http_path_prefix}/EiOpt`` to an
``OpenADRServer``'s aiohttp app, before the app starts. Each message is checked and parsed
with openleadr's own messaging functions (schema validation, ``parse_message``, and with TLS
``authenticate_message``: the client certificate and the message signature must be the
registered VEN's), and answered with ``oadrCreatedOpt`` / ``oadrCanceledOpt`` carrying the
VEN's requestID and a response code:

- 200: recorded (a create with a known optID of the same VEN replaces it: a resend);
- 452 (invalid ID): a cancel of an opt this VEN does not have, or an optID of another VEN;
- 454 (invalid data): a create with neither an availability schedule nor an event;
- 463 (not registered or authorized): a VEN the VTN has not registered, or a TLS request
  whose certificate or signature is not the registered VEN's.

Other message types get an ``oadrResponse`` with 459 (compliance error); XML that fails the
schema gets HTTP 400, as openleadr's own services do. Every message and its answer is kept in
``exchanges``; the opts as they stand in ``opts``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

from aiohttp import web
from openleadr import errors
from openleadr.messaging import (
    authenticate_message,
    parse_message,
    validate_xml_schema,
)
from signxml.exceptions import InvalidSignature

from gateway.clock import Clock
from simulators.vtn_tls import VenLookup, VtnTls, message_signer

logger = logging.getLogger(__name__)

OK = 200
INVALID_ID = 452
INVALID_DATA = 454
COMPLIANCE_ERROR = 459
NOT_REGISTERED_OR_AUTHORIZED = 463
ANSWERS = {"oadrCreateOpt": "oadrCreatedOpt", "oadrCancelOpt": "oadrCanceledOpt"}
"""The answer to each EiOpt message type."""


@dataclass(frozen=True)
class AvailabilityInterval:
    """One ``xcal:available`` component: the opt applies over ``[start_at, end_at)``."""

    start_at: datetime
    end_at: datetime


@dataclass(frozen=True)
class ReceivedOpt:
    """An opt as the VTN holds it; ``cancelled_at`` is set by an accepted oadrCancelOpt."""

    ven_id: str
    opt_id: str
    opt_type: str
    opt_reason: str
    market_context: str | None
    targets: tuple[tuple[str, str], ...]
    """(kind, value), e.g. ("resource_id", "site-a")."""
    intervals: tuple[AvailabilityInterval, ...]
    event_id: str | None
    """Set for an opt about one event instead of a schedule."""
    received_at: datetime
    cancelled_at: datetime | None = None


@dataclass(frozen=True)
class OptExchange:
    """One EiOpt message and the VTN's answer."""

    message_type: str
    ven_id: str | None
    opt_id: str | None
    request_id: str | None
    response_code: int
    at: datetime


class _Refused(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class EiOptService:
    """Records the opts of registered VENs and answers them.

    clock: stamps what is recorded
    registrations: the VTN's registered VENs by venID (read on every message)
    tls: with it, answers are signed with its certificate and TLS requests authenticated
    ven_lookup: the VTN's lookup of a VEN's certificate fingerprint (with ``tls``)
    """

    def __init__(
        self,
        clock: Clock,
        registrations: Mapping[str, object],
        tls: VtnTls | None = None,
        ven_lookup: VenLookup | None = None,
    ) -> None:
        self.clock = clock
        self._registrations = registrations
        self._ven_lookup = ven_lookup
        self._create_message = message_signer(tls)
        self.opts: dict[str, ReceivedOpt] = {}
        """Every opt received, by optID, as it stands."""
        self.exchanges: list[OptExchange] = []
        """Every EiOpt message received, in order, with the response code it got."""
        self.answering = True
        """False: answer HTTP 404 without looking at the message, as the openleadr VTN does."""

    @classmethod
    def install(
        cls,
        server: Any,
        clock: Clock,
        registrations: Mapping[str, object],
        tls: VtnTls | None = None,
        ven_lookup: VenLookup | None = None,
    ) -> EiOptService:
        """A service answering at ``{server.http_path_prefix}/EiOpt`` of the openleadr
        ``server``'s app (call before the app starts)."""
        service = cls(clock, registrations, tls, ven_lookup)
        server.app.router.add_post(f"{server.http_path_prefix}/EiOpt", service.handle)
        return service

    def received(self, message_type: str, opt_id: str) -> list[OptExchange]:
        """The messages of ``message_type`` about ``opt_id``, in order."""
        return [e for e in self.exchanges if e.message_type == message_type and e.opt_id == opt_id]

    async def handle(self, request: web.Request) -> web.Response:
        content = await request.read()
        if not self.answering:
            return web.Response(text="404: Not Found", status=HTTPStatus.NOT_FOUND)
        try:
            tree = validate_xml_schema(content)
            message_type, payload = parse_message(content)
        except SyntaxError as exc:  # lxml's XMLSyntaxError: not XML, or not the schema
            logger.warning("EiOpt: a message failed XML schema validation: %s", exc)
            return web.Response(text=f"XML failed validation: {exc}", status=HTTPStatus.BAD_REQUEST)
        ven_id = _optional_str(payload.get("ven_id"))
        request_id = _optional_str(payload.get("request_id"))
        opt_id = _optional_str(payload.get("opt_id"))
        answer = ANSWERS.get(message_type)
        if answer is None:
            self._record(message_type, ven_id, opt_id, request_id, COMPLIANCE_ERROR)
            return self._respond(
                "oadrResponse",
                response=_response(
                    COMPLIANCE_ERROR, f"{message_type} is not an EiOpt message", request_id
                ),
                ven_id=ven_id,
            )
        try:
            await self._authenticate(request, tree, payload, ven_id)
            if message_type == "oadrCreateOpt":
                self._create(payload, ven_id or "")
            else:
                self._cancel(ven_id or "", opt_id)
            code, description = OK, "OK"
        except _Refused as refused:
            code, description = refused.code, refused.description
            logger.warning("EiOpt: %s %s from %s refused: %s", message_type, opt_id, ven_id, code)
        except (errors.FingerprintMismatch, InvalidSignature) as exc:
            logger.warning("EiOpt: %s from %s: bad signature: %s", message_type, ven_id, exc)
            return web.Response(text="Invalid Signature", status=HTTPStatus.FORBIDDEN)
        self._record(message_type, ven_id, opt_id, request_id, code)
        return self._respond(
            answer, opt_id=opt_id, response=_response(code, description, request_id)
        )

    async def _authenticate(
        self, request: web.Request, tree: Any, payload: Mapping[str, Any], ven_id: str | None
    ) -> None:
        if ven_id is None or ven_id not in self._registrations:
            raise _Refused(NOT_REGISTERED_OR_AUTHORIZED, f"VEN {ven_id!r} is not registered")
        if request.secure:
            if self._ven_lookup is None:
                raise _Refused(NOT_REGISTERED_OR_AUTHORIZED, "this VTN cannot authenticate VENs")
            try:
                await authenticate_message(
                    request, tree, dict(payload), ven_lookup=self._ven_lookup
                )
            except errors.NotRegisteredOrAuthorizedError as exc:
                raise _Refused(NOT_REGISTERED_OR_AUTHORIZED, str(exc)) from exc

    def _create(self, payload: Mapping[str, Any], ven_id: str) -> None:
        opt_id = _optional_str(payload.get("opt_id"))
        if opt_id is None:
            raise _Refused(INVALID_DATA, "the opt has no optID")
        held = self.opts.get(opt_id)
        if held is not None and held.ven_id != ven_id:
            raise _Refused(INVALID_ID, f"opt {opt_id} belongs to another VEN")
        intervals = _intervals(payload.get("vavailability"))
        event_id = _optional_str(payload.get("event_id"))
        if not intervals and event_id is None:
            raise _Refused(
                INVALID_DATA, "the opt has neither an availability schedule nor an event"
            )
        self.opts[opt_id] = ReceivedOpt(
            ven_id=ven_id,
            opt_id=opt_id,
            opt_type=str(payload.get("opt_type")),
            opt_reason=str(payload.get("opt_reason")),
            market_context=_optional_str(payload.get("market_context")),
            targets=_targets(payload.get("targets")),
            intervals=intervals,
            event_id=event_id,
            received_at=self.clock.now(),
        )

    def _cancel(self, ven_id: str, opt_id: str | None) -> None:
        held = self.opts.get(opt_id or "")
        if held is None or held.ven_id != ven_id or held.cancelled_at is not None:
            raise _Refused(INVALID_ID, f"VEN {ven_id} has no opt {opt_id!r} to cancel")
        self.opts[held.opt_id] = replace(held, cancelled_at=self.clock.now())

    def _record(
        self,
        message_type: str,
        ven_id: str | None,
        opt_id: str | None,
        request_id: str | None,
        code: int,
    ) -> None:
        self.exchanges.append(
            OptExchange(message_type, ven_id, opt_id, request_id, code, self.clock.now())
        )

    def _respond(self, message_type: str, **payload: Any) -> web.Response:
        return web.Response(
            text=self._create_message(message_type, **payload),
            status=HTTPStatus.OK,
            content_type="application/xml",
        )


def _response(code: int, description: str, request_id: str | None) -> dict[str, Any]:
    return {"response_code": code, "response_description": description, "request_id": request_id}


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _intervals(vavailability: object) -> tuple[AvailabilityInterval, ...]:
    """The ``available`` components of a parsed ``vavailability`` (one parses as a mapping,
    several as a list)."""
    if not isinstance(vavailability, Mapping):
        return ()
    components = vavailability.get("components")
    available = components.get("available") if isinstance(components, Mapping) else None
    items = available if isinstance(available, list) else [available]
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        start_at, duration = item.get("dtstart"), item.get("duration")
        if isinstance(start_at, datetime) and isinstance(duration, timedelta):
            out.append(AvailabilityInterval(start_at, start_at + duration))
    return tuple(out)


def _targets(targets: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(targets, list):
        return ()
    return tuple(
        (str(kind), str(value))
        for target in targets
        if isinstance(target, Mapping)
        for kind, value in target.items()
        if value is not None
    )
