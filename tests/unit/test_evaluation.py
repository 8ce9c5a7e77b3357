"""The trace-driven evaluator: hand-computed cases and properties (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.evaluation.engine import EvaluationParams, simulate
from gateway.evaluation.input_jobs import JobsTable
from gateway.evaluation.input_sites import SiteSpec
from gateway.evaluation.input_traces import Traces
from gateway.evaluation.run import bounds
from gateway.feasibility import FeasibilityParams
from gateway.planner.params import PolicyParams, move_cost
from gateway.planner.policies import POLICIES

START = datetime(2001, 6, 1, tzinfo=UTC)
STEP_S = 900.0
PARAMS = PolicyParams(feasibility=FeasibilityParams(), max_migrations=8, step_s=STEP_S)


def table(rows: list[tuple[float, int, float, float, float, int, bool]]) -> JobsTable:
    """(submit_s, gpus, power_kw, checkpoint_gb, work_gpu_h, site_index, migratable) rows."""
    rows = sorted(rows, key=lambda r: r[0])
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
    return JobsTable(
        job_ids=tuple(f"j{i}" for i in range(len(rows))),
        submit_s=np.array(cols[0], dtype=np.float64),
        gpus=np.array(cols[1], dtype=np.int64),
        power_kw=np.array(cols[2], dtype=np.float64),
        checkpoint_gb=np.array(cols[3], dtype=np.float64),
        work_gpu_h=np.array(cols[4], dtype=np.float64),
        site_index=np.array(cols[5], dtype=np.int64),
        migratable=np.array(cols[6], dtype=np.bool_),
    )


def two_sites(dark_kw: float, sunny_kw: float, steps: int) -> tuple[tuple[SiteSpec, ...], Traces]:
    sites = (SiteSpec("dark", 8, 10.0, 1.0, 10.0), SiteSpec("sunny", 8, 10.0, 1.0, 10.0))
    renewable = np.tile([dark_kw, sunny_kw], (steps, 1))
    return sites, Traces(START, STEP_S, ("dark", "sunny"), renewable)


def test_static_energy_by_hand() -> None:
    sites, traces = two_sites(0.5, 0.0, steps=8)
    # One job of 2 kW pinned to "dark" for 1 h of 1 GPU: 2 kWh of load, 0.5 kW renewable.
    jobs = table([(0.0, 1, 2.0, 1.0, 1.0, 0, True)])
    m = simulate(sites, traces, jobs, "static", EvaluationParams(PARAMS)).metrics
    assert m["load_kwh"] == pytest.approx(2.0)
    assert m["renewable_used_kwh"] == pytest.approx(0.5)
    assert m["grid_kwh"] == pytest.approx(1.5)
    assert m["jct_mean_s"] == pytest.approx(3600.0)
    assert m["migrations"] == 0 and m["jobs_unfinished"] == 0


def test_a_job_follows_the_green_with_the_models_downtime() -> None:
    sites, traces = two_sites(0.0, 20.0, steps=96)
    jobs = table([(0.0, 2, 1.3, 5.0, 40.0, 0, True)])  # pinned to the dark site at first
    params = EvaluationParams(PolicyParams(**{**PARAMS.__dict__, "min_residence_s": 0.0}))
    m = simulate(sites, traces, jobs, "feasibility-aware", params).metrics
    expected = move_cost(5.0, 2, 10.0, PARAMS)
    assert m["migrations"] == 1
    assert m["migration_downtime_s"] == pytest.approx(float(expected.migration_s))
    assert m["migration_kwh"] == pytest.approx(float(expected.energy_kwh))
    # After the move the job runs on the sunny site's renewable power.
    assert m["renewable_used_kwh"] > 0.9 * m["load_kwh"]
    static = simulate(sites, traces, jobs, "static", params).metrics
    assert m["grid_kwh"] < static["grid_kwh"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[tuple[SiteSpec, ...], Traces, JobsTable]:
    n_sites = draw(st.integers(2, 4))
    steps = draw(st.integers(8, 64))
    sites = tuple(
        SiteSpec(
            f"s{i}",
            draw(st.integers(2, 12)),
            draw(st.floats(2.0, 12.0)),
            draw(st.floats(1.0, 1.6)),
            draw(st.sampled_from([1.0, 10.0, 100.0])),
        )
        for i in range(n_sites)
    )
    renewable = np.array(
        draw(
            st.lists(
                st.lists(st.floats(0.0, 20.0), min_size=n_sites, max_size=n_sites),
                min_size=steps,
                max_size=steps,
            )
        )
    )
    n_jobs = draw(st.integers(0, 12))
    rows = []
    for _ in range(n_jobs):
        gpus = draw(st.integers(1, 2))
        rows.append(
            (
                draw(st.floats(0.0, steps * STEP_S * 0.8)),
                gpus,
                gpus * draw(st.floats(0.3, 0.7)),
                draw(st.floats(0.5, 150.0)),
                draw(st.floats(0.05, 20.0)),
                draw(st.integers(-1, n_sites - 1)),
                draw(st.booleans()),
            )
        )
    return sites, Traces(START, STEP_S, tuple(s.id for s in sites), renewable), table(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_properties_of_every_policy(
    scenario: tuple[tuple[SiteSpec, ...], Traces, JobsTable],
) -> None:
    sites, traces, jobs = scenario
    limits = bounds(sites, traces, jobs)
    params = EvaluationParams(
        PolicyParams(**{**PARAMS.__dict__, "min_residence_s": 0.0}),
        check_invariants=True,  # no job lost or duplicated, GPU books, capacity
        record=True,
    )
    for policy in POLICIES:
        result = simulate(sites, traces, jobs, policy, params)
        m, rec = result.metrics, result.record
        assert rec is not None
        load, used = np.array(rec.load_kwh), np.array(rec.renewable_used_kwh)
        grid, renewable = np.array(rec.grid_kwh), np.array(rec.renewable_kwh)
        # Every site and step balances.
        np.testing.assert_allclose(load, used + grid, atol=1e-9)
        assert np.all(used <= renewable + 1e-9) and np.all(used <= load + 1e-9)
        assert np.all(grid >= -1e-9)
        # No policy uses more renewable energy than the relaxed fluid bound.
        assert m["renewable_used_kwh"] <= limits.relaxed_kwh + 1e-6
        # Every job is finished or still counted; work is never created or lost.
        assert m["jobs_finished"] + m["jobs_unfinished"] == len(jobs)
        assert 0 <= m["work_done_gpu_h"] <= float(jobs.work_gpu_h.sum()) + 1e-9


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_static_without_waiting_stays_under_the_fluid_bound(
    scenario: tuple[tuple[SiteSpec, ...], Traces, JobsTable],
) -> None:
    sites, traces, jobs = scenario
    # Room for every job at once at every site: nobody waits, nobody pauses.
    roomy = tuple(SiteSpec(s.id, 1000, 1000.0, s.pue, s.wan_bandwidth_gbps) for s in sites)
    limits = bounds(roomy, traces, jobs)
    m = simulate(roomy, traces, jobs, "static", EvaluationParams(PARAMS)).metrics
    assert m["renewable_used_kwh"] <= limits.fluid_kwh + 1e-6
