"""The campaign's event generator: a deterministic, seeded stream of demand-response events.

Pure: a seed, the sites and a time span in, a tuple of :class:`CampaignEvent` out. Each event
is a LOAD_DISPATCH ``delta`` (negative kW: shed; positive: absorb), as the demo sends, split
into 1 to 4 intervals, for one to three sites by resource id. What is drawn:

- issue times spread over the span after a warm-up (the baseline needs days without
  events), with a share of events placed to overlap an earlier one at a common site;
- notice (issue to start) 0 to 2 h, a share exactly 0;
- duration 15 min to 4 h in whole minutes;
- size: a share of the targeted sites' facility power (IT cap times PUE), log-uniform
  between ``size_share_min`` and ``size_share_max``; above 1 asks more than the sites (and
  often the fleet) can shift;
- a share of events is modified once (new values, between issue and end) and a share is
  cancelled (after any modification, before the end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from gateway.errors import InputError

EventDirection = Literal["shed", "absorb"]


@dataclass(frozen=True)
class TargetSite:
    """A site as the generator sees it: its OpenADR resource id and facility power cap.

    facility_max_kw: IT power cap times PUE [kW]
    """

    site_id: str
    resource_id: str
    facility_max_kw: float


@dataclass(frozen=True)
class EventParams:
    """How events are drawn; every duration in seconds [s]."""

    warmup_s: float = 86400.0
    """No event starts before this much time after the campaign's start [s]."""
    tail_s: float = 6 * 3600.0
    """Every event ends at least this long before the campaign's end [s]."""
    duration_min_s: float = 15 * 60.0
    duration_max_s: float = 4 * 3600.0
    notice_max_s: float = 2 * 3600.0
    zero_notice_share: float = 0.15
    size_share_min: float = 0.05
    size_share_max: float = 2.0
    absorb_share: float = 0.4
    overlap_share: float = 0.15
    modify_share: float = 0.2
    cancel_share: float = 0.1
    targets_weights: tuple[float, ...] = (0.6, 0.3, 0.1)
    """Relative frequency of events for 1, 2, 3... sites [-]."""

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.tail_s < 0:
            raise InputError("warmup_s and tail_s must be >= 0")
        if not 60 <= self.duration_min_s <= self.duration_max_s:
            raise InputError("durations: need 60 s <= duration_min_s <= duration_max_s")
        if self.notice_max_s < 0:
            raise InputError("notice_max_s must be >= 0")
        if not 0 < self.size_share_min <= self.size_share_max:
            raise InputError("sizes: need 0 < size_share_min <= size_share_max")
        for name in (
            "zero_notice_share",
            "absorb_share",
            "overlap_share",
            "modify_share",
            "cancel_share",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must be between 0 and 1")
        if not self.targets_weights or any(w < 0 for w in self.targets_weights):
            raise InputError("targets_weights: need non-negative weights")


@dataclass(frozen=True)
class Modification:
    """New interval values [kW], sent at ``at`` (aware UTC)."""

    at: datetime
    values_kw: tuple[float, ...]


@dataclass(frozen=True)
class CampaignEvent:
    """One event of the campaign.

    event_id: the VTN's event id; issue_at, start_at: aware UTC; duration_s: active period
    [s], whole seconds; values_kw: the LOAD_DISPATCH delta per interval [kW] (negative:
    shed); interval_durations_s: each interval's length [s]; resource_ids, site_ids: the
    targets; modification: sent once, or None; cancel_at: when the VTN cancels it, or None.
    """

    event_id: str
    direction: EventDirection
    issue_at: datetime
    start_at: datetime
    duration_s: float
    values_kw: tuple[float, ...]
    interval_durations_s: tuple[float, ...]
    site_ids: tuple[str, ...]
    resource_ids: tuple[str, ...]
    modification: Modification | None = None
    cancel_at: datetime | None = None

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(seconds=self.duration_s)

    @property
    def notice_s(self) -> float:
        return (self.start_at - self.issue_at).total_seconds()

    @property
    def peak_kw(self) -> float:
        """The largest |delta| of the first version [kW]."""
        return max(abs(v) for v in self.values_kw)


def generate_events(
    seed: int,
    count: int,
    sites: Sequence[TargetSite],
    start_at: datetime,
    span_s: float,
    params: EventParams = EventParams(),
) -> tuple[CampaignEvent, ...]:
    """``count`` events over ``[start_at, start_at + span_s)``, sorted by issue time.

    seed: equal seeds (and equal other arguments) give equal events; sites: the targets;
    span_s: the campaign's length [s]. Raises :class:`InputError` when the span leaves no
    room for events after the warm-up and before the tail.
    """
    if start_at.tzinfo is None:
        raise ValueError("start_at must be timezone-aware")
    if count < 0:
        raise InputError(f"count must be >= 0, got {count}")
    if not sites:
        raise InputError("events need at least one site")
    latest_end_s = span_s - params.tail_s
    room_s = latest_end_s - params.warmup_s - params.duration_min_s
    if count and room_s <= 0:
        raise InputError(
            f"a span of {span_s:g} s leaves no room for events after a warm-up of "
            f"{params.warmup_s:g} s and before a tail of {params.tail_s:g} s"
        )
    rng = np.random.default_rng(seed)
    weights = np.array(params.targets_weights[: len(sites)], dtype=np.float64)
    weights = weights / weights.sum()
    events: list[CampaignEvent] = []
    for number in range(count):
        minutes = (int(params.duration_min_s // 60), int(params.duration_max_s // 60) + 1)
        duration_s = float(60 * rng.integers(*minutes))
        notice_s = 0.0
        if rng.random() >= params.zero_notice_share:
            notice_s = float(60 * rng.integers(0, int(params.notice_max_s // 60) + 1))
        n_targets = int(rng.choice(np.arange(1, len(weights) + 1), p=weights))
        chosen = sorted(int(i) for i in rng.choice(len(sites), size=n_targets, replace=False))
        targets = [sites[i] for i in chosen]
        latest_start_s = max(params.warmup_s, latest_end_s - duration_s)
        start_s = params.warmup_s + rng.random() * (latest_start_s - params.warmup_s)
        earlier = [e for e in events if set(e.site_ids) & {t.site_id for t in targets}]
        if earlier and rng.random() < params.overlap_share:
            other = earlier[int(rng.integers(len(earlier)))]
            other_start_s = (other.start_at - start_at).total_seconds()
            start_s = min(latest_start_s, other_start_s + rng.random() * other.duration_s)
        start_s = float(60 * math.floor(start_s / 60))
        issue_s = max(0.0, start_s - notice_s)
        direction: EventDirection = "absorb" if rng.random() < params.absorb_share else "shed"
        facility_kw = sum(t.facility_max_kw for t in targets) / len(targets)
        share = math.exp(
            rng.uniform(math.log(params.size_share_min), math.log(params.size_share_max))
        )
        durations_s = _split(duration_s, int(rng.integers(1, 5)))
        values_kw = _values(rng, share * facility_kw, len(durations_s), direction)
        issue_at = start_at + timedelta(seconds=issue_s)
        event_start_at = start_at + timedelta(seconds=start_s)
        end_at = event_start_at + timedelta(seconds=duration_s)
        modification = None
        if rng.random() < params.modify_share:
            at = _between(rng, issue_at, end_at)
            factor = rng.uniform(0.5, 1.5)
            modification = Modification(
                at=at, values_kw=tuple(round(v * factor, 2) for v in values_kw)
            )
        cancel_at = None
        if rng.random() < params.cancel_share:
            cancel_at = _between(rng, modification.at if modification else issue_at, end_at)
            if cancel_at >= end_at:
                cancel_at = None  # no minute left after the modification
        events.append(
            CampaignEvent(
                event_id=f"CMP-{number + 1:04d}",
                direction=direction,
                issue_at=issue_at,
                start_at=event_start_at,
                duration_s=duration_s,
                values_kw=values_kw,
                interval_durations_s=durations_s,
                site_ids=tuple(t.site_id for t in targets),
                resource_ids=tuple(t.resource_id for t in targets),
                modification=modification,
                cancel_at=cancel_at,
            )
        )
    return tuple(sorted(events, key=lambda e: (e.issue_at, e.event_id)))


def _split(duration_s: float, intervals: int) -> tuple[float, ...]:
    """Whole-second intervals that add up to ``duration_s``; at most ``intervals``, each at
    least 5 min (the last takes the remainder)."""
    intervals = max(1, min(intervals, int(duration_s // 300)))
    each_s = float(math.floor(duration_s / intervals))
    return (each_s,) * (intervals - 1) + (duration_s - each_s * (intervals - 1),)


def _values(
    rng: np.random.Generator, peak_kw: float, intervals: int, direction: EventDirection
) -> tuple[float, ...]:
    """Per interval a share (0.5 to 1) of the peak; the first interval asks the peak [kW]."""
    sign = 1.0 if direction == "absorb" else -1.0
    shares = [1.0, *(float(rng.uniform(0.5, 1.0)) for _ in range(intervals - 1))]
    return tuple(round(sign * max(0.1, peak_kw * s), 2) for s in shares)


def _between(rng: np.random.Generator, after: datetime, before: datetime) -> datetime:
    """A whole minute strictly after ``after`` and before ``before`` when there is one."""
    span_s = (before - after).total_seconds()
    minutes = max(1, int(span_s // 60) - 1)
    return after + timedelta(seconds=60 * int(rng.integers(1, minutes + 1)))


def overlapping_pairs(events: Sequence[CampaignEvent]) -> int:
    """How many pairs of events are in force at a common site at the same time."""
    count = 0
    for i, a in enumerate(events):
        for b in events[i + 1 :]:
            if (
                set(a.site_ids) & set(b.site_ids)
                and a.start_at < b.end_at
                and b.start_at < a.end_at
            ):
                count += 1
    return count
