"""The bounds on renewable energy use, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.evaluation import fluid


def test_demand_splits_jobs_at_step_boundaries() -> None:
    demand = fluid.demand_kw(
        submit_s=np.array([450.0, 0.0]),
        run_s=np.array([1800.0, 300.0]),
        power_kw=np.array([2.0, 9.0]),
        n_steps=4,
        step_s=900.0,
    )
    np.testing.assert_allclose(demand, [1.0 + 3.0, 2.0, 1.0, 0.0])


def test_demand_beyond_the_trace_is_dropped() -> None:
    demand = fluid.demand_kw(np.array([0.0]), np.array([10 * 900.0]), np.array([1.0]), 3, 900.0)
    np.testing.assert_allclose(demand, [1.0, 1.0, 1.0])


def test_usable_is_capped_per_site() -> None:
    renewable = np.array([[10.0, 1.0], [0.0, 0.0]])
    usable = fluid.usable_kwh(renewable, np.array([4.0, 4.0]), np.array([1.5, 1.0]), 3600.0)
    np.testing.assert_allclose(usable, [6.0 + 1.0, 0.0])


RELAXED = [
    # label, usable per step [kWh], release step per job, energy [kWh], rate [kWh per step], bound
    ("energy caps a lone job", [0.0, 5.0, 5.0], [0], [2.0], [1.0], 2.0),
    ("rate caps a lone job", [5.0, 5.0], [0], [3.0], [1.0], 2.0),
    ("a job cannot run before its release", [5.0, 0.0], [1], [3.0], [5.0], 0.0),
    ("the later job gets the later step", [1.0, 1.0], [0, 1], [1.0, 1.0], [1.0, 1.0], 2.0),
    ("supply is shared", [1.5, 0.0], [0, 0], [1.0, 1.0], [1.0, 1.0], 1.5),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "usable", "release", "energy", "rate", "expected"),
    RELAXED,
    ids=[c[0] for c in RELAXED],
)
def test_relaxed_bound(
    label: str,
    usable: list[float],
    release: list[int],
    energy: list[float],
    rate: list[float],
    expected: float,
) -> None:
    step_s = 3600.0
    got = fluid.relaxed_bound_kwh(
        np.array(usable),
        np.array(release, dtype=np.float64) * step_s,
        np.array(energy),
        np.array(rate),  # kW over a 1 h step = kWh per step
        step_s,
    )
    assert got == pytest.approx(expected)


def test_relaxed_bound_is_at_least_the_no_wait_bound() -> None:
    rng = np.random.default_rng(3)
    step_s = 900.0
    for _ in range(20):
        n_steps, n_jobs = 96, 30
        usable = rng.uniform(0, 5, n_steps)
        submit = rng.uniform(0, n_steps * step_s / 2, n_jobs)
        run = rng.uniform(600, 20000, n_jobs)
        power = rng.uniform(0.5, 3, n_jobs)
        demand = fluid.demand_kw(submit, run, power, n_steps, step_s)
        no_wait = fluid.fluid_bound_kwh(usable, demand, 1.0, step_s)
        relaxed = fluid.relaxed_bound_kwh(usable, submit, power * run / 3600, power, step_s)
        assert relaxed >= no_wait - 1e-9
