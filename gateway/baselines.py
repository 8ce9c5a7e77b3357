"""Demand-response baselines: what a site would have drawn without the event, per interval.

Pure functions, the Python twin of the SQL view ``event_interval_delivery`` (revision 0006,
``docs/views.md``): on the same ledger and events they give the same baseline, so that the
planner can predict the baseline an event will be measured against before it answers.

All loads are facility energy at the meter (IT power times PUE), as the ledger holds it.
Time is seconds since 1970-01-01 UTC [s] inside; the public functions take aware datetimes.

Methods (``BaselineMethod``), each falling back to the next when it has no data:

- ``like-days`` (CAISO "10 in 10", NAESB baseline type I): the mean load of the same
  intervals on the most recent like days (weekday or weekend, UTC days with ledger rows and no
  event for the site) within a look-back, times a same-day adjustment (actual over baseline
  load in a window before the start, capped); below ``min_like_days`` like days it falls
  back to ``meter-before-after``;
- ``meter-before-after`` (NAESB): the mean load measured in the window just before the
  event's start; without rows there it falls back to ``hour-before``;
- ``hour-before``: the mean load measured in the hour before the start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

BaselineMethod = Literal["like-days", "meter-before-after", "hour-before"]
BASELINE_METHODS: tuple[BaselineMethod, ...] = get_args(BaselineMethod)

DAY_S = 86400.0
HOUR_S = 3600.0
LEDGER_ROW_LOOKBACK_S = 3600.0
"""A ledger row counts in a window when it starts at most this long before the window's
start [s]; longer rows (a site unreachable for over an hour) count only where they start
inside it or within this margin. The SQL view applies the same bound (an index range)."""

EPOCH_WEEKDAY = 4
"""1970-01-01 was a Thursday: day number n falls on weekday (n + 4) % 7, 0 for Sunday."""


@dataclass(frozen=True)
class BaselineParams:
    """A programme's baseline method and its parameters (``[[programme]]``)."""

    method: BaselineMethod = "like-days"
    like_days: int = 10
    """Like days averaged at most [count]."""
    lookback_days: int = 45
    """Like days are searched among this many UTC days before the event's day [count]."""
    min_like_days: int = 5
    """Fewer like days than this: fall back to ``meter-before-after`` [count]."""
    adjustment_window_s: float = 10800.0
    """Length of the same-day adjustment window; 0 for no adjustment [s]."""
    adjustment_gap_s: float = 3600.0
    """The adjustment window ends this long before the event's start [s]."""
    adjustment_cap: float = 0.2
    """The adjustment ratio is kept within 1 -/+ this [fraction]."""
    meter_window_s: float = 900.0
    """``meter-before-after``: the window before the start whose mean load is the baseline [s]."""


@dataclass(frozen=True)
class LedgerSpan:
    """One ledger row of a site: facility energy over [start_s, end_s)."""

    start_s: float
    """Interval start, seconds since 1970-01-01 UTC [s]."""
    end_s: float
    """Interval end [s]; after ``start_s``."""
    load_kwh: float
    """Facility energy drawn over the interval [kWh]."""


@dataclass(frozen=True)
class Baseline:
    """The baseline of one event at one site."""

    method: BaselineMethod | None
    """The method used after fallbacks; None when no method had data."""
    like_days: int
    """Like days averaged (0 unless ``method`` is ``like-days``) [count]."""
    adjustment: float | None
    """The capped same-day adjustment ratio (``like-days`` only) [ratio]."""
    baseline_kw: tuple[float | None, ...]
    """Per interval, the mean baseline power [kW]; None when ``method`` is None."""


