"""Typed demand-response events: what the VEN adapter produces and the planner reads.

Nothing from openleadr travels past ``gateway/ven/adapter.py``; everything after it uses
these frozen records. Times are aware UTC; durations are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

Opt = Literal["optIn", "optOut"]
EventStatus = Literal["none", "far", "near", "active", "completed", "cancelled"]

EARLIEST_AT = datetime(1000, 1, 1, tzinfo=UTC)
LATEST_AT = datetime(9000, 1, 1, tzinfo=UTC)
"""The instants :func:`shifted` clamps to. The VEN stores no event outside 2000..2100
(:mod:`gateway.ven.limits`); these bounds only keep arithmetic on a row stored before that
check (a dtstart of 9999-12-31 once made every later distribution raise ``OverflowError``)
from raising, with centuries of room for any further offset a caller adds."""


def shifted(at: datetime, seconds: float) -> datetime:
    """``at`` plus ``seconds``, clamped to [:data:`EARLIEST_AT`, :data:`LATEST_AT`]; never
    raises (a non-finite ``seconds`` counts as 0 when NaN, as the bound it points to when
    infinite)."""
    if math.isnan(seconds):
        seconds = 0.0
    try:
        moved = at + timedelta(seconds=seconds)
    except OverflowError:
        return LATEST_AT if seconds > 0 else EARLIEST_AT
    return min(max(moved, EARLIEST_AT), LATEST_AT)


@dataclass(frozen=True)
class EventInterval:
    position: int
    """Order within the signal, from 0."""
    duration_s: float
    value: float
    uid: str | None = None
    """The interval's ``xcal:uid`` text as the VTN sent it (a string in the 2.0b schema)."""


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
    """One version (event id, modification number) of an event from one VTN.

    The first fields are what the VTN sent; the last four are what this VEN made of it
    (``gateway/ven/event_rules.py``): the VEN id it was distributed to, the random delay applied to
    the start within ``start_after_s``, and when a cancellation (sent, or implied by a
    distribution that left the event out) takes effect here.
    """

    vtn_id: str
    event_id: str
    modification_number: int
    status: EventStatus
    market_context: str
    start_at: datetime
    """The active period's dtstart as the VTN sent it."""
    duration_s: float
    """0 means open-ended."""
    signals: tuple[EventSignal, ...]
    targets: tuple[EventTarget, ...] = ()
    priority: int = 0
    """Lower numbers win over higher ones; 0 is the lowest priority of all."""
    test_event: bool = False
    response_required: Literal["always", "never"] = "always"
    ramp_up_s: float | None = None
    start_after_s: float | None = None
    created_at: datetime | None = None
    ven_id: str | None = None
    start_offset_s: float = 0.0
    """Random delay of the start within ``start_after_s``, drawn once per version [s]."""
    cancel_effective_at: datetime | None = None
    """When a cancellation stops this VEN acting on the event; None while not cancelled."""
    implied_cancel_at: datetime | None = None
    """When a distribution without this event implied its cancellation."""

    @property
    def effective_start_at(self) -> datetime:
        """The start this VEN acts on: dtstart plus the randomisation offset (clamped,
        :func:`shifted`)."""
        return shifted(self.start_at, self.start_offset_s)

    @property
    def end_at(self) -> datetime | None:
        """End of the active period as this VEN acts on it; None when open-ended."""
        if self.duration_s <= 0:
            return None
        return shifted(self.effective_start_at, self.duration_s)

    @property
    def cancelled(self) -> bool:
        """Cancelled by the VTN, or implied cancelled by a distribution without it."""
        return self.status == "cancelled" or self.implied_cancel_at is not None

    def is_active_at(self, at: datetime) -> bool:
        """In force at ``at``: started (randomised start), not ended, and not cancelled or
        cancelled with an effect still to come."""
        if at < self.effective_start_at:
            return False
        until = self.acts_until
        return until is None or at < until

    @property
    def acts_until(self) -> datetime | None:
        """When this VEN stops acting on the event: the end of the active period, or the
        moment a cancellation (sent or implied) takes effect if that comes first; None when
        open-ended and not cancelled. The event is in force from :attr:`effective_start_at`
        up to this instant, excluded (a cancellation without an instant: never)."""
        end = self.end_at
        if not self.cancelled:
            return end
        if self.cancel_effective_at is None:
            return self.effective_start_at
        return self.cancel_effective_at if end is None else min(end, self.cancel_effective_at)

    def is_over_at(self, at: datetime) -> bool:
        """Ended, or cancelled with the cancellation in effect, at ``at``."""
        if self.cancelled and (self.cancel_effective_at is None or at >= self.cancel_effective_at):
            return True
        end = self.end_at
        return end is not None and at >= end

    def interval_at(self, signal: EventSignal, at: datetime) -> EventInterval | None:
        """The interval of ``signal`` in force at ``at``, located from the (randomised) start
        plus cumulative durations (never from per-interval dtstart or current_value).
        A last interval of duration 0 lasts as long as the event."""
        if not self.is_active_at(at):
            return None
        offset_s = (at - self.effective_start_at).total_seconds()
        elapsed_s = 0.0
        for interval in signal.intervals:
            if interval.duration_s <= 0 or offset_s < elapsed_s + interval.duration_s:
                return interval
            elapsed_s += interval.duration_s
        return None

    def targets_resource(self, resource_id: str, ven_id: str | None) -> bool:
        """True when this event addresses the resource ``resource_id`` of VEN ``ven_id``.

        Targets add up: the event addresses a site when it names the site's resource id or
        the VEN's id. An event naming neither resource ids nor VEN ids (no targets, or only
        group, party or device targets, which the VTN resolved when it chose the VEN)
        addresses every site behind the VEN.
        """
        resource_targets = {t.value for t in self.targets if t.kind == "resource_id"}
        ven_targets = {t.value for t in self.targets if t.kind == "ven_id"}
        if not resource_targets and not ven_targets:
            return True
        own_ven = ven_id if ven_id is not None else self.ven_id
        return resource_id in resource_targets or (own_ven is not None and own_ven in ven_targets)


@dataclass(frozen=True)
class OptDecision:
    """The planner's answer to an event, with the reason stored beside it."""

    opt: Opt
    reason: str
    response_code: int = 200
    predicted_kw: float | None = None
    """The planner's predicted delivery at the facility meter when it answered [kW]."""


@dataclass(frozen=True)
class StoredResponse:
    event_id: str
    modification_number: int
    opt: Opt
    reason: str
    responded_at: datetime
    extra: dict[str, str] = field(default_factory=dict)
