"""Step limits derived from the feasibility model (``gateway/migration/deadlines.py``) and their
settings (``[feasibility] timeout_margin``, ``timeout_floor_s``, ``[site_controller]``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.migration.deadlines import (
    StepTimeouts,
    TimedState,
    expected_step_s,
    overrun,
    step_limit_s,
)
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
TIMEOUTS = StepTimeouts(
    margin=2.0, floor_s=30.0, efficiency=0.9, checkpoint_write_gb_per_s=0.6, restore_gb_per_s=1.5
)

# (label, state, checkpoint_gb, bandwidth_gbps, expected_s)
EXPECTED: list[tuple[str, TimedState, float, float, float]] = [
    ("reserve is one call", "target_reserved", 3.0, 10.0, 0.0),
    ("checkpoint at the write rate", "checkpointing", 3.0, 10.0, 3.0 / 0.6),
    ("transfer at the effective bandwidth", "transferring", 3.0, 10.0, 8 * 3.0 / (0.9 * 10.0)),
    ("transfer of 100 GB at 1 Gbit/s", "transferring", 100.0, 1.0, 800.0 / 0.9),
    ("restore at the read rate", "restoring", 3.0, 10.0, 3.0 / 1.5),
]


@pytest.mark.parametrize(
    ("label", "state", "checkpoint_gb", "bandwidth_gbps", "expected_s"),
    EXPECTED,
    ids=[e[0] for e in EXPECTED],
)
def test_step_limit_is_margin_times_expected_plus_floor(
    label: str, state: TimedState, checkpoint_gb: float, bandwidth_gbps: float, expected_s: float
) -> None:
    assert expected_step_s(state, checkpoint_gb, bandwidth_gbps, TIMEOUTS) == pytest.approx(
        expected_s
    )
    assert step_limit_s(state, checkpoint_gb, bandwidth_gbps, TIMEOUTS) == pytest.approx(
        2.0 * expected_s + 30.0
    )


def test_overrun_only_past_the_limit() -> None:
    entered_at = datetime(2026, 6, 21, tzinfo=UTC)
    limit_s = 2.0 * 5.0 + 30.0  # checkpoint of 3 GB
    at_limit = entered_at + timedelta(seconds=limit_s)
    assert overrun("checkpointing", entered_at, at_limit, 3.0, 10.0, TIMEOUTS) is None
    late = overrun(
        "checkpointing", entered_at, at_limit + timedelta(seconds=1), 3.0, 10.0, TIMEOUTS
    )
    assert late is not None
    assert (late.elapsed_s, late.limit_s) == pytest.approx((limit_s + 1, limit_s))
    assert str(late).startswith("checkpointing overran its limit: 41.0 s > 40.0 s")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"margin": 0.5}, "margin must be >= 1"),
        ({"floor_s": -1.0}, "floor_s must be >= 0"),
        ({"efficiency": 0.0}, "efficiency"),
        ({"restore_gb_per_s": 0.0}, "must be > 0"),
    ],
)
def test_bad_timeouts_are_refused(changes: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        StepTimeouts(**changes)


def test_example_settings_give_the_documented_defaults() -> None:
    settings = load_settings(ROOT / "config" / "example.toml")
    assert (settings.feasibility.timeout_margin, settings.feasibility.timeout_floor_s) == (3, 60)
    calls = settings.site_controller
    assert (calls.retry_attempts, calls.retry_initial_s, calls.retry_max_s) == (3, 0.25, 2.0)
    assert StepTimeouts().margin == settings.feasibility.timeout_margin
