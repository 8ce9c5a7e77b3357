"""``dr-gateway evaluate`` on the bundled scenario (a short window) and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.planner.policies import POLICIES
from gateway.planner.policy_names import POLICY_NAMES


def test_the_parser_names_every_policy_in_order() -> None:
    assert tuple(POLICIES) == POLICY_NAMES


METRICS = {
    "grid_kwh",
    "renewable_used_kwh",
    "renewable_share",
    "curtailed_kwh",
    "migrations",
    "migration_downtime_s",
    "migration_kwh",
    "jct_mean_s",
    "jct_p95_s",
    "jct_cv",
    "jobs_unfinished",
    "fluid_fraction",
}


def test_evaluate_prints_a_row_per_policy_and_writes_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "eval.json", tmp_path / "eval.png"
    code = main(
        ["evaluate", "--start", "2001-06-01", "--days", "3", "--workload", "rate_per_h=3,seed=4",
         "--json", str(out_json), "--plot", str(out_png)]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    for name in POLICIES:
        assert name in table
    document = json.loads(out_json.read_text())
    assert set(document["policies"]) == set(POLICIES)
    for metrics in document["policies"].values():
        assert set(metrics) >= METRICS
    assert {"renewable_used_kwh", "renewable_share"} <= set(document["fluid_bound"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    static = document["policies"]["static"]
    assert static["migrations"] == 0


def test_evaluate_runs_on_sites_and_traces_it_has_never_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text(
        "[[site]]\nid = 'a'\ngpus_total = 8\nit_power_max_kw = 6.0\npue = 1.2\n"
        "wan_bandwidth_gbps = 10.0\n\n"
        "[[site]]\nid = 'b'\ngpus_total = 8\nit_power_max_kw = 6.0\npue = 1.3\n"
        "wan_bandwidth_gbps = 1.0\n"
    )
    traces = tmp_path / "traces.csv"
    rows = ["timestamp,a,b"]
    for hour in range(72):
        sun = max(0.0, 10 - abs(hour % 24 - 12)) * 1.5
        rows.append(
            f"2030-03-01T{hour % 24:02d}:00:00Z,{sun:.1f},{15 - sun:.1f}".replace(
                "2030-03-01", f"2030-03-{1 + hour // 24:02d}"
            )
        )
    traces.write_text("\n".join(rows) + "\n")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "job_id,submit_at,gpus,power_kw,checkpoint_gb,work_gpu_h,site_id,migratable\n"
        "x1,2030-03-01T00:00:00Z,2,1.3,5,40,a,true\n"
        "x2,2030-03-01T01:00:00Z,1,0.6,120,10,,false\n"
    )
    assert (
        main(["evaluate", "--sites", str(sites), "--traces", str(traces), "--jobs", str(jobs)]) == 0
    )
    assert "2 sites, 2 jobs" in capsys.readouterr().out


def test_evaluate_bad_input_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces = tmp_path / "bad.csv"
    traces.write_text("time,tucson-az\n2001-01-01T00:00:00Z,1\n")
    assert main(["evaluate", "--traces", str(traces)]) == 2
    err = capsys.readouterr().err
    assert str(traces) in err and "timestamp" in err
    assert main(["evaluate", "--policies", "static,nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
