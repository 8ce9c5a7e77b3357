"""Translate openleadr's event dicts into :class:`gateway.events.DrEvent` records.

openleadr hands the VEN each ``oadrEvent`` as a snake_case dict (``event_descriptor``,
``active_period``, ``event_signals``, ``targets``/``targets_by_type``, ``response_required``)
with aware UTC datetimes and timedeltas. Nothing raw travels past this module.

What this adapter deliberately ignores (``docs/openadr-notes.md``, pitfall 1): each signal's
``current_value`` (the openleadr VTN always sends 0) and each interval's ``dtstart`` (optional
in 2.0b). Intervals are located from ``active_period.dtstart`` plus cumulative durations.

openleadr parses any all-digit text as a number, so ids (event, signal, targets) may arrive
as ints: they are turned back into strings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, get_args

from gateway.errors import GatewayError
from gateway.events import DrEvent, EventInterval, EventSignal, EventStatus, EventTarget

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
        where = f"event {event_id!r}" if event_id is not None else "event"
        super().__init__(f"{where}: {path}: {problem}")
        self.event_id = event_id
        self.path = path
        self.problem = problem


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

    def text(self, value: object, path: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(path, f"expected text, got {value!r}")
        text = str(value)
        if not text:
            raise self.fail(path, "empty")
        return text

    def integer(self, value: object, path: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {value!r}")
        return float(value)

    def seconds(self, value: object, path: str) -> float:
        if not isinstance(value, timedelta):
            raise self.fail(path, f"expected a duration, got {value!r}")
        if value < timedelta(0):
            raise self.fail(path, f"negative duration {value}")
        return value.total_seconds()

    def instant(self, value: object, path: str) -> datetime:
        if not isinstance(value, datetime):
            raise self.fail(path, f"expected a datetime, got {value!r}")
        if value.tzinfo is None:
            raise self.fail(path, "naive datetime; expected timezone-aware UTC")
        return value.astimezone(UTC)

    def items(self, value: object, path: str) -> list[Any]:
        """A list, accepting a lone item where XML had only one element."""
        if isinstance(value, Mapping):
            return [value]
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return list(value)
        raise self.fail(path, f"expected a list, got {type(value).__name__}")

    def choice(self, value: object, options: Mapping[str, _T], path: str) -> _T:
        if not isinstance(value, str) or value not in options:
            raise self.fail(path, f"expected one of {', '.join(options)}, got {value!r}")
        return options[value]


def parse_event(raw: Mapping[str, Any], vtn_id: str) -> DrEvent:
    """One openleadr event dict as a :class:`DrEvent` of VTN ``vtn_id``.

    Raises :class:`MalformedEventError` naming the field when the dict is incomplete or
    carries a value of the wrong type.
    """
    reader = _Reader()
    raw = reader.mapping(raw, "(event)")
    descriptor = reader.mapping(reader.field(raw, "event_descriptor", ""), "event_descriptor")
    reader.event_id = reader.text(
        reader.field(descriptor, "event_id", "event_descriptor"), "event_descriptor.event_id"
    )
    period = reader.mapping(reader.field(raw, "active_period", ""), "active_period")

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
        raise reader.fail("event_descriptor.test_event", f"expected a boolean, got {value!r}")
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
    signals = reader.items(container, "event_signals")
    if not signals:
        raise reader.fail("event_signals", "no signals")
    return tuple(_signal(reader, item, f"event_signals[{i}]") for i, item in enumerate(signals))


def _signal(reader: _Reader, item: object, path: str) -> EventSignal:
    signal = reader.mapping(item, path)
    intervals = reader.items(reader.field(signal, "intervals", path), f"{path}.intervals")
    if not intervals:
        raise reader.fail(f"{path}.intervals", "no intervals")
    return EventSignal(
        signal_id=reader.text(reader.field(signal, "signal_id", path), f"{path}.signal_id"),
        signal_name=reader.text(reader.field(signal, "signal_name", path), f"{path}.signal_name"),
        signal_type=reader.text(reader.field(signal, "signal_type", path), f"{path}.signal_type"),
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
        uid=None if uid is None else reader.integer(uid, f"{path}.uid"),
    )


def _units(measurement: object) -> str | None:
    """``kW`` from ``{unit: W, scale: k}``; None when the signal names no item base."""
    if not isinstance(measurement, Mapping):
        return None
    unit = measurement.get("unit")
    if not isinstance(unit, str) or not unit:
        return None
    scale = measurement.get("scale")
    if isinstance(scale, str) and scale not in ("", "none"):
        return f"{scale}{unit}"
    return unit


def _targets(reader: _Reader, raw: Mapping[str, Any]) -> tuple[EventTarget, ...]:
    """Targets from ``targets`` (a list of one-key dicts) and ``targets_by_type`` (kind to
    list of values), without duplicates, in order of appearance."""
    seen: dict[tuple[str, str], None] = {}
    for kind, value, path in _target_pairs(reader, raw):
        seen.setdefault((kind, reader.text(value, path)), None)
    return tuple(EventTarget(kind=kind, value=value) for kind, value in seen)


def _target_pairs(reader: _Reader, raw: Mapping[str, Any]) -> Iterator[tuple[str, object, str]]:
    targets = raw.get("targets")
    if targets is not None:
        for i, item in enumerate(reader.items(targets, "targets")):
            for kind, value in reader.mapping(item, f"targets[{i}]").items():
                if value is not None:
                    yield kind, value, f"targets[{i}].{kind}"
    by_type = raw.get("targets_by_type")
    if by_type is not None:
        for kind, values in reader.mapping(by_type, "targets_by_type").items():
            if values is None:
                continue
            listed = [values] if isinstance(values, str | int) else reader.items(values, kind)
            for j, value in enumerate(listed):
                yield kind, value, f"targets_by_type.{kind}[{j}]"
