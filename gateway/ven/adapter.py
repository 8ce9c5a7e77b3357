"""Translate openleadr's event dicts into :class:`gateway.events.DrEvent` records.

openleadr hands the VEN each ``oadrEvent`` as a snake_case dict (``event_descriptor``,
``active_period``, ``event_signals``, ``targets``/``targets_by_type``, ``response_required``)
with aware UTC datetimes and timedeltas. Nothing raw travels past this module.

What this adapter deliberately ignores (``docs/openadr-notes.md``, pitfall 1): each signal's
``current_value`` (the openleadr VTN always sends 0) and each interval's ``dtstart`` (optional
in 2.0b). Intervals are located from ``active_period.dtstart`` plus cumulative durations.

openleadr parses any all-digit text as a number; the VEN's own parse
(:mod:`gateway.ven.parsing`) keeps the ids of a distribution as the text sent ("007" stays
"007"). Ids that still arrive as ints (openleadr's own objects) are turned into strings.

Every field is bounded here (:mod:`gateway.ven.limits`): dates in 2000..2100, durations and
counts limited, text no longer than the column it is stored in, payloads finite. An event
outside them, or one the parse could not read at all (:class:`UnreadableEvent`), raises
:class:`MalformedEventError` naming the field; the distribution answers it 454.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, get_args

from gateway.errors import GatewayError
from gateway.events import DrEvent, EventInterval, EventSignal, EventStatus, EventTarget
from gateway.ven import limits

RAMP_UP_KEYS = ("ramp_up_period", "ramp_up")
"""openleadr's own objects say ``ramp_up_period``; parsed XML (``x-eiRampUp``) says ``ramp_up``."""

_T = TypeVar("_T")

ResponseRequired = Literal["always", "never"]
_STATUSES: dict[str, EventStatus] = {name: name for name in get_args(EventStatus)}
_RESPONSE_REQUIRED: dict[str, ResponseRequired] = {
    name: name for name in get_args(ResponseRequired)
}


class MalformedEventError(GatewayError):
    """An event from a VTN lacks a field or carries a value of the wrong type."""

    def __init__(self, event_id: str | None, path: str, problem: str) -> None:
        where = f"event {_shown(event_id)}" if event_id is not None else "event"
        super().__init__(f"{where}: {path}: {problem}")
        self.event_id = event_id
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class UnreadableEvent:
    """An ``oadrEvent`` of a distribution that could not be turned into a dict at all (a
    date or duration Python cannot represent, a number of thousands of digits, a required
    element missing), with what could be read of its version key."""

    event_id: str | None
    modification_number: int | None
    response_required: str | None
    problem: str


def version_key(raw: object) -> tuple[str, int] | None:
    """(event id, modification number) of a raw event, or None when it has no readable one
    (no answer can then name it)."""
    if isinstance(raw, UnreadableEvent):
        if raw.event_id is None or raw.modification_number is None:
            return None
        return raw.event_id, raw.modification_number
    if not isinstance(raw, Mapping):
        return None
    descriptor = raw.get("event_descriptor")
    if not isinstance(descriptor, Mapping):
        return None
    event_id = descriptor.get("event_id")
    number = descriptor.get("modification_number")
    if (
        isinstance(event_id, bool)
        or not isinstance(event_id, str | int)
        or str(event_id) == ""
        or isinstance(number, bool)
        or not isinstance(number, int)
        or not 0 <= number <= limits.MAX_INTEGER
    ):
        return None
    return str(event_id), number


def response_required(raw: object) -> bool:
    """Whether a raw event asks for an answer (anything but ``never`` does)."""
    if isinstance(raw, UnreadableEvent):
        return raw.response_required != "never"
    return not isinstance(raw, Mapping) or raw.get("response_required", "always") != "never"


def request_id_problem(request_id: str) -> str | None:
    """Why a distribution's requestID cannot be stored with its answers; None when it can."""
    if len(request_id) > limits.MAX_REQUEST_ID_CHARS:
        return (
            f"requestID: {len(request_id)} characters, more than the "
            f"{limits.MAX_REQUEST_ID_CHARS} the VEN stores"
        )
    return None


