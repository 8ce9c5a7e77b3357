"""Text for openleadr's message templates, which do not escape what they are given.

openleadr renders its messages with Jinja2 without autoescaping, so an id a VTN chose with
``<``, ``&`` or a quote in it (all allowed in the 2.0b schema's ``xs:string``) went into the
VEN's messages as raw markup: an ``oadrCreatedEvent`` with such an eventID or requestID, and
every ``oadrPoll`` and report once a VTN had assigned such a venID, were not well-formed and
the VTN's schema check refused them. The VEN's openleadr client
(:class:`gateway.ven.openleadr_client.GatewayClient`) builds every message from
:func:`escaped` arguments (:func:`escaping`), its own messages and the gateway's alike; the
payloads built here stay plain text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape as _escape_markup

from gateway.ven.answers import Answer

_QUOTES = {'"': "&quot;", "'": "&apos;"}


def escape(text: str) -> str:
    """``text`` as XML character data or attribute value: ``&``, ``<``, ``>`` and both quotes
    escaped."""
    return _escape_markup(text, _QUOTES)


def escaped(value: Any) -> Any:
    """``value`` with every string in it escaped (:func:`escape`), through dictionaries, lists
    and tuples; other values (numbers, instants, durations, openleadr's objects) as they are."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, Mapping):
        return {key: escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(escaped(item) for item in value)
    return value


def escaping(render: Callable[..., Any]) -> Callable[..., Any]:
    """openleadr's ``create_message(message_type, **payload)`` (``render``) with every
    argument :func:`escaped`."""

    def create_message(message_type: str, **payload: Any) -> Any:
        return render(message_type, **escaped(payload))

    return create_message


def created_event_payload(
    answers: Sequence[Answer], request_id: str, ven_id: object
) -> dict[str, Any]:
    """The arguments of openleadr's ``oadrCreatedEvent`` template for ``answers`` to the
    distribution ``request_id`` (conformance rule 42), as plain text (render them
    :func:`escaped`)."""
    return {
        "response": {
            "response_code": 200,
            "response_description": "OK",
            "request_id": request_id,
        },
        "event_responses": [
            {
                "response_code": a.response_code,
                "response_description": a.description,
                "request_id": request_id,
                "event_id": a.event_id,
                "modification_number": a.modification_number,
                "opt_type": a.opt,
            }
            for a in answers
        ],
        "ven_id": str(ven_id),
    }
