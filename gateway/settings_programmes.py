"""The sections about utilities' programmes: ``[[programme]]`` (a market context, its signal
mapping and its baseline) and ``[signals]`` (the parameters of the default signal table,
``gateway.planner.signals.default_rules``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from gateway.baselines import BaselineMethod, BaselineParams
from gateway.planner.signals import Action, SignalRule
from gateway.settings_base import KeyProblem, Section


class SignalSettings(Section):
    simple_shed_fraction: tuple[float, float, float] = (0.25, 0.5, 1.0)
    """Share of flexible load to shed for SIMPLE levels 1, 2 and 3 [-]."""
    surplus_price_threshold: float = 0.0
    """ELECTRICITY_PRICE at or below this is grid surplus [currency/kWh]."""

    @field_validator("simple_shed_fraction")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0 <= f <= 1 for f in value):
            raise ValueError("expected three fractions between 0 and 1")
        return value


class SignalRuleSettings(Section):
    """One row of a programme's signal mapping (``[[programme.signal]]``)."""

    name: Annotated[str, Field(min_length=1)]
    """The OpenADR signal name: SIMPLE, LOAD_DISPATCH, ELECTRICITY_PRICE, LOAD_CONTROL, x-..."""
    type: Annotated[str, Field(min_length=1)]
    """The signal type: level, delta, setpoint, price, x-loadControlCapacity, ..."""
    action: Action
    level_fractions: tuple[Annotated[float, Field(ge=0, le=1)], ...] | None = None
    """For shed_fraction_by_level: the share of flexible load shed at level 1, 2, ... [-]."""
    price_threshold: float | None = None
    """For absorb_at_or_below_price: the price at or below which the grid has surplus."""

    @model_validator(mode="after")
    def _parameters(self) -> SignalRuleSettings:
        if self.level_fractions is not None and self.action != "shed_fraction_by_level":
            raise KeyProblem(("level_fractions",), "only for action shed_fraction_by_level")
        if self.level_fractions is not None and not self.level_fractions:
            raise KeyProblem(("level_fractions",), "expected at least one fraction")
        if self.price_threshold is not None and self.action != "absorb_at_or_below_price":
            raise KeyProblem(("price_threshold",), "only for action absorb_at_or_below_price")
        return self

    def rule(self, signals: SignalSettings) -> SignalRule:
        """The planner's row; parameters left out come from ``[signals]``."""
        return SignalRule(
            signal_name=self.name,
            signal_type=self.type,
            action=self.action,
            level_fractions=self.level_fractions or signals.simple_shed_fraction,
            price_threshold=(
                signals.surplus_price_threshold
                if self.price_threshold is None
                else self.price_threshold
            ),
        )


DEFAULT_BASELINE = BaselineParams()
"""The baseline of a programme without ``baseline`` keys: ``like-days`` with CAISO's
parameters (``docs/views.md`` says why)."""
BASELINE_KEYS: dict[BaselineMethod, tuple[str, ...]] = {
    "like-days": (
        "like_days",
        "lookback_days",
        "min_like_days",
        "adjustment_window_s",
        "adjustment_gap_s",
        "adjustment_cap",
        "meter_window_s",
    ),
    "meter-before-after": ("meter_window_s",),
    "hour-before": (),
}
"""The parameters each baseline method reads (``like-days`` falls back to
``meter-before-after``, so it reads that one's window too)."""


class ProgrammeSettings(Section):
    """A utility's programme (``[[programme]]``): its market context, signal mapping and the
    baseline its events are measured against."""

    market_context: Annotated[str, Field(min_length=1, max_length=512)]
    """The market context URI its events carry; ``*`` for any market context not listed."""
    signal: list[SignalRuleSettings] = Field(default_factory=list)
    """The signal mapping; empty takes the default table (``docs/architecture.md``, 'Signal
    mapping')."""
    baseline: BaselineMethod = DEFAULT_BASELINE.method
    """How the utility computes the baseline of its events (``docs/views.md``)."""
    like_days: Annotated[int, Field(ge=1, le=60)] = DEFAULT_BASELINE.like_days
    """like-days: like days averaged at most [count]."""
    lookback_days: Annotated[int, Field(ge=1, le=366)] = DEFAULT_BASELINE.lookback_days
    """like-days: UTC days before the event's day searched for like days [count]."""
    min_like_days: Annotated[int, Field(ge=1, le=60)] = DEFAULT_BASELINE.min_like_days
    """like-days: with fewer like days, fall back to meter-before-after [count]."""
    adjustment_window_s: Annotated[float, Field(ge=0, le=86400)] = (
        DEFAULT_BASELINE.adjustment_window_s
    )
    """like-days: length of the same-day adjustment window; 0 for no adjustment [s]."""
    adjustment_gap_s: Annotated[float, Field(ge=0, le=86400)] = DEFAULT_BASELINE.adjustment_gap_s
    """like-days: the adjustment window ends this long before the event's start [s]."""
    adjustment_cap: Annotated[float, Field(ge=0, le=1)] = DEFAULT_BASELINE.adjustment_cap
    """like-days: the adjustment ratio stays within 1 -/+ this [fraction]."""
    meter_window_s: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_BASELINE.meter_window_s
    """meter-before-after (and like-days' fallback): the window before the start whose mean
    load is the baseline [s]."""

    @model_validator(mode="after")
    def _distinct_signals(self) -> ProgrammeSettings:
        seen: list[tuple[str, str]] = []
        for i, row in enumerate(self.signal):
            if (row.name, row.type) in seen:
                raise KeyProblem(("signal", i), f"signal {row.name}/{row.type} is mapped twice")
            seen.append((row.name, row.type))
        return self

    @model_validator(mode="after")
    def _baseline_parameters(self) -> ProgrammeSettings:
        used = BASELINE_KEYS[self.baseline]
        for key in (k for k in BASELINE_KEYS["like-days"] if k in self.model_fields_set):
            if key not in used:
                users = ", ".join(m for m, keys in BASELINE_KEYS.items() if key in keys)
                raise KeyProblem(
                    (key,),
                    f'baseline = "{self.baseline}" does not use {key}; remove it or choose a '
                    f"baseline that does ({users})",
                )
        if self.min_like_days > self.like_days:
            raise KeyProblem(
                ("min_like_days",),
                f"{self.min_like_days} is above like_days = {self.like_days}; the minimum "
                "cannot exceed the number of like days averaged",
            )
        return self

    def baseline_params(self) -> BaselineParams:
        """The programme's baseline for ``gateway.baselines``."""
        return BaselineParams(
            method=self.baseline,
            like_days=self.like_days,
            lookback_days=self.lookback_days,
            min_like_days=self.min_like_days,
            adjustment_window_s=self.adjustment_window_s,
            adjustment_gap_s=self.adjustment_gap_s,
            adjustment_cap=self.adjustment_cap,
            meter_window_s=self.meter_window_s,
        )