def epoch_s(at: datetime) -> float:
    """An aware datetime as seconds since 1970-01-01 UTC [s]."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: expected an aware UTC instant")
    return at.timestamp()


def spans_from_ledger(rows: Iterable[tuple[datetime, datetime, float]]) -> tuple[LedgerSpan, ...]:
    """Ledger rows (interval start, interval end [aware UTC], load [kWh]) as spans, by start."""
    spans = [LedgerSpan(epoch_s(start), epoch_s(end), load_kwh) for start, end, load_kwh in rows]
    return tuple(sorted(spans, key=lambda span: span.start_s))


def spans_from_power(times: Sequence[datetime], load_kw: Sequence[float]) -> tuple[LedgerSpan, ...]:
    """Facility power samples as the ledger accounts them: the trapezoid between neighbours.

    :param times: sample instants, increasing [aware UTC].
    :param load_kw: facility power at each instant [kW].
    """
    if len(times) != len(load_kw):
        raise ValueError(f"{len(times)} times but {len(load_kw)} power values")
    spans = []
    for i in range(1, len(times)):
        start_s, end_s = epoch_s(times[i - 1]), epoch_s(times[i])
        if end_s <= start_s:
            raise ValueError(f"sample times out of order at {times[i].isoformat()}")
        energy_kwh = 0.5 * (load_kw[i - 1] + load_kw[i]) * (end_s - start_s) / HOUR_S
        spans.append(LedgerSpan(start_s, end_s, energy_kwh))
    return tuple(spans)


def window_energy(spans: Sequence[LedgerSpan], start_s: float, end_s: float) -> tuple[float, float]:
    """Energy in [start_s, end_s), each row pro rata of its overlap [kWh], and the seconds
    the rows cover [s]. ``spans`` sorted by start."""
    energy_kwh = 0.0
    covered_s = 0.0
    for span in spans:
        if span.start_s >= end_s:
            break
        if span.start_s < start_s - LEDGER_ROW_LOOKBACK_S or span.end_s <= start_s:
            continue
        overlap_s = min(span.end_s, end_s) - max(span.start_s, start_s)
        energy_kwh += span.load_kwh * overlap_s / (span.end_s - span.start_s)
        covered_s += overlap_s
    return energy_kwh, covered_s


def mean_kw(spans: Sequence[LedgerSpan], start_s: float, end_s: float) -> float | None:
    """Mean facility power measured in [start_s, end_s) [kW]; None when no row covers it."""
    energy_kwh, covered_s = window_energy(spans, start_s, end_s)
    if covered_s <= 0:
        return None
    return energy_kwh / (covered_s / HOUR_S)


def is_weekend(day_s: float) -> bool:
    """Whether the UTC day starting at ``day_s`` [s] is a Saturday or a Sunday."""
    return (int(day_s // DAY_S) + EPOCH_WEEKDAY) % 7 in (0, 6)


def like_days(
    spans: Sequence[LedgerSpan],
    event_start_s: float,
    event_windows: Iterable[tuple[float, float | None]],
    params: BaselineParams,
) -> tuple[float, ...]:
    """Start of each like day [s], most recent first: UTC days within ``lookback_days``
    before the event's day, of its kind (weekday or weekend), with a ledger row starting in
    them and no event in force at any moment of them; at most ``like_days`` of them.

    :param event_windows: (start [s], stop [s] or None when open-ended) of every event that
        addresses the site; those stopped at their start (cancelled before it) are ignored.
    """
    day0_s = math.floor(event_start_s / DAY_S) * DAY_S
    weekend = is_weekend(day0_s)
    first_s = day0_s - params.lookback_days * DAY_S
    with_rows = {math.floor(s.start_s / DAY_S) * DAY_S for s in spans}
    windows = [(a, b) for a, b in event_windows if b is None or b > a]
    chosen: list[float] = []
    day_s = day0_s - DAY_S
    while day_s >= first_s and len(chosen) < params.like_days:
        eventful = any(a < day_s + DAY_S and (b is None or b > day_s) for a, b in windows)
        if day_s in with_rows and is_weekend(day_s) == weekend and not eventful:
            chosen.append(day_s)
        day_s -= DAY_S
    return tuple(chosen)


def adjustment_ratio(
    spans: Sequence[LedgerSpan], event_start_s: float, days: Sequence[float], params: BaselineParams
) -> float:
    """The same-day adjustment: mean load measured in the adjustment window on the event's
    day over the like days' mean load in the same window, within 1 -/+ ``adjustment_cap``;
    1 without a window, without rows in it, or with no like-day load in it [ratio]."""
    window_s = params.adjustment_window_s
    if window_s <= 0 or not days:
        return 1.0
    end_s = event_start_s - params.adjustment_gap_s
    actual_kw = mean_kw(spans, end_s - window_s, end_s)
    day0_s = math.floor(event_start_s / DAY_S) * DAY_S
    like_kwh = sum(
        window_energy(spans, end_s - window_s - (day0_s - d), end_s - (day0_s - d))[0] for d in days
    ) / len(days)
    if actual_kw is None or like_kwh <= 0:
        return 1.0
    ratio = actual_kw / (like_kwh / (window_s / HOUR_S))
    return min(max(ratio, 1.0 - params.adjustment_cap), 1.0 + params.adjustment_cap)


def baseline_kw(
    spans: Sequence[LedgerSpan],
    event_start_at: datetime,
    intervals: Sequence[tuple[datetime, datetime]],
    params: BaselineParams,
    event_windows: Iterable[tuple[datetime, datetime | None]] = (),
) -> Baseline:
    """The baseline of each interval of one event at one site.

    :param spans: the site's ledger (facility energy), sorted by start
        (:func:`spans_from_ledger`, :func:`spans_from_power`).
    :param event_start_at: the start the VEN acts on (randomised start included) [aware UTC].
    :param intervals: the event's intervals that ask something, (start, end) [aware UTC].
    :param params: the programme's method and parameters.
    :param event_windows: (start, stop or None) of the events addressing the site, this one
        included [aware UTC]; days they touch are not like days.
    """
    start_s = epoch_s(event_start_at)
    bounds = [(epoch_s(a), epoch_s(b)) for a, b in intervals]
    if params.method == "like-days":
        windows = [(epoch_s(a), None if b is None else epoch_s(b)) for a, b in event_windows]
        days = like_days(spans, start_s, windows, params)
        if days and len(days) >= params.min_like_days:
            return _like_day_baseline(spans, start_s, bounds, days, params)
    if params.method in ("like-days", "meter-before-after"):
        meter_kw = mean_kw(spans, start_s - params.meter_window_s, start_s)
        if meter_kw is not None:
            return Baseline("meter-before-after", 0, None, tuple(meter_kw for _ in bounds))
    hour_kw = mean_kw(spans, start_s - HOUR_S, start_s)
    if hour_kw is not None:
        return Baseline("hour-before", 0, None, tuple(hour_kw for _ in bounds))
    return Baseline(None, 0, None, tuple(None for _ in bounds))


def _like_day_baseline(
    spans: Sequence[LedgerSpan],
    start_s: float,
    bounds: Sequence[tuple[float, float]],
    days: Sequence[float],
    params: BaselineParams,
) -> Baseline:
    day0_s = math.floor(start_s / DAY_S) * DAY_S
    ratio = adjustment_ratio(spans, start_s, days, params)
    values: list[float | None] = []
    for a, b in bounds:
        total_kwh = sum(window_energy(spans, a - (day0_s - d), b - (day0_s - d))[0] for d in days)
        values.append(total_kwh / len(days) * ratio / ((b - a) / HOUR_S))
    return Baseline("like-days", len(days), ratio, tuple(values))
