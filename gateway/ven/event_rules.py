"""The event rules of OpenADR 2.0b that the VEN applies itself (``docs/openadr-notes.md``).

Pure functions: versions, times and events in, verdicts out; no I/O, no clock, no logging.
``docs/conformance.md`` lists each rule with the test that checks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from gateway.events import DrEvent, shifted

OK = 200
OUT_OF_SEQUENCE = 450
"""A version older than one already received (also when the newer one is a cancellation)."""
INVALID_DATA = 454
"""An event the VEN cannot read (a field missing or of the wrong type) or one with a field
outside the bounds of :mod:`gateway.ven.limits` (a date outside 2000..2100, too long a
duration, too many intervals, too long an id)."""
COMPLIANCE_ERROR = 459
"""An event that breaks a conformance rule of 2.0b (openleadr's ``STATUS_CODES``: 459 is the
compliance error, the code its own VTN answers a message that breaks the specification with);
here rule 8, intervals that do not fill the active period."""
SIGNAL_NOT_SUPPORTED = 460
"""A signal name (or name and type) the programme's signal mapping does not know."""

Verdict = Literal["new", "modified", "same", "stale"]

_DURATION_TOLERANCE_S = 1e-3
"""Durations travel in whole (or decimal) seconds; sums closer than this are equal [s]."""


def classify(modification_number: int, latest_known: int | None) -> Verdict:
    """What a received version is to the VEN that knows ``latest_known`` of the same event.

    Higher replaces, equal is no change, lower is out of sequence (answered 450), whatever
    the status of the newer version (a cancelled event included).
    """
    if latest_known is None:
        return "new"
    if modification_number > latest_known:
        return "modified"
    if modification_number == latest_known:
        return "same"
    return "stale"


def interval_mismatches(event: DrEvent) -> list[str]:
    """Conformance rule 8: each signal's interval durations add up to the active period's
    duration. The signals that break it, each with its sum; empty when the event keeps it.

    An open-ended event (duration 0) is not checked, and a signal whose last interval has
    duration 0 (it lasts until the event ends) only needs its other intervals to fit.
    """
    if event.duration_s <= 0:
        return []
    problems = []
    for signal in event.signals:
        durations_s = [interval.duration_s for interval in signal.intervals]
        total_s = sum(durations_s)
        open_last = bool(durations_s) and durations_s[-1] <= 0
        fits = (
            total_s <= event.duration_s + _DURATION_TOLERANCE_S
            if open_last
            else abs(total_s - event.duration_s) <= _DURATION_TOLERANCE_S
        )
        if not fits:
            problems.append(
                f"signal {signal.signal_id}: intervals add up to {total_s:g} s, "
                f"the active period lasts {event.duration_s:g} s"
            )
    return problems


def raised_before(previous: DrEvent, event: DrEvent, now: datetime) -> list[str]:
    """The intervals of ``event`` that started before ``now`` and ask more than the same
    interval of ``previous`` (a larger magnitude, or an interval it did not have): a
    modification that raises what is already past cannot be delivered any more. Empty when
    it raises nothing already started."""
    before = {(s.signal_name, s.signal_type): s for s in previous.signals}
    found = []
    for signal in event.signals:
        old = before.get((signal.signal_name, signal.signal_type))
        old_values = {} if old is None else {i.position: i.value for i in old.intervals}
        start_at = event.effective_start_at
        for interval in signal.intervals:
            if start_at >= now:
                break
            was = old_values.get(interval.position)
            if was is None or abs(interval.value) > abs(was) + 1e-9:
                found.append(
                    f"{signal.signal_name} interval {interval.position} (from "
                    f"{start_at:%H:%M} UTC): {'none' if was is None else f'{was:g}'} -> "
                    f"{interval.value:g}"
                )
            if interval.duration_s <= 0:
                break
            start_at = shifted(start_at, interval.duration_s)
    return found


def random_delay_s(window_s: float | None, *key: object) -> float:
    """A delay drawn uniformly from [0, ``window_s``) for ``tolerance.startafter`` [s].

    Drawn from a hash of ``key`` (the VEN, the event and the version), so that each VEN gets
    its own delay and the same VEN always the same one for the same version.
    """
    if window_s is None or window_s <= 0:
        return 0.0
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2.0**64
    return fraction * window_s


def implied_cancellations(
    known: Iterable[DrEvent], distributed_event_ids: set[str], at: datetime
) -> list[DrEvent]:
    """Known events that a full distribution left out: cancelled by implication.

    known: the newest stored version of every event of the distributing VTN
    distributed_event_ids: the event ids the distribution carried
    at: when the distribution arrived [aware UTC]

    Events already cancelled (sent or implied) and events already over are left alone.
    """
    return [
        event
        for event in known
        if event.event_id not in distributed_event_ids
        and not event.cancelled
        and not event.is_over_at(at)
    ]
