"""OpenADR signals -> what they ask of each site, per programme (``docs/architecture.md``,
'Signal mapping').

Each programme (a market context) maps signal names and types to actions; an action is one
row of ``ACTIONS``: it gets the signal's value in force, the site and its flexible load, and
answers a request or None. The mapping lives in the configuration (``[[programme]]``); without
one, every market context gets the default table (:func:`default_rules`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gateway.events import DrEvent, EventSignal
from gateway.planner import maintenance
from gateway.planner.snapshot import SiteRequest, SiteView

Action = Literal[
    "shed_fraction_by_level",
    "shed_or_absorb_kw",
    "cap_kw",
    "absorb_at_or_below_price",
    "cap_fraction_of_max",
]
"""What a signal asks of a site; each is one row of ``ACTIONS``."""

ANY_MARKET_CONTEXT = "*"


@dataclass(frozen=True)
class SignalRule:
    """One row of a programme's signal mapping: a signal name and type, and its action.

    level_fractions: for ``shed_fraction_by_level``, the share of flexible load to shed at
        level 1, 2, ... (higher levels use the last) [-]
    price_threshold: for ``absorb_at_or_below_price``, the price at or below which the grid
        has surplus [currency/kWh]
    """

    signal_name: str
    signal_type: str
    action: Action
    level_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    price_threshold: float = 0.0


@dataclass(frozen=True)
class Programme:
    """A utility's programme: its market context and its signal mapping."""

    market_context: str
    """The programme's market context URI; ``*`` matches any other."""
    rules: tuple[SignalRule, ...]

    def rule_for(self, signal: EventSignal) -> SignalRule | None:
        for rule in self.rules:
            if (rule.signal_name, rule.signal_type) == (signal.signal_name, signal.signal_type):
                return rule
        return None


def default_rules(
    level_fractions: tuple[float, ...] = (0.25, 0.5, 1.0), price_threshold: float = 0.0
) -> tuple[SignalRule, ...]:
    """The default table (``docs/architecture.md``, 'Signal mapping'), for a programme that
    configures none."""
    return (
        SignalRule("SIMPLE", "level", "shed_fraction_by_level", level_fractions=level_fractions),
        SignalRule("simple", "level", "shed_fraction_by_level", level_fractions=level_fractions),
        SignalRule("LOAD_DISPATCH", "delta", "shed_or_absorb_kw"),
        SignalRule("LOAD_DISPATCH", "setpoint", "cap_kw"),
        SignalRule(
            "ELECTRICITY_PRICE",
            "price",
            "absorb_at_or_below_price",
            price_threshold=price_threshold,
        ),
        SignalRule(
            "ELECTRICITY_PRICE",
            "priceRelative",
            "absorb_at_or_below_price",
            price_threshold=price_threshold,
        ),
        SignalRule("LOAD_CONTROL", "x-loadControlCapacity", "cap_fraction_of_max"),
    )


@dataclass(frozen=True)
class SignalPolicy:
    """The programmes the fleet takes part in (``[[programme]]`` in the configuration);
    by default one programme for any market context with the default mapping."""

    programmes: tuple[Programme, ...] = (Programme(ANY_MARKET_CONTEXT, default_rules()),)

    def programme_for(self, market_context: str) -> Programme | None:
        """The programme of ``market_context``, else the ``*`` one, else None."""
        fallback = None
        for programme in self.programmes:
            if programme.market_context == market_context:
                return programme
            if programme.market_context == ANY_MARKET_CONTEXT:
                fallback = programme
        return fallback

    def rule_for(self, event: DrEvent, signal: EventSignal) -> SignalRule | None:
        programme = self.programme_for(event.market_context)
        return None if programme is None else programme.rule_for(signal)

    def unsupported(self, event: DrEvent) -> list[str]:
        """The event's signals that its programme's mapping cannot act on (answered 460)."""
        if self.programme_for(event.market_context) is None:
            return [
                f"{s.signal_name}/{s.signal_type} (no programme for market context "
                f"{event.market_context})"
                for s in event.signals
            ]
        return [
            f"{s.signal_name}/{s.signal_type}"
            for s in event.signals
            if self.rule_for(event, s) is None
        ]


@dataclass(frozen=True)
class Ask:
    kind: str
    power_kw: float


Handler = Callable[[float, SiteView, float, SignalRule], Ask | None]
"""(value, site, flexible load of the site [kW], rule) -> ask."""


def _shed_fraction_by_level(
    value: float, site: SiteView, flexible_kw: float, rule: SignalRule
) -> Ask | None:
    level = round(value)
    if level <= 0 or not rule.level_fractions:
        return None
    fraction = rule.level_fractions[min(level, len(rule.level_fractions)) - 1]
    return Ask("shed", fraction * flexible_kw)


def _shed_or_absorb_kw(
    value: float, site: SiteView, flexible_kw: float, rule: SignalRule
) -> Ask | None:
    if value < 0:
        return Ask("shed", -value)
    if value > 0:
        return Ask("absorb", value)
    return None


def _cap_kw(value: float, site: SiteView, flexible_kw: float, rule: SignalRule) -> Ask | None:
    return Ask("cap", max(0.0, value))


def _absorb_at_or_below_price(
    value: float, site: SiteView, flexible_kw: float, rule: SignalRule
) -> Ask | None:
    if value <= rule.price_threshold:
        headroom_kw = max(0.0, site.it_power_max_kw - site.it_power_kw) * site.pue
        return Ask("absorb", headroom_kw)
    return None


def _cap_fraction_of_max(
    value: float, site: SiteView, flexible_kw: float, rule: SignalRule
) -> Ask | None:
    return Ask("cap", max(0.0, value) * site.it_power_max_kw * site.pue)


ACTIONS: dict[Action, Handler] = {
    "shed_fraction_by_level": _shed_fraction_by_level,
    "shed_or_absorb_kw": _shed_or_absorb_kw,
    "cap_kw": _cap_kw,
    "absorb_at_or_below_price": _absorb_at_or_below_price,
    "cap_fraction_of_max": _cap_fraction_of_max,
}


def unsupported_signals(event: DrEvent, policy: SignalPolicy | None = None) -> list[str]:
    """The event's signals that ``policy`` (default: the default mapping) cannot act on."""
    return (policy or SignalPolicy()).unsupported(event)


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
    for site in maintenance.available(event, targeted_sites(event, sites)):
        if site.manual_override:
            continue
        for signal in event.signals:
            rule = policy.rule_for(event, signal)
            if rule is None:
                continue
            handler = ACTIONS[rule.action]
            if at is not None:
                interval = event.interval_at(signal, at)
                values = [] if interval is None else [interval.value]
            else:
                values = [i.value for i in signal.intervals]
            for value in values:
                ask = handler(value, site, flexible_kw.get(site.site_id, 0.0), rule)
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
                    start_at=event.effective_start_at,
                    end_at=end_at,
                    source=source,
                )
    return list(out.values())


def lead_time_s(event: DrEvent, at: datetime) -> float:
    """Seconds from ``at`` until the event starts (ramp-up included), at least 0 [s]."""
    start = event.effective_start_at - timedelta(seconds=event.ramp_up_s or 0.0)
    return max(0.0, (start - at).total_seconds())
