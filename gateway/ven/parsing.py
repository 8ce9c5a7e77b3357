"""A VTN's message, once past the edge (:mod:`gateway.ven.inbound`): validated and read.

Validation is openleadr's: the 2.0b schema (``validate_xml_schema``) and, with a
``vtn_fingerprint``, the XML signature. Reading differs from openleadr's ``parse_message`` in
two ways, both for ``oadrDistributeEvent`` only (the one message the gateway reads itself):

- ids stay text. openleadr turns any all-digit text into a number, so the eventID ``007``
  came back as ``7`` (and the answer named another event), a requestID ``00123`` as ``123``
  (rule 42 broken) and a 60-digit ``xcal:uid`` into an int the store could not hold. Here the
  text of every element named ``...ID``, of ``marketContext``, of an interval's ``uid`` and of
  everything inside ``eiTarget`` is kept as sent (2.0b: all ``xs:string``);
- one event that openleadr's conversion cannot read (a duration or date Python cannot
  represent, a number of thousands of digits, ``oadrResponseRequired`` missing) no longer
  drops the whole message: it becomes an :class:`~gateway.ven.adapter.UnreadableEvent` with
  what can be read of its id and modification number, answered 454, and the other events of
  the distribution are read as usual.

Both functions are CPU work on a message of up to ``max_message_size_bytes``: callers run
them in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import xmltodict
from openleadr import errors
from openleadr import utils as openleadr_utils
from openleadr.messaging import NAMESPACES, validate_xml_schema
from openleadr.messaging import _verify_replay_protect as verify_replay_protect
from openleadr.messaging import parse_message as openleadr_parse_message
from signxml.verifier import XMLVerifier

from gateway.ven.adapter import UnreadableEvent

DISTRIBUTION = "oadrDistributeEvent"
_KEPT_NAMES = frozenset({"marketContext"})
_TARGET = "eiTarget"


class _Kept:
    """A text openleadr's conversion must leave alone (it passes any non-string through)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def validate(content: bytes, vtn_fingerprint: str | None) -> None:
    """openleadr's checks of a received message: the 2.0b schema, then (with a fingerprint)
    the signature. Raises what openleadr raises (``XMLSyntaxError``, ``FingerprintMismatch``,
    ``InvalidSignature``, ...). Only for bytes the edge let through."""
    tree = validate_xml_schema(content)
    if vtn_fingerprint:
        _validate_signature(tree, vtn_fingerprint)


_THREAD = threading.local()


def _validate_signature(tree: Any, vtn_fingerprint: str) -> None:
    """openleadr's ``validate_xml_signature`` (the certificate's fingerprint, the XML
    signature, the ReplayProtect element) with a verifier of this thread's own. openleadr's
    one module-level ``XMLVerifier`` keeps the verification in progress on itself (the
    certificate, the configuration, the parser), so two threads verifying at once (each VTN's
    messages are read in a thread of their own) now and then failed each other's signatures
    (``test_signed_mutual_tls_availability_schedule_and_cancel``, 1 run in 4)."""
    cert = openleadr_utils.extract_pem_cert(tree)
    fingerprint = openleadr_utils.certificate_fingerprint(cert)
    if fingerprint != vtn_fingerprint:
        raise errors.FingerprintMismatch(
            "The certificate fingerprint was incorrect. "
            f"Expected: {vtn_fingerprint}; Received: {fingerprint}. Ignoring message."
        )
    verifier = getattr(_THREAD, "verifier", None)
    if verifier is None:
        verifier = _THREAD.verifier = XMLVerifier()
    verifier.verify(tree, x509_cert=openleadr_utils.ensure_bytes(cert), expect_references=2)
    verify_replay_protect(tree)


def parse_message(content: bytes) -> tuple[str, dict[str, Any]]:
    """The message type and its payload as openleadr's snake_case dict; a distribution with
    its ids as text and each event read on its own (see the module notes)."""
    document = xmltodict.parse(
        content, process_namespaces=True, namespaces=NAMESPACES, postprocessor=_keep_ids
    )
    signed = document["oadrPayload"]["oadrSignedObject"]
    message_type = next(key for key in reversed(signed) if not key.startswith("@"))
    if message_type != DISTRIBUTION:
        parsed_type, parsed = openleadr_parse_message(content)
        return str(parsed_type), parsed
    body = signed[message_type]
    raw_events = body.pop("oadrEvent", None) if isinstance(body, dict) else None
    payload = _plain(openleadr_utils.normalize_dict(body or {}))
    if raw_events is not None:
        listed = raw_events if isinstance(raw_events, list) else [raw_events]
        payload["events"] = [_event(raw) for raw in listed]
    return message_type, payload


def _keep_ids(path: list[tuple[str, Any]], key: str, value: Any) -> tuple[str, Any]:
    """xmltodict's postprocessor: wrap the id texts of a distribution in :class:`_Kept`
    (``path`` holds the ancestors of the element ``key``)."""
    names = [name for name, _attributes in path]
    if DISTRIBUTION not in names:
        return key, value
    if key == "uid" and isinstance(value, dict) and set(value) == {"text"}:
        # openleadr would int() it; 2.0b's uid is text
        text = value["text"]
        return key, text if isinstance(text, _Kept) else _Kept(str(text or ""))
    if not isinstance(value, str):
        return key, value
    if key.endswith("ID") or key in _KEPT_NAMES or _TARGET in names or key == "text":
        return key, _Kept(value)
    return key, value


def _event(raw: Any) -> dict[str, Any] | UnreadableEvent:
    """One ``oadrEvent`` as openleadr's event dict, or what can be read of it."""
    try:
        events = openleadr_utils.normalize_dict({"oadrEvent": raw})["events"]
        event = events[0]
        if not isinstance(event, dict):
            raise TypeError(f"an event read as {type(event).__name__}")
        plain: dict[str, Any] = _plain(event)
        return plain
    except Exception as exc:  # openleadr's conversion raises what it meets; one event only
        return _unreadable(raw, f"cannot be read: {type(exc).__name__}: {exc}")


def _unreadable(raw: Any, problem: str) -> UnreadableEvent:
    event = _get(raw, "eiEvent")
    descriptor = _get(event, "eventDescriptor")
    event_id = _text(_get(descriptor, "eventID"))
    number_text = _text(_get(descriptor, "modificationNumber"))
    number = (
        int(number_text)
        if number_text is not None
        and number_text.isascii()
        and number_text.isdigit()
        and len(number_text) <= 10
        else None
    )
    return UnreadableEvent(
        event_id=event_id or None,
        modification_number=number,
        response_required=_text(_get(raw, "oadrResponseRequired")),
        problem=problem[:300],
    )


def _get(parent: Any, key: str) -> Any:
    return parent.get(key) if isinstance(parent, Mapping) else None


def _text(value: Any) -> str | None:
    if isinstance(value, _Kept):
        return value.text
    return value if isinstance(value, str) else None


def _plain(value: Any) -> Any:
    """``value`` with every :class:`_Kept` turned back into its text."""
    if isinstance(value, _Kept):
        return value.text
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
