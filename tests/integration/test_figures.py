"""The paper's figures: their tables against hand-computed points, and the files written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gateway.cli import main
from gateway.errors import InputError
from gateway.evaluation import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DOMAIN_CASES = [
    # label, window_h, bandwidth_gbps, expected max_checkpoint_gb (0.1 * s * 0.9 * Gbit/s / 8)
    ("1 Gbit/s, 2.5 h: 0.1*9000*0.9*1/8", 2.5, 1.0, 101.25),
    ("10 Gbit/s, 0.25 h: a tenth of the window, ten times the link", 0.25, 10.0, 101.25),
    ("100 Gbit/s, 12 h: 0.1*43200*0.9*100/8", 12.0, 100.0, 48600.0),
]


@pytest.mark.parametrize(
    ("label", "window_h", "gbps", "expected"), DOMAIN_CASES, ids=[c[0] for c in DOMAIN_CASES]
)
def test_feasibility_domain_points(
    label: str, window_h: float, gbps: float, expected: float
) -> None:
    table = figures.feasibility_domain(figures.DEFAULT_WINDOW_H)
    row = table[np.isclose(table["window_h"], window_h) & (table["bandwidth_gbps"] == gbps)]
    assert len(row) == 1
    assert row["max_checkpoint_gb"].iloc[0] == pytest.approx(expected)


def test_feasibility_domain_shape_and_columns() -> None:
    table = figures.feasibility_domain(np.array([1.0, 2.0]), bandwidths_gbps=(1, 10))
    assert list(table.columns) == ["window_h", "bandwidth_gbps", "max_checkpoint_gb"]
    assert len(table) == 4
    assert figures.DEFAULT_WINDOW_H[0] == 0.25 and figures.DEFAULT_WINDOW_H[-1] == 12.0


@pytest.mark.parametrize(
    ("label", "kwargs"),
    [
        ("alpha above 1", {"alpha": 1.5}),
        ("efficiency 0", {"efficiency": 0.0}),
        ("a zero bandwidth", {"bandwidths_gbps": (0, 10)}),
    ],
)
def test_feasibility_domain_rejects_bad_arguments(label: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        figures.feasibility_domain(np.array([1.0]), **kwargs)  # type: ignore[arg-type]


BREAKEVEN_CASES = [
    # label, checkpoint_gb, network_kwh_per_gb, migration_s, migration_kwh, breakeven_s
    # defaults: 10 Gbit/s at 0.9, write 0.6 GB/s, restore 1.5 GB/s, idle 0.11 kW, job 0.65 kW
    # 10 GB: 10/0.6 + 80/9 + 10/1.5 = 32.2222 s; 0.1 + 0.11*32.2222/3600 kWh; *3600/0.65 s
    ("10 GB at 0.01 kWh/GB: under 10 min", 10.0, 0.01, 32.22222, 0.10098457, 559.2991),
    # 1 GB, free network: only the idle GPU while stopped, 0.11/0.65 * 3.2222 s
    ("1 GB, free network", 1.0, 0.0, 3.222222, 9.845679e-5, 0.5452991),
]


@pytest.mark.parametrize(
    ("label", "gb", "net", "mig_s", "mig_kwh", "be_s"),
    BREAKEVEN_CASES,
    ids=[c[0] for c in BREAKEVEN_CASES],
)
def test_breakeven_points(
    label: str, gb: float, net: float, mig_s: float, mig_kwh: float, be_s: float
) -> None:
    table = figures.breakeven_sweep(np.array([gb]), network_kwh_per_gb=(net,))
    row = table.iloc[0]
    assert row["migration_s"] == pytest.approx(mig_s, rel=1e-6)
    assert row["migration_kwh"] == pytest.approx(mig_kwh, rel=1e-6)
    assert row["breakeven_s"] == pytest.approx(be_s, rel=1e-6)


def test_breakeven_table_layout() -> None:
    table = figures.breakeven_sweep(figures.DEFAULT_CHECKPOINT_GB)
    assert list(table.columns) == [
        "checkpoint_gb",
        "network_kwh_per_gb",
        "migration_s",
        "migration_kwh",
        "breakeven_s",
    ]
    assert len(table) == 5 * len(figures.DEFAULT_CHECKPOINT_GB)
    assert table["checkpoint_gb"].min() == pytest.approx(1.0)
    assert table["checkpoint_gb"].max() == pytest.approx(200.0)
    # more network energy per GB never pays back sooner
    wide = table.pivot(index="checkpoint_gb", columns="network_kwh_per_gb", values="breakeven_s")
    assert np.all(np.diff(wide.to_numpy(), axis=1) > 0)


def _evaluation() -> dict[str, object]:
    base: dict[str, float | None] = {
        "grid_kwh": 120.0,
        "renewable_used_kwh": 60.0,
        "renewable_share": 0.333,
        "curtailed_kwh": 40.0,
        "migrations": 0,
        "migration_downtime_s": 0.0,
        "migration_kwh": 0.0,
        "jct_mean_s": 36000.0,
        "jct_p95_s": 72000.0,
        "jct_cv": 0.4,
        "jobs_unfinished": 1,
        "fluid_fraction": 0.6,
    }
    aware = {**base, "grid_kwh": 95.0, "renewable_used_kwh": 85.0, "migrations": 7}
    aware["jct_cv"] = None  # the evaluator may leave a metric empty
    del aware["curtailed_kwh"]
    return {
        "policies": {"static": base, "feasibility-aware": aware},
        "fluid_bound": {"renewable_used_kwh": 100.0, "renewable_share": 0.55},
    }


def test_policy_comparison_table_keeps_order_and_adds_fraction_of_bound() -> None:
    table = figures.policy_comparison(_evaluation())
    assert list(table["policy"]) == ["static", "feasibility-aware"]
    assert list(table.columns) == [
        "policy",
        *figures.POLICY_METRICS,
        "renewable_fraction_of_bound",
    ]
    assert list(table["renewable_fraction_of_bound"]) == pytest.approx([0.6, 0.85])
    assert list(table["migrations"]) == [0.0, 7.0]
    assert math.isnan(table["jct_cv"].iloc[1])
    assert math.isnan(table["curtailed_kwh"].iloc[1])


@pytest.mark.parametrize(
    ("label", "document", "message"),
    [
        ("no policies", {"policies": {}, "fluid_bound": {"renewable_used_kwh": 1.0}}, "policies"),
        ("no bound", {"policies": {"static": {}}}, "fluid_bound"),
        (
            "a plotted metric missing",
            {"policies": {"static": {"grid_kwh": 1.0}}, "fluid_bound": {"renewable_used_kwh": 1}},
            "lacks renewable_used_kwh, migrations, jct_p95_s",
        ),
        (
            "a metric that is not a number",
            {
                "policies": {
                    "static": {
                        "grid_kwh": "lots",
                        "renewable_used_kwh": 1,
                        "migrations": 0,
                        "jct_p95_s": 1,
                    }
                },
                "fluid_bound": {"renewable_used_kwh": 1},
            },
            "policies.static.grid_kwh: expected a number",
        ),
    ],
)
def test_policy_comparison_rejects_bad_documents(
    label: str, document: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        figures.policy_comparison(document)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("figures")
    evaluation = out / "evaluation.json"
    evaluation.write_text(json.dumps(_evaluation()))
    return figures.write_paper_figures(out / "docs", evaluation)


def test_write_paper_figures_writes_pngs_and_csvs(written: list[Path]) -> None:
    assert [p.name for p in written] == [
        "feasibility-domain.png",
        "feasibility-domain.csv",
        "breakeven.png",
        "breakeven.csv",
        "policy-comparison.png",
        "policy-comparison.csv",
    ]
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
        else:
            assert len(pd.read_csv(path)) > 0
    comparison = pd.read_csv(written[-1])
    assert list(comparison["policy"]) == ["static", "feasibility-aware"]


def test_cli_figures_prints_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["figures", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == [
        "feasibility-domain.png",
        "feasibility-domain.csv",
        "breakeven.png",
        "breakeven.csv",
    ]
    assert all(Path(p).is_file() for p in printed)


def test_cli_figures_bad_evaluation_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text('{"policies": {}}')
    out = tmp_path / "out"
    assert main(["figures", "--out", str(out), "--evaluation", str(evaluation)]) == 2
    assert f"{evaluation}: 'policies' must be a non-empty object" in capsys.readouterr().err
    assert not out.exists()  # nothing is written when the evaluation is bad
