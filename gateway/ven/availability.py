"""Availability schedules (EiOpt) for one openleadr client: build, send, read the answer.

A VEN tells its VTN when a resource cannot take part in events with an ``oadrCreateOpt``
carrying an availability schedule (``xcal:vavailability``) and withdraws it with an
``oadrCancelOpt``. openleadr 0.5.36 has ``create_opt`` and ``cancel_opt``, but (measured,
``docs/openadr-notes.md`` pitfall 10):

- ``create_opt`` and ``cancel_opt`` log with ``logger.info(response_type, payload)``, which
  fails inside logging ("--- Logging error ---" on stderr) whenever openleadr logs at INFO;
- they take any answer holding an ``opt_id`` as an acknowledgement, whatever its response
  code and request id, and answer ``False`` for every failure alike;
- an empty HTTP body makes ``_perform_request`` return ``None``, which they unpack: TypeError;
- ``cancel_opt`` only cancels opts created by the same client object (they are kept in
  memory): after a restart or a rebuilt client it refuses, and it sends no requestID;
- ``create_opt`` takes only the eight enumerated opt reasons (the schema also allows ``x-``
  extensions) and makes a new optID unless given one;
- the openleadr VTN has no EiOpt endpoint: HTTP 404 (``simulators/eiopt.py`` adds one).

So the messages are built here with the client's ``_create_message`` (signed with the
client's certificate when it has one) and sent with its ``_perform_request`` (schema and
signature checks of the answer, the client's TLS session and hooks), with an optID fixed by
the caller (the same opt on every resend) and a fresh requestID per attempt; the answer must
be the matching message type, for our requestID and optID.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from openleadr import objects

from gateway.errors import GatewayError
from gateway.events import Opt

SERVICE = "EiOpt"
SCHEDULE_OPT_REASON = "x-schedule"
"""The enumerated 2.0b opt reason of an availability schedule (``ei:OptReasonEnumeratedType``).
The operator's own words ("maintenance") stay in our store: the opt has no free-text field."""
ACKNOWLEDGED = 200
NOT_REGISTERED_OR_AUTHORIZED = 463
"""The one refusal worth sending again: the VTN does not know us (yet); once the connection
has registered again it may accept the opt."""


class OptNotAnswered(GatewayError):
    """The VTN did not answer an opt message (unreachable, HTTP error such as 404 for a VTN
    without EiOpt, an answer that fails the schema or signature check, or a wrong answer).
    Transient: send it again later."""


