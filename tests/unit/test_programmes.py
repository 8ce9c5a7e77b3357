"""Signal mappings per programme: configuration, validation and what the planner asks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.events import DrEvent, EventInterval, EventSignal
from gateway.planner.signals import peak_requests
from gateway.planner.snapshot import SiteView
from gateway.settings import parse_settings

START = datetime(2030, 6, 1, 12, tzinfo=UTC)
FLEET_DR = "http://utility-a.example/fleet-dr"


def settings(programmes: list[dict[str, Any]], signals: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {"programme": programmes}
    if signals is not None:
        data["signals"] = signals
    return parse_settings(data, "test.toml")


def event(signal_name: str, signal_type: str, value: float, context: str = FLEET_DR) -> DrEvent:
    return DrEvent(
        vtn_id="VTN",
        event_id="E",
        modification_number=0,
        status="far",
        market_context=context,
        start_at=START,
        duration_s=3600.0,
        signals=(EventSignal("s", signal_name, signal_type, (EventInterval(0, 3600.0, value),)),),
    )


SITE = SiteView(
    site_id="a",
    resource_id="a",
    vtn_id="VTN",
    gpus_total=8,
    gpus_free=4,
    it_power_max_kw=60.0,
    it_power_kw=20.0,
    pue=1.5,
    wan_bandwidth_gbps=10.0,
    renewable_kw=0.0,
    forecast_step_s=900.0,
    renewable_forecast_kw=(0.0,),
)


def asks(policy_settings: Any, e: DrEvent) -> list[tuple[str, float]]:
    policy = policy_settings.signal_policy()
    return [(r.kind, r.power_kw) for r in peak_requests(e, [SITE], {"a": 40.0}, policy)]


MAPPED = [
    {
        "market_context": FLEET_DR,
        "signal": [
            {
                "name": "SIMPLE",
                "type": "level",
                "action": "shed_fraction_by_level",
                "level_fractions": [0.1, 0.2],
            },
            {"name": "x-fleetShed", "type": "x-kW", "action": "shed_or_absorb_kw"},
        ],
    }
]


@pytest.mark.parametrize(
    ("programmes", "event_", "expected"),
    [
        pytest.param([], event("SIMPLE", "level", 2), [("shed", 20.0)], id="default table"),
        pytest.param(
            MAPPED, event("SIMPLE", "level", 1), [("shed", 4.0)], id="configured fractions"
        ),
        pytest.param(
            MAPPED,
            event("SIMPLE", "level", 3),
            [("shed", 8.0)],
            id="a level above the list takes the last fraction",
        ),
        pytest.param(
            MAPPED,
            event("x-fleetShed", "x-kW", -12),
            [("shed", 12.0)],
            id="a programme's own x- signal",
        ),
        pytest.param(
            MAPPED, event("LOAD_DISPATCH", "delta", -5), [], id="not in the mapping: no ask"
        ),
        pytest.param(
            [{"market_context": "*"}],
            event("LOAD_DISPATCH", "delta", 7, context="http://other/"),
            [("absorb", 7.0)],
            id="'*' with no mapping: the default table for any context",
        ),
    ],
)
def test_rule_signals_are_mapped_per_programme(
    programmes: list[dict[str, Any]], event_: DrEvent, expected: list[tuple[str, float]]
) -> None:
    assert asks(settings(programmes), event_) == expected


@pytest.mark.parametrize(
    ("programmes", "event_", "unsupported"),
    [
        pytest.param([], event("x-unknown", "level", 1), ["x-unknown/level"], id="unknown name"),
        pytest.param([], event("SIMPLE", "delta", 1), ["SIMPLE/delta"], id="known name, odd type"),
        pytest.param(
            MAPPED,
            event("LOAD_DISPATCH", "delta", 1),
            ["LOAD_DISPATCH/delta"],
            id="not in this programme",
        ),
        pytest.param(
            MAPPED,
            event("SIMPLE", "level", 1, context="http://other/"),
            ["SIMPLE/level (no programme for market context http://other/)"],
            id="no programme for the market context",
        ),
        pytest.param(MAPPED, event("SIMPLE", "level", 1), [], id="mapped"),
    ],
)
def test_rule_unmapped_signals_are_unsupported_460(
    programmes: list[dict[str, Any]], event_: DrEvent, unsupported: list[str]
) -> None:
    assert settings(programmes).signal_policy().unsupported(event_) == unsupported


def test_signals_section_fills_what_a_programme_row_leaves_out() -> None:
    loaded = settings(
        [
            {
                "market_context": "*",
                "signal": [{"name": "SIMPLE", "type": "level", "action": "shed_fraction_by_level"}],
            }
        ],
        signals={"simple_shed_fraction": [0.5, 0.6, 0.7]},
    )
    assert asks(loaded, event("SIMPLE", "level", 1, context="x")) == [("shed", 20.0)]


BAD = [
    (
        "unknown action",
        [{"market_context": "*", "signal": [{"name": "SIMPLE", "type": "level", "action": "zap"}]}],
        "programme[0].signal[0].action",
    ),
    (
        "fractions for another action",
        [
            {
                "market_context": "*",
                "signal": [
                    {
                        "name": "LOAD_DISPATCH",
                        "type": "delta",
                        "action": "shed_or_absorb_kw",
                        "level_fractions": [0.5],
                    }
                ],
            }
        ],
        "programme[0].signal[0].level_fractions",
    ),
    (
        "fraction above 1",
        [
            {
                "market_context": "*",
                "signal": [
                    {
                        "name": "SIMPLE",
                        "type": "level",
                        "action": "shed_fraction_by_level",
                        "level_fractions": [1.5],
                    }
                ],
            }
        ],
        "programme[0].signal[0].level_fractions",
    ),
    (
        "signal mapped twice",
        [
            {
                "market_context": "*",
                "signal": [
                    {"name": "SIMPLE", "type": "level", "action": "shed_fraction_by_level"},
                    {"name": "SIMPLE", "type": "level", "action": "cap_kw"},
                ],
            }
        ],
        "programme[0].signal[1]",
    ),
    (
        "duplicate market context",
        [{"market_context": "*"}, {"market_context": "*"}],
        "programme[1].market_context",
    ),
    ("unknown key", [{"market_context": "*", "signals": []}], "programme[0].signals"),
]


@pytest.mark.parametrize(("label", "programmes", "key"), BAD, ids=[b[0] for b in BAD])
def test_bad_programme_names_the_key(
    label: str, programmes: list[dict[str, Any]], key: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        settings(programmes)
    assert str(exc.value).startswith(f"test.toml: {key}"), str(exc.value)


def test_a_modest_start_offset_does_not_change_the_ask() -> None:
    shifted = event("SIMPLE", "level", 2)
    later = DrEvent(**{**shifted.__dict__, "start_offset_s": 600.0})
    assert later.effective_start_at == START + timedelta(minutes=10)
    assert asks(settings([]), later) == asks(settings([]), shifted)
