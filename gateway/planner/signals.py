"""OpenADR signals -> what they ask of each site (design section 7), one row per signal kind.

A handler gets the signal's value in force and the site, and answers a request or None.
Adding a signal kind means adding a row to ``HANDLERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.events import DrEvent, EventSignal
from gateway.planner.snapshot import SiteRequest, SiteView


@dataclass(frozen=True)
class SignalPolicy:
    """The programme's constants (``[signals]`` in the configuration)."""

    simple_shed_fraction: tuple[float, float, float] = (0.25, 0.5, 1.0)
    surplus_price_threshold: float = 0.0


@dataclass(frozen=True)
class Ask:
    kind: str
    power_kw: float


Handler = Callable[[float, SiteView, float, SignalPolicy], Ask | None]
"""(value, site, flexible load of the site [kW], policy) -> ask."""


def _simple(value: float, site: SiteView, flexible_kw: float, policy: SignalPolicy) -> Ask | None:
    level = round(value)
    if level <= 0:
        return None
    fraction = policy.simple_shed_fraction[min(level, 3) - 1]
    return Ask("shed", fraction * flexible_kw)


def _dispatch_delta(
    value: float, site: SiteView, flexible_kw: float, policy: SignalPolicy
) -> Ask | None:
    if value < 0:
        return Ask("shed", -value)
    if value > 0:
        return Ask("absorb", value)
    return None


def _dispatch_setpoint(
    value: float, site: SiteView, flexible_kw: float, policy: SignalPolicy
) -> Ask | None:
    return Ask("cap", max(0.0, value))


def _price(value: float, site: SiteView, flexible_kw: float, policy: SignalPolicy) -> Ask | None:
    if value <= policy.surplus_price_threshold:
        headroom_kw = max(0.0, site.it_power_max_kw - site.it_power_kw) * site.pue
        return Ask("absorb", headroom_kw)
    return None


def _load_capacity(
    value: float, site: SiteView, flexible_kw: float, policy: SignalPolicy
) -> Ask | None:
    return Ask("cap", max(0.0, value) * site.it_power_max_kw * site.pue)


HANDLERS: dict[tuple[str, str], Handler] = {
    ("SIMPLE", "level"): _simple,
    ("simple", "level"): _simple,
    ("LOAD_DISPATCH", "delta"): _dispatch_delta,
    ("LOAD_DISPATCH", "setpoint"): _dispatch_setpoint,
    ("ELECTRICITY_PRICE", "price"): _price,
    ("ELECTRICITY_PRICE", "priceRelative"): _price,
    ("LOAD_CONTROL", "x-loadControlCapacity"): _load_capacity,
}


def is_supported(signal: EventSignal) -> bool:
    return (signal.signal_name, signal.signal_type) in HANDLERS


def unsupported_signals(event: DrEvent) -> list[str]:
    return [f"{s.signal_name}/{s.signal_type}" for s in event.signals if not is_supported(s)]


def targeted_sites(event: DrEvent, sites: Sequence[SiteView]) -> list[SiteView]:
    """Sites of the event's VTN that the event addresses."""
    return [
        s for s in sites if s.vtn_id == event.vtn_id and event.targets_resource(s.resource_id, None)
    ]


def requests_at(
    event: DrEvent,
    sites: Sequence[SiteView],
    flexible_kw: dict[str, float],
    at: datetime,
    policy: SignalPolicy,
) -> list[SiteRequest]:
    """Requests in force at ``at``; none for a test event or outside the active period."""
    if event.test_event or not event.is_active_at(at):
        return []
    return _requests(event, sites, flexible_kw, policy, at)


def peak_requests(
    event: DrEvent, sites: Sequence[SiteView], flexible_kw: dict[str, float], policy: SignalPolicy
) -> list[SiteRequest]:
    """The largest ask of each kind per site over the whole event (for opt decisions)."""
    return _requests(event, sites, flexible_kw, policy, None)


def _requests(
    event: DrEvent,
    sites: Sequence[SiteView],
    flexible_kw: dict[str, float],
    policy: SignalPolicy,
    at: datetime | None,
) -> list[SiteRequest]:
    out: dict[tuple[str, str], SiteRequest] = {}
    source = f"{event.vtn_id}/{event.event_id}"
    for site in targeted_sites(event, sites):
        for signal in event.signals:
            handler = HANDLERS.get((signal.signal_name, signal.signal_type))
            if handler is None:
                continue
            if at is not None:
                interval = event.interval_at(signal, at)
                values = [] if interval is None else [interval.value]
            else:
                values = [i.value for i in signal.intervals]
            for value in values:
                ask = handler(value, site, flexible_kw.get(site.site_id, 0.0), policy)
                if ask is None:
                    continue
                key = (site.site_id, ask.kind)
                previous = out.get(key)
                # cap: the tightest wins; shed and absorb: the largest wins.
                if previous is not None and (
                    (ask.kind == "cap" and previous.power_kw <= ask.power_kw)
                    or (ask.kind != "cap" and previous.power_kw >= ask.power_kw)
                ):
                    continue
                end_at = event.end_at
                out[key] = SiteRequest(
                    site_id=site.site_id,
                    kind=ask.kind,  # type: ignore[arg-type]
                    power_kw=ask.power_kw,
                    start_at=event.start_at,
                    end_at=end_at,
                    source=source,
                )
    return list(out.values())


def lead_time_s(event: DrEvent, at: datetime) -> float:
    """Seconds from ``at`` until the event starts (ramp-up included), at least 0 [s]."""
    start = event.start_at - timedelta(seconds=event.ramp_up_s or 0.0)
    return max(0.0, (start - at).total_seconds())