@dataclass(frozen=True)
class AvailabilitySchedule:
    """One availability schedule: ``opt_type`` for ``resource_id`` over ``[start_at, end_at)``.

    opt_id: fixed by the caller, so that a resend is the same opt
    start_at, end_at: aware UTC, whole seconds (durations travel in whole seconds)
    market_context: the programme the opt is about; None for every programme
    """

    opt_id: str
    resource_id: str
    start_at: datetime
    end_at: datetime
    opt_type: Opt = "optOut"
    market_context: str | None = None

    def __post_init__(self) -> None:
        for name in ("start_at", "end_at"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.microsecond:
                raise ValueError(f"{name} must be aware UTC in whole seconds, got {value!r}")
        if self.end_at <= self.start_at:
            raise ValueError(f"end_at {self.end_at} is not after start_at {self.start_at}")
        if not self.opt_id or not self.resource_id:
            raise ValueError("opt_id and resource_id must not be empty")

    @property
    def duration(self) -> timedelta:
        return self.end_at - self.start_at


@dataclass(frozen=True)
class AvailabilityCancel:
    """Withdraw the availability schedule ``opt_id`` (an ``oadrCancelOpt``)."""

    opt_id: str


OptRequest = AvailabilitySchedule | AvailabilityCancel


@dataclass(frozen=True)
class OptAnswer:
    """The VTN's answer to an opt message: its response code and description."""

    response_code: int
    description: str

    @property
    def acknowledged(self) -> bool:
        return self.response_code == ACKNOWLEDGED

    @property
    def final(self) -> bool:
        """False for an answer that a later attempt may change (463: not registered)."""
        return self.response_code != NOT_REGISTERED_OR_AUTHORIZED


def create_opt_payload(
    ven_id: str, schedule: AvailabilitySchedule, request_id: str, created_at: datetime
) -> dict[str, Any]:
    """The keyword arguments of openleadr's ``oadrCreateOpt`` template."""
    return {
        "request_id": request_id,
        "ven_id": ven_id,
        "opt_id": schedule.opt_id,
        "opt_type": schedule.opt_type,
        "opt_reason": SCHEDULE_OPT_REASON,
        "market_context": schedule.market_context,
        "created_date_time": created_at,
        "vavailability": objects.Vavailability(
            components=[
                objects.VavailabilityComponent(
                    dtstart=schedule.start_at, duration=schedule.duration
                )
            ]
        ),
        "targets": [{"resource_id": schedule.resource_id}],
    }


def cancel_opt_payload(ven_id: str, cancel: AvailabilityCancel, request_id: str) -> dict[str, Any]:
    """The keyword arguments of openleadr's ``oadrCancelOpt`` template."""
    return {"request_id": request_id, "ven_id": ven_id, "opt_id": cancel.opt_id}


async def send(client: Any, ven_id: str, request: OptRequest, now: datetime) -> OptAnswer:
    """Send ``request`` with the registered openleadr ``client`` as VEN ``ven_id``.

    Returns the VTN's answer (acknowledged or refused with a code); raises
    :class:`OptNotAnswered` when there is none.
    """
    request_id = f"REQ-{uuid.uuid4().hex}"  # not all digits: openleadr would make it an int
    if isinstance(request, AvailabilitySchedule):
        message_type, expected = "oadrCreateOpt", "oadrCreatedOpt"
        payload = create_opt_payload(ven_id, request, request_id, now)
    else:
        message_type, expected = "oadrCancelOpt", "oadrCanceledOpt"
        payload = cancel_opt_payload(ven_id, request, request_id)
    message = client._create_message(message_type, **payload)
    result = await client._perform_request(SERVICE, message)
    if not isinstance(result, tuple) or len(result) != 2 or result[0] is None:
        raise OptNotAnswered(
            f"no answer to {message_type} {request.opt_id}: the VTN could not be reached, "
            "answered with an HTTP error (404: it has no EiOpt endpoint) or an answer that "
            "failed the schema or signature check (openleadr logged which)"
        )
    return read_answer(expected, request_id, request.opt_id, str(result[0]), result[1])


def read_answer(
    expected: str, request_id: str, opt_id: str, message_type: str, payload: object
) -> OptAnswer:
    """The answer in a parsed response; :class:`OptNotAnswered` when it is not one to us.

    ``oadrCreatedOpt`` / ``oadrCanceledOpt`` must carry our requestID and optID; an
    ``oadrResponse`` (how openleadr VTNs report errors) counts when it carries our requestID
    or none; ``oadrRequestReregistration`` means the VTN no longer knows us.
    """
    if message_type == "oadrRequestReregistration":
        raise OptNotAnswered(f"the VTN asks us to register again instead of answering {opt_id}")
    if message_type not in (expected, "oadrResponse"):
        raise OptNotAnswered(f"the VTN answered {message_type}, not {expected}, to {opt_id}")
    if not isinstance(payload, Mapping):
        raise OptNotAnswered(f"the VTN's {message_type} to {opt_id} has no content")
    response = payload.get("response")
    if not isinstance(response, Mapping):
        raise OptNotAnswered(f"the VTN's {message_type} to {opt_id} has no eiResponse")
    answered_request = response.get("request_id")
    # An oadrResponse may leave the requestID out; any other answer must name ours.
    must_match = message_type == expected or answered_request is not None
    if must_match and str(answered_request) != request_id:
        raise OptNotAnswered(
            f"the VTN's {message_type} answers request {answered_request!r}, "
            f"not ours ({request_id}) for {opt_id}"
        )
    if message_type == expected and str(payload.get("opt_id")) != opt_id:
        raise OptNotAnswered(
            f"the VTN's {message_type} is about opt {payload.get('opt_id')!r}, not {opt_id}"
        )
    code = response.get("response_code")
    try:
        response_code = int(code)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise OptNotAnswered(
            f"the VTN's {message_type} to {opt_id} has response code {code!r}"
        ) from exc
    return OptAnswer(response_code, str(response.get("response_description") or ""))
