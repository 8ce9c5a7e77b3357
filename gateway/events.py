"""Typed demand-response events: what the VEN adapter produces and the planner reads.

Nothing from openleadr travels past ``gateway/ven/adapter.py``; everything after it uses
these frozen records. Times are aware UTC; durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Opt = Literal["optIn", "optOut"]
EventStatus = Literal["none", "far", "near", "active", "completed", "cancelled"]


@dataclass(frozen=True)
class EventInterval:
    position: int
    """Order within the signal, from 0."""
    duration_s: float
    value: float
    uid: int | None = None


@dataclass(frozen=True)
class EventSignal:
    signal_id: str
    signal_name: str
    """SIMPLE, LOAD_DISPATCH, ELECTRICITY_PRICE, LOAD_CONTROL, ... or x-..."""
    signal_type: str
    """level, delta, setpoint, price, x-loadControlCapacity, ..."""
    intervals: tuple[EventInterval, ...]
    units: str | None = None


@dataclass(frozen=True)
class EventTarget:
    kind: str
    """resource_id, ven_id, group_id, party_id, end_device_asset, ..."""
    value: str


@dataclass(frozen=True)
class DrEvent:
    """One version (event id, modification number) of an event from one VTN."""

    vtn_id: str
    event_id: str
    modification_number: int
    status: EventStatus
    market_context: str
    start_at: datetime
    duration_s: float
    """0 means open-ended."""
    signals: tuple[EventSignal, ...]
    targets: tuple[EventTarget, ...] = ()
    priority: int = 0
    test_event: bool = False
    response_required: Literal["always", "never"] = "always"
    ramp_up_s: float | None = None
    start_after_s: float | None = None
    created_at: datetime | None = None

    @property
    def end_at(self) -> datetime | None:
        """End of the active period; None when open-ended."""
        if self.duration_s <= 0:
            return None
        return self.start_at + timedelta(seconds=self.duration_s)

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def is_active_at(self, at: datetime) -> bool:
        if self.cancelled or at < self.start_at:
            return False
        end = self.end_at
        return end is None or at < end

    def interval_at(self, signal: EventSignal, at: datetime) -> EventInterval | None:
        """The interval of ``signal`` in force at ``at``, located from the event's start plus
        cumulative durations (never from per-interval dtstart or current_value)."""
        if not self.is_active_at(at):
            return None
        offset_s = (at - self.start_at).total_seconds()
        elapsed_s = 0.0
        for interval in signal.intervals:
            if interval.duration_s <= 0 or offset_s < elapsed_s + interval.duration_s:
                return interval
            elapsed_s += interval.duration_s
        return None

    def targets_resource(self, resource_id: str, ven_id: str | None) -> bool:
        """True when this event addresses ``resource_id`` or the whole VEN.

        Resource targets name sites; a VEN target (or no target at all) addresses every
        site behind the VEN.
        """
        resource_targets = [t.value for t in self.targets if t.kind == "resource_id"]
        if resource_targets:
            return resource_id in resource_targets
        return True


@dataclass(frozen=True)
class OptDecision:
    """The planner's answer to an event, with the reason stored beside it."""

    opt: Opt
    reason: str
    response_code: int = 200


@dataclass(frozen=True)
class StoredResponse:
    event_id: str
    modification_number: int
    opt: Opt
    reason: str
    responded_at: datetime
    extra: dict[str, str] = field(default_factory=dict)
