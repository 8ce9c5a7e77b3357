"""Hostile answers of a VTN, built around a valid ``oadrDistributeEvent``: the forms the VEN's
edge (``gateway/ven/inbound.py``) must refuse before any XML parser sees them.

Each form is a function of the event id the distribution would carry and its start; the
entity forms put their entity where the eventID goes (``<ei:eventID>&a;</ei:eventID>``), as the
crash found in issue 12 did. Only the edge may read these bytes: libxml2 2.14 under lxml 6.2
crashes the process on the entity forms when a schema is attached to the parser.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from simulators.scripted_vtn import event_dict, render_distribution

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
OVERSIZE_CAP_BYTES = 65_536
"""The ``max_message_size_bytes`` the tests give the VEN (the smallest the settings allow)."""


def distribution(event_id: str, start_at: datetime, request_id: str = "REQ-HOSTILE") -> str:
    """A valid distribution of one hour-long event (openleadr's templates)."""
    return render_distribution(
        {
            "events": [event_dict(event_id, start_at=start_at)],
            "request_id": request_id,
            "vtn_id": "SCRIPTED-VTN",
        }
    )


def _with_dtd(xml: str, dtd: str, event_id: str, reference: str | None) -> str:
    assert xml.startswith(XML_DECLARATION)
    body = xml[len(XML_DECLARATION) :]
    if reference is not None:
        element = f"<ei:eventID>{event_id}</ei:eventID>"
        assert body.count(element) == 1
        body = body.replace(element, f"<ei:eventID>{reference}</ei:eventID>")
    return f"{XML_DECLARATION}\n{dtd}{body}"


def internal_entity(event_id: str, start_at: datetime) -> str:
    dtd = f'<!DOCTYPE oadrPayload [<!ENTITY a "{event_id}">]>'
    return _with_dtd(distribution(event_id, start_at), dtd, event_id, "&a;")


def external_entity(event_id: str, start_at: datetime) -> str:
    dtd = '<!DOCTYPE oadrPayload [<!ENTITY a SYSTEM "file:///etc/passwd">]>'
    return _with_dtd(distribution(event_id, start_at), dtd, event_id, "&a;")


def billion_laughs(event_id: str, start_at: datetime) -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    dtd = f"<!DOCTYPE oadrPayload [{''.join(entities)}]>"
    return _with_dtd(distribution(event_id, start_at), dtd, event_id, "&lol9;")


def doctype_alone(event_id: str, start_at: datetime) -> str:
    return _with_dtd(distribution(event_id, start_at), "<!DOCTYPE oadrPayload>", event_id, None)


def parameter_entity(event_id: str, start_at: datetime) -> str:
    dtd = '<!DOCTYPE oadrPayload [<!ENTITY % p "x"> %p;]>'
    return _with_dtd(distribution(event_id, start_at), dtd, event_id, None)


def undeclared_entity(event_id: str, start_at: datetime) -> str:
    """An entity reference without any DTD."""
    return _with_dtd(distribution(event_id, start_at), "", event_id, "&a;")


def oversize(event_id: str, start_at: datetime) -> str:
    """A valid distribution made longer than :data:`OVERSIZE_CAP_BYTES` by a comment."""
    xml = distribution(event_id, start_at)
    return xml + "<!--" + "x" * OVERSIZE_CAP_BYTES + "-->"


def empty(event_id: str, start_at: datetime) -> str:
    return ""


FORMS: dict[str, tuple[Callable[[str, datetime], str], str]] = {
    "internal_entity": (internal_entity, "entity"),
    "external_entity": (external_entity, "entity"),
    "billion_laughs": (billion_laughs, "entity"),
    "doctype_alone": (doctype_alone, "dtd"),
    "parameter_entity": (parameter_entity, "entity"),
    "undeclared_entity": (undeclared_entity, "entity"),
    "oversize": (oversize, "oversize"),
    "empty": (empty, "empty"),
}
"""Each form's builder and the refusal reason the edge gives it."""
