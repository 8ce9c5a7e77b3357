"""The event rules as pure functions (``gateway/ven/event_rules.py``,
``gateway/planner/requests.py``).

Table-driven, labelled cases; the same rules against a real VTN are in
``tests/integration/test_ven_conformance.py``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest

from gateway import event_priority
from gateway.events import DrEvent, EventInterval, EventSignal, EventTarget
from gateway.planner.requests import event_requests
from gateway.planner.signals import SignalPolicy
from gateway.ven import event_rules
from tests.support.planning import site_view

NOW = datetime(2030, 6, 1, 12, tzinfo=UTC)
HOUR_S = 3600.0
CONTEXT = "http://utility.example/dr"


def event(
    event_id: str,
    *,
    priority: int = 0,
    start_h: float = -0.5,
    duration_h: float = 1.0,
    delta_kw: float = -10.0,
    market_context: str = CONTEXT,
    created_h: float = -2.0,
    targets: tuple[EventTarget, ...] = (),
    **changes: object,
) -> DrEvent:
    """A LOAD_DISPATCH delta event (shed ``-delta_kw``), active now by default."""
    base = DrEvent(
        vtn_id="VTN",
        event_id=event_id,
        modification_number=0,
        status="active",
        market_context=market_context,
        start_at=NOW + timedelta(hours=start_h),
        duration_s=duration_h * HOUR_S,
        signals=(
            EventSignal(
                "s", "LOAD_DISPATCH", "delta", (EventInterval(0, duration_h * HOUR_S, delta_kw),)
            ),
        ),
        targets=targets,
        priority=priority,
        created_at=NOW + timedelta(hours=created_h),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- modification numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "latest", "verdict"),
    [
        pytest.param(0, None, "new", id="first version of an unknown event"),
        pytest.param(3, 2, "modified", id="higher replaces"),
        pytest.param(2, 2, "same", id="equal is no change"),
        pytest.param(1, 2, "stale", id="lower is out of sequence (450)"),
        pytest.param(0, 5, "stale", id="much lower is out of sequence too"),
    ],
)
def test_rule_modification_numbers(received: int, latest: int | None, verdict: str) -> None:
    assert event_rules.classify(received, latest) == verdict


# -- randomisation ---------------------------------------------------------------------------


def test_rule_startafter_delay_is_within_the_window_and_stable_per_ven_and_version() -> None:
    window_s = 600.0
    draws = [event_rules.random_delay_s(window_s, "VTN/VEN-1", f"EVT-{i}", 0) for i in range(2000)]
    assert all(0 <= d < window_s for d in draws)
    assert 0.45 * window_s < mean(draws) < 0.55 * window_s, "uniform over the window"
    assert event_rules.random_delay_s(window_s, "VTN/VEN-1", "EVT-1", 0) == draws[1], "stable"
    assert event_rules.random_delay_s(window_s, "VTN/VEN-2", "EVT-1", 0) != draws[1], "per VEN"
    assert event_rules.random_delay_s(window_s, "VTN/VEN-1", "EVT-1", 1) != draws[1], "per version"


@pytest.mark.parametrize(
    "window_s", [pytest.param(None, id="no tolerance"), pytest.param(0.0, id="zero window")]
)
def test_rule_no_startafter_means_no_delay(window_s: float | None) -> None:
    assert event_rules.random_delay_s(window_s, "VTN/VEN-1", "EVT-1", 0) == 0.0


def test_rule_a_randomised_start_moves_the_whole_active_period() -> None:
    shifted = event("E", start_h=1.0, start_offset_s=300.0)
    start = NOW + timedelta(hours=1)
    assert not shifted.is_active_at(start + timedelta(seconds=299))
    assert shifted.is_active_at(start + timedelta(seconds=300))
    assert shifted.end_at == start + timedelta(seconds=300 + HOUR_S)
    interval = shifted.interval_at(shifted.signals[0], start + timedelta(seconds=300 + HOUR_S - 1))
    assert interval is not None


# -- implied cancel --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("known", "distributed", "cancelled"),
    [
        pytest.param([event("A"), event("B")], {"B"}, ["A"], id="missing one is cancelled"),
        pytest.param([event("A"), event("B")], set(), ["A", "B"], id="empty cancels all"),
        pytest.param([event("A")], {"A"}, [], id="present one stays"),
        pytest.param(
            [event("A", start_h=-2.0)], set(), [], id="an event already over is left alone"
        ),
        pytest.param(
            [event("A", status="cancelled", cancel_effective_at=NOW)],
            set(),
            [],
            id="a cancelled event is not cancelled again",
        ),
        pytest.param(
            [event("A", implied_cancel_at=NOW - timedelta(minutes=1))],
            set(),
            [],
            id="nor one already cancelled by implication",
        ),
        pytest.param(
            [event("A", duration_h=0.0, start_h=-100.0)],
            set(),
            ["A"],
            id="an open-ended event is never over by itself",
        ),
    ],
)
def test_rule_implied_cancel(
    known: list[DrEvent], distributed: set[str], cancelled: list[str]
) -> None:
    found = event_rules.implied_cancellations(known, distributed, NOW)
    assert [e.event_id for e in found] == cancelled


# -- priority --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "winning"),
    [
        pytest.param(
            [event("A", priority=2), event("B", priority=1)], ["B"], id="lower number wins"
        ),
        pytest.param(
            [event("A", priority=0), event("B", priority=9)], ["B"], id="0 is the lowest priority"
        ),
        pytest.param(
            [event("A", priority=1), event("B", priority=1, created_h=-1.0)],
            ["B"],
            id="equal priority: the most recently created wins",
        ),
        pytest.param(
            [event("A", priority=2), event("B", priority=1, market_context="http://other/")],
            ["A", "B"],
            id="other market contexts do not compete",
        ),
        pytest.param(
            [event("A", priority=2), event("B", priority=1, start_h=1.0)],
            ["A"],
            id="an event not in force does not compete",
        ),
        pytest.param(
            [
                event("A", priority=2),
                event("B", priority=1, targets=(EventTarget("resource_id", "site-b"),)),
            ],
            ["A"],
            id="an event for another site does not compete",
        ),
    ],
)
def test_rule_overlapping_events_resolved_by_priority(
    events: list[DrEvent], winning: list[str]
) -> None:
    assert (
        sorted(e.event_id for e in event_priority.winners(events, "site-a", "VEN-1", NOW))
        == winning
    )


# -- what the planner sees -------------------------------------------------------------------


def requested(events: list[tuple[DrEvent, str | None]]) -> list[tuple[str, str, float]]:
    found = event_requests(
        events,  # type: ignore[arg-type]
        [site_view("site-a")],
        {"site-a": 30.0},
        NOW,
        horizon_s=6 * HOUR_S,
        policy=SignalPolicy(),
    )
    return sorted((r.source, r.kind, r.power_kw) for r in found)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([(event("A"), "optIn")], [("VTN/A", "shed", 10.0)], id="opted in: asked"),
        pytest.param([(event("A"), "optOut")], [], id="opted out: nothing"),
        pytest.param([(event("A"), None)], [], id="not answered: nothing"),
        pytest.param([(event("A", test_event=True), "optIn")], [], id="a test event moves no load"),
        pytest.param(
            [(event("A", priority=2, delta_kw=-5), "optIn"), (event("B", priority=1), "optIn")],
            [("VTN/B", "shed", 10.0)],
            id="overlap: only the winning priority asks",
        ),
        pytest.param(
            [
                (event("A", priority=2), "optIn"),
                (event("B", priority=1, vtn_id="OTHER-VTN"), "optIn"),
            ],
            [("VTN/A", "shed", 10.0)],
            id="an event of another VTN neither asks of the site nor outranks its events",
        ),
        pytest.param(
            [(event("A", start_h=2.0, priority=3), "optIn"), (event("B", priority=1), "optIn")],
            [("VTN/A", "shed", 10.0), ("VTN/B", "shed", 10.0)],
            id="an upcoming event counts when it wins at its own start",
        ),
        pytest.param([(event("A", start_h=8.0), "optIn")], [], id="beyond the horizon: not yet"),
        pytest.param(
            [
                (
                    event(
                        "A",
                        status="cancelled",
                        cancel_effective_at=NOW + timedelta(minutes=5),
                    ),
                    "optIn",
                )
            ],
            [("VTN/A", "shed", 10.0)],
            id="cancelled, taking effect later: still asked until then",
        ),
        pytest.param(
            [(event("A", status="cancelled", cancel_effective_at=NOW), "optIn")],
            [],
            id="cancelled and in effect: nothing",
        ),
        pytest.param(
            [(event("A", duration_h=0.0, start_h=-50.0), "optIn")],
            [("VTN/A", "shed", 10.0)],
            id="duration 0 is open-ended",
        ),
    ],
)
def test_rule_requests_of_events(
    events: list[tuple[DrEvent, str | None]], expected: list[tuple[str, str, float]]
) -> None:
    assert requested(events) == expected


def intervals(*hours: float) -> tuple[EventSignal, ...]:
    """One signal whose intervals last ``hours``."""
    return (
        EventSignal(
            "s",
            "SIMPLE",
            "level",
            tuple(EventInterval(i, h * HOUR_S, 1.0) for i, h in enumerate(hours)),
        ),
    )


RULE_8_CASES = [
    pytest.param(24.0, intervals(8, 8, 8), [], id="three 8 h intervals fill 24 h"),
    pytest.param(
        24.0,
        intervals(*[8.0] * 8),
        ["signal s: intervals add up to 230400 s, the active period lasts 86400 s"],
        id="64 h of intervals in a 24 h active period (seen in the field)",
    ),
    pytest.param(
        24.0,
        intervals(8, 8),
        ["signal s: intervals add up to 57600 s, the active period lasts 86400 s"],
        id="intervals shorter than the active period",
    ),
    pytest.param(0.0, intervals(8, 8), [], id="an open-ended event is not checked"),
    pytest.param(24.0, intervals(8, 0), [], id="a last interval of duration 0 runs to the end"),
    pytest.param(
        24.0,
        intervals(30, 0),
        ["signal s: intervals add up to 108000 s, the active period lasts 86400 s"],
        id="an open last interval after too long ones",
    ),
    pytest.param(
        2.0,
        (*intervals(1, 1), EventSignal("t", "SIMPLE", "level", (EventInterval(0, HOUR_S, 1.0),))),
        ["signal t: intervals add up to 3600 s, the active period lasts 7200 s"],
        id="every signal is checked",
    ),
]


@pytest.mark.parametrize(("duration_h", "signals", "problems"), RULE_8_CASES)
def test_rule_8_interval_durations_add_up_to_the_active_period(
    duration_h: float, signals: tuple[EventSignal, ...], problems: list[str]
) -> None:
    checked = event("EVT", duration_h=duration_h, signals=signals)
    assert event_rules.interval_mismatches(checked) == problems


def _two_intervals(first_kw: float, second_kw: float) -> DrEvent:
    """A shed started half an hour ago: interval 0 (in force) and interval 1 (to come)."""
    return event(
        "E",
        duration_h=2.0,
        signals=(
            EventSignal(
                "s",
                "LOAD_DISPATCH",
                "delta",
                (EventInterval(0, HOUR_S, first_kw), EventInterval(1, HOUR_S, second_kw)),
            ),
        ),
    )


RAISED_CASES = [
    ("the same asks", (-10.0, -10.0), []),
    ("less of the interval in force", (-5.0, -10.0), []),
    ("more of the interval to come only", (-10.0, -20.0), []),
    ("more of the interval in force", (-12.0, -10.0), ["LOAD_DISPATCH interval 0"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "asks", "expected"), RAISED_CASES, ids=[c[0] for c in RAISED_CASES]
)
def test_a_modification_that_raises_what_already_started(
    label: str, asks: tuple[float, float], expected: list[str]
) -> None:
    found = event_rules.raised_before(_two_intervals(-10.0, -10.0), _two_intervals(*asks), NOW)
    assert [f.split(" (")[0] for f in found] == expected
