"""Text for openleadr's message templates, which do not escape what they are given.

openleadr renders its messages with Jinja2 without autoescaping, so an id a VTN chose with
``<``, ``&`` or a quote in it (all allowed in the 2.0b schema's ``xs:string``) went into the
VEN's ``oadrCreatedEvent`` as raw markup: the answer was not well-formed and the VTN's schema
check refused it. Every VTN-chosen text the gateway puts into a message goes through
:func:`escape` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape as _escape_markup

from gateway.ven.distribution import Answer

_QUOTES = {'"': "&quot;", "'": "&apos;"}


def escape(text: str) -> str:
    """``text`` as XML character data or attribute value: ``&``, ``<``, ``>`` and both quotes
    escaped."""
    return _escape_markup(text, _QUOTES)


def created_event_payload(
    answers: Sequence[Answer], request_id: str, ven_id: object
) -> dict[str, Any]:
    """The arguments of openleadr's ``oadrCreatedEvent`` template for ``answers`` to the
    distribution ``request_id`` (conformance rule 42), every text escaped."""
    return {
        "response": {
            "response_code": 200,
            "response_description": "OK",
            "request_id": escape(request_id),
        },
        "event_responses": [
            {
                "response_code": a.response_code,
                "response_description": escape(a.description),
                "request_id": escape(request_id),
                "event_id": escape(a.event_id),
                "modification_number": a.modification_number,
                "opt_type": a.opt,
            }
            for a in answers
        ],
        "ven_id": escape(str(ven_id)),
    }