class _Reader:
    """Field access that names the offending path in its errors."""

    def __init__(self, event_id: str | None = None) -> None:
        self.event_id = event_id

    def fail(self, path: str, problem: str) -> MalformedEventError:
        return MalformedEventError(self.event_id, path, problem)

    def mapping(self, value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        return value

    def field(self, parent: Mapping[str, Any], key: str, path: str) -> Any:
        value = parent.get(key)
        if value is None:
            raise self.fail(f"{path}.{key}" if path else key, "missing")
        return value

    def text(self, value: object, path: str, max_chars: int) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(path, f"expected text, got {_shown(value)}")
        if isinstance(value, int) and value.bit_length() > 4 * max_chars:
            raise self.fail(path, f"a number of more than {max_chars} digits")
        text = str(value)
        if not text:
            raise self.fail(path, "empty")
        if len(text) > max_chars:
            raise self.fail(path, f"{len(text)} characters, more than {max_chars}")
        return text

    def integer(self, value: object, path: str, *, minimum: int = 0) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not minimum <= value <= limits.MAX_INTEGER
        ):
            raise self.fail(
                path,
                f"expected an integer from {minimum} to {limits.MAX_INTEGER}, got {_shown(value)}",
            )
        return value

    def number(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {_shown(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or abs(number) > limits.MAX_ABS_PAYLOAD:
            raise self.fail(
                path,
                f"{_shown(value)} is not a finite number of magnitude at most "
                f"{limits.MAX_ABS_PAYLOAD:g}",
            )
        return number

    def seconds(self, value: object, path: str) -> float:
        if not isinstance(value, timedelta):
            raise self.fail(path, f"expected a duration, got {_shown(value)}")
        if value < timedelta(0):
            raise self.fail(path, f"negative duration {value}")
        if value > timedelta(seconds=limits.MAX_DURATION_S):
            raise self.fail(
                path, f"duration {value} is longer than {limits.MAX_DURATION_S // 86400} days"
            )
        return value.total_seconds()

    def instant(self, value: object, path: str) -> datetime:
        if not isinstance(value, datetime):
            raise self.fail(path, f"expected a datetime, got {_shown(value)}")
        if value.tzinfo is None:
            raise self.fail(path, "naive datetime; expected timezone-aware UTC")
        at = value.astimezone(UTC)
        if not limits.EARLIEST_START_AT <= at <= limits.LATEST_END_AT:
            raise self.fail(path, f"{at.isoformat()} is outside {_RANGE}")
        return at

    def items(self, value: object, path: str, max_items: int) -> list[Any]:
        """A list, accepting a lone item where XML had only one element."""
        if isinstance(value, Mapping):
            return [value]
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            if len(value) > max_items:
                raise self.fail(path, f"{len(value)} items, more than {max_items}")
            return list(value)
        raise self.fail(path, f"expected a list, got {type(value).__name__}")

    def choice(self, value: object, options: Mapping[str, _T], path: str) -> _T:
        if not isinstance(value, str) or value not in options:
            raise self.fail(path, f"expected one of {', '.join(options)}, got {_shown(value)}")
        return options[value]


_RANGE = f"{limits.EARLIEST_START_AT:%Y-%m-%d} .. {limits.LATEST_END_AT:%Y-%m-%d}"


def parse_event(raw: Mapping[str, Any] | UnreadableEvent, vtn_id: str) -> DrEvent:
    """One openleadr event dict as a :class:`DrEvent` of VTN ``vtn_id``.

    Raises :class:`MalformedEventError` naming the field when the dict is incomplete,
    carries a value of the wrong type or one outside :mod:`gateway.ven.limits`, or is an
    :class:`UnreadableEvent`.
    """
    if isinstance(raw, UnreadableEvent):
        raise MalformedEventError(raw.event_id, "(event)", raw.problem)
    reader = _Reader()
    raw = reader.mapping(raw, "(event)")
    descriptor = reader.mapping(reader.field(raw, "event_descriptor", ""), "event_descriptor")
    reader.event_id = reader.text(
        reader.field(descriptor, "event_id", "event_descriptor"),
        "event_descriptor.event_id",
        limits.MAX_EVENT_ID_CHARS,
    )
    period = reader.mapping(reader.field(raw, "active_period", ""), "active_period")
    event = _event(reader, raw, descriptor, period, vtn_id)
    _check_span(reader, event)
    return event


def _check_span(reader: _Reader, event: DrEvent) -> None:
    """The active period plus its randomisation window ends by :data:`limits.LATEST_END_AT`."""
    span_s = event.duration_s + (event.start_after_s or 0.0)
    if event.start_at + timedelta(seconds=span_s) > limits.LATEST_END_AT:
        raise reader.fail("active_period", f"ends after {limits.LATEST_END_AT:%Y-%m-%d}")


def _event(
    reader: _Reader,
    raw: Mapping[str, Any],
    descriptor: Mapping[str, Any],
    period: Mapping[str, Any],
    vtn_id: str,
) -> DrEvent:
    assert reader.event_id is not None  # parse_event read it
    return DrEvent(
        vtn_id=vtn_id,
        event_id=reader.event_id,
        modification_number=reader.integer(
            reader.field(descriptor, "modification_number", "event_descriptor"),
            "event_descriptor.modification_number",
        ),
        status=_status(reader, descriptor),
        market_context=reader.text(
            reader.field(descriptor, "market_context", "event_descriptor"),
            "event_descriptor.market_context",
            limits.MAX_MARKET_CONTEXT_CHARS,
        ),
        start_at=reader.instant(
            reader.field(period, "dtstart", "active_period"), "active_period.dtstart"
        ),
        duration_s=reader.seconds(
            reader.field(period, "duration", "active_period"), "active_period.duration"
        ),
        signals=_signals(reader, raw),
        targets=_targets(reader, raw),
        priority=reader.integer(
            descriptor.get("priority") or 0, "event_descriptor.priority", minimum=0
        ),
        test_event=_test_event(reader, descriptor),
        response_required=_response_required(reader, raw),
        ramp_up_s=_ramp_up_s(reader, period),
        start_after_s=_start_after_s(reader, period),
        created_at=_optional_instant(reader, descriptor, "created_date_time"),
    )


def _status(reader: _Reader, descriptor: Mapping[str, Any]) -> EventStatus:
    return reader.choice(
        reader.field(descriptor, "event_status", "event_descriptor"),
        _STATUSES,
        "event_descriptor.event_status",
    )


def _response_required(reader: _Reader, raw: Mapping[str, Any]) -> ResponseRequired:
    value = raw.get("response_required")
    if value is None:
        return "always"
    return reader.choice(value, _RESPONSE_REQUIRED, "response_required")


def _test_event(reader: _Reader, descriptor: Mapping[str, Any]) -> bool:
    value = descriptor.get("test_event")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise reader.fail("event_descriptor.test_event", f"expected a boolean, got {_shown(value)}")
    return value


def _optional_instant(reader: _Reader, parent: Mapping[str, Any], key: str) -> datetime | None:
    value = parent.get(key)
    if value is None:
        return None
    return reader.instant(value, f"event_descriptor.{key}")


def _ramp_up_s(reader: _Reader, period: Mapping[str, Any]) -> float | None:
    for key in RAMP_UP_KEYS:
        value = period.get(key)
        if value is not None:
            return reader.seconds(value, f"active_period.{key}")
    return None


def _start_after_s(reader: _Reader, period: Mapping[str, Any]) -> float | None:
    """``tolerance.tolerate.startafter`` as parsed from XML, or ``tolerance.startafter`` as
    openleadr's own objects carry it."""
    tolerance = period.get("tolerance")
    if tolerance is None:
        return None
    tolerance = reader.mapping(tolerance, "active_period.tolerance")
    path = "active_period.tolerance"
    if "tolerate" in tolerance:
        tolerance = reader.mapping(tolerance["tolerate"] or {}, f"{path}.tolerate")
        path = f"{path}.tolerate"
    value = tolerance.get("startafter")
    if value is None:
        return None
    return reader.seconds(value, f"{path}.startafter")


def _signals(reader: _Reader, raw: Mapping[str, Any]) -> tuple[EventSignal, ...]:
    container = reader.field(raw, "event_signals", "")
    if isinstance(container, Mapping) and "event_signals" in container:
        container = container["event_signals"]
    signals = reader.items(container, "event_signals", limits.MAX_SIGNALS)
    if not signals:
        raise reader.fail("event_signals", "no signals")
    return tuple(_signal(reader, item, f"event_signals[{i}]") for i, item in enumerate(signals))


def _signal(reader: _Reader, item: object, path: str) -> EventSignal:
    signal = reader.mapping(item, path)
    intervals = reader.items(
        reader.field(signal, "intervals", path), f"{path}.intervals", limits.MAX_INTERVALS
    )
    if not intervals:
        raise reader.fail(f"{path}.intervals", "no intervals")
    return EventSignal(
        signal_id=reader.text(
            reader.field(signal, "signal_id", path),
            f"{path}.signal_id",
            limits.MAX_SIGNAL_ID_CHARS,
        ),
        signal_name=reader.text(
            reader.field(signal, "signal_name", path),
            f"{path}.signal_name",
            limits.MAX_SIGNAL_NAME_CHARS,
        ),
        signal_type=reader.text(
            reader.field(signal, "signal_type", path),
            f"{path}.signal_type",
            limits.MAX_SIGNAL_TYPE_CHARS,
        ),
        intervals=tuple(
            _interval(reader, interval, position, f"{path}.intervals[{position}]")
            for position, interval in enumerate(intervals)
        ),
        units=_units(signal.get("measurement")),
    )


def _interval(reader: _Reader, item: object, position: int, path: str) -> EventInterval:
    interval = reader.mapping(item, path)
    uid = interval.get("uid")
    return EventInterval(
        position=position,
        duration_s=reader.seconds(reader.field(interval, "duration", path), f"{path}.duration"),
        value=reader.number(
            reader.field(interval, "signal_payload", path), f"{path}.signal_payload"
        ),
        uid=None if uid is None else reader.text(uid, f"{path}.uid", limits.MAX_INTERVAL_UID_CHARS),
    )


def _units(measurement: object) -> str | None:
    """``kW`` from ``{unit: W, scale: k}``; None when the signal names no item base (or one
    longer than the column it is stored in, which no unit of the schema is)."""
    if not isinstance(measurement, Mapping):
        return None
    unit = measurement.get("unit")
    if not isinstance(unit, str) or not unit:
        return None
    scale = measurement.get("scale")
    units = f"{scale}{unit}" if isinstance(scale, str) and scale not in ("", "none") else unit
    return units if len(units) <= limits.MAX_UNITS_CHARS else None


def _targets(reader: _Reader, raw: Mapping[str, Any]) -> tuple[EventTarget, ...]:
    """Targets from ``targets`` (a list of one-key dicts) and ``targets_by_type`` (kind to
    list of values), without duplicates, in order of appearance."""
    seen: dict[tuple[str, str], None] = {}
    for kind, value, path in _target_pairs(reader, raw):
        kind = reader.text(kind, f"{path} (its kind)", limits.MAX_TARGET_KIND_CHARS)
        seen.setdefault((kind, reader.text(value, path, limits.MAX_TARGET_VALUE_CHARS)), None)
        if len(seen) > limits.MAX_TARGETS:
            raise reader.fail("targets", f"more than {limits.MAX_TARGETS} targets")
    return tuple(EventTarget(kind=kind, value=value) for kind, value in seen)


def _target_pairs(reader: _Reader, raw: Mapping[str, Any]) -> Iterator[tuple[str, object, str]]:
    targets = raw.get("targets")
    if targets is not None:
        for i, item in enumerate(reader.items(targets, "targets", limits.MAX_TARGETS)):
            for kind, value in reader.mapping(item, f"targets[{i}]").items():
                if value is not None:
                    yield kind, value, f"targets[{i}].{kind}"
    by_type = raw.get("targets_by_type")
    if by_type is not None:
        for kind, values in reader.mapping(by_type, "targets_by_type").items():
            if values is None:
                continue
            listed = (
                [values]
                if isinstance(values, str | int)
                else reader.items(values, kind, limits.MAX_TARGETS)
            )
            for j, value in enumerate(listed):
                yield kind, value, f"targets_by_type.{kind}[{j}]"


def _shown(value: object) -> str:
    """``value`` for an error message: its repr, cut to 80 characters."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"  # repr would be long, or refused
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
