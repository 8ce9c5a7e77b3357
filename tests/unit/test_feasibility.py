"""The feasibility-domain model, table-driven with labelled cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway import feasibility as fm
from gateway.cli import main

CASES = [
    # label, checkpoint_gb, bandwidth_gbps, efficiency, expected transfer_s
    ("100 GB over 1 Gbit/s, ideal link", 100.0, 1.0, 1.0, 800.0),
    ("1 GB ResNet-50 over 10 Gbit/s at 90 %", 1.0, 10.0, 0.9, 8.0 / 9.0),
    ("17 GB (1.4 B params) over 100 Gbit/s", 17.0, 100.0, 1.0, 1.36),
]


@pytest.mark.parametrize(
    ("label", "gb", "gbps", "eff", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_transfer_time(label: str, gb: float, gbps: float, eff: float, expected: float) -> None:
    assert fm.transfer_s(gb, gbps, eff) == pytest.approx(expected)


WINDOW_CASES = [
    ("2.5 h window fits 800 s at alpha 0.1", 9000.0, True),
    ("2.0 h window does not fit 800 s", 7200.0, False),
    ("exactly alpha * window is feasible", 8000.0, True),
]


@pytest.mark.parametrize(
    ("label", "window_s", "ok"), WINDOW_CASES, ids=[c[0] for c in WINDOW_CASES]
)
def test_feasible_time(label: str, window_s: float, ok: bool) -> None:
    assert bool(fm.feasible_time(800.0, window_s, 0.1)) is ok


def test_max_checkpoint_is_the_inverse_of_transfer_time() -> None:
    window_s = np.array([3600.0, 9000.0, 34200.0])
    for gbps in (1.0, 10.0, 100.0):
        largest = fm.max_checkpoint_gb(window_s, gbps, 0.1, 0.9)
        np.testing.assert_allclose(fm.transfer_s(largest, gbps, 0.9), 0.1 * window_s)


def test_energy_and_breakeven() -> None:
    kwh = fm.migration_kwh(100.0, 800.0, 0.01, 0.11)
    assert kwh == pytest.approx(1.0 + 0.11 * 800 / 3600)
    assert fm.breakeven_s(kwh, 0.65) == pytest.approx(3600 * kwh / 0.65)
    assert np.isinf(fm.breakeven_s(kwh, 0.0))


def test_assess_vectorises_over_jobs_and_targets() -> None:
    params = fm.FeasibilityParams(alpha=0.1, efficiency=1.0, network_kwh_per_gb=0.0, idle_kw=0.0)
    gb = np.array([[1.0], [100.0]])  # two jobs
    window = np.array([[600.0, 36000.0]])  # two targets
    result = fm.assess(
        checkpoint_gb=gb,
        bandwidth_gbps=1.0,
        window_s=window,
        checkpoint_write_s=0.0,
        restore_s=0.0,
        job_power_kw=0.65,
        params=params,
    )
    assert result.transfer_s.shape == (2, 2)
    np.testing.assert_array_equal(result.feasible_time, [[True, True], [False, True]])
    np.testing.assert_array_equal(result.feasible, result.feasible_time)


@pytest.mark.parametrize(
    ("field", "value"),
    [("alpha", 0.0), ("alpha", 1.5), ("efficiency", 0.0), ("network_kwh_per_gb", -1.0)],
)
def test_params_reject_out_of_range(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        fm.FeasibilityParams(**{field: value})


def _feasibility_json(capsys: pytest.CaptureFixture[str], window_h: str) -> dict[str, object]:
    code = main(
        [
            "feasibility",
            "--checkpoint-gb", "100",
            "--bandwidth-gbps", "1",
            "--window-h", window_h,
            "--efficiency", "1",
            "--checkpoint-write-s", "0",
            "--restore-s", "0",
            "--alpha", "0.1",
            "--json",
        ]
    )  # fmt: skip
    assert code == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_cli_acceptance_case(capsys: pytest.CaptureFixture[str]) -> None:
    result = _feasibility_json(capsys, "2.5")
    assert result["transfer_s"] == 800.0
    assert result["feasible_time"] is True
    assert set(result) == {
        "transfer_s",
        "migration_s",
        "migration_kwh",
        "breakeven_s",
        "feasible_time",
        "feasible_energy",
        "max_checkpoint_gb",
    }
    assert _feasibility_json(capsys, "2")["feasible_time"] is False


def test_cli_rejects_negative_bandwidth(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["feasibility", "--checkpoint-gb", "1", "--bandwidth-gbps", "-1", "--window-h", "1"])
    assert exc.value.code == 2
    assert "--bandwidth-gbps" in capsys.readouterr().err
