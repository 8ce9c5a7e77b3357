"""The seed paper's findings as figures, each a PNG with its data as CSV beside it.

Data functions build tables from the feasibility-domain model (``gateway.feasibility``) or
from the offline evaluator's JSON document; plotting functions draw one table each.
The figures are drawn on matplotlib's Agg canvas and never touch a display.
Paper: Tomei, Mayer, Alcini, Salsano, arXiv 2511.16182 (``docs/architecture.md``,
'Feasibility domain').
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gateway import feasibility as fm
from gateway.errors import InputError

DPI = 130
SECONDS_PER_HOUR = 3600.0

# H200 calibration (docs/measured-data.md): parameters and full fp32 AdamW checkpoint [GB].
H200_CHECKPOINTS_GB: tuple[tuple[str, float], ...] = (
    ("163 M", 1.96),
    ("406 M", 4.88),
    ("1.42 B", 17.0),
)
# Ranges the paper considers.
CHECKPOINT_RANGE_GB = (1.0, 100.0)  # ResNet-50 ... large LLMs (and beyond)
WINDOW_RANGE_H = (2.5, 9.5)  # mean renewable windows from CAISO curtailment data

DEFAULT_WINDOW_H = np.linspace(0.25, 12.0, 48)  # 0.25 h steps
DEFAULT_CHECKPOINT_GB = np.geomspace(1.0, 200.0, 61)

POLICY_METRICS = (
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
)
PLOTTED_METRICS = ("grid_kwh", "renewable_used_kwh", "migrations", "jct_p95_s")


def _positive_1d(name: str, values: object) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be finite and > 0")
    return array


# --- data -------------------------------------------------------------------------------


def feasibility_domain(
    window_h: np.ndarray,
    bandwidths_gbps: Sequence[float] = (1, 10, 100),
    alpha: float = 0.1,
    efficiency: float = 0.9,
) -> pd.DataFrame:
    """Largest checkpoint whose WAN transfer fits in ``alpha`` of the window.

    One row per (bandwidth, window), columns window_h, bandwidth_gbps, max_checkpoint_gb.
    The bound is the model's ``max_checkpoint_gb``: transfer time only; writing and
    restoring the checkpoint shorten it further.

    window_h: renewable-window lengths [h]; bandwidths_gbps: nominal WAN bandwidths [Gbit/s];
    alpha: share of the window a migration may take [-]; efficiency: usable share of the
    bandwidth [-].
    """
    fm.FeasibilityParams(alpha=alpha, efficiency=efficiency)  # validates both
    windows = _positive_1d("window_h", window_h)
    bandwidths = _positive_1d("bandwidths_gbps", bandwidths_gbps)
    bw, win = np.meshgrid(bandwidths, windows, indexing="ij")
    gb = fm.max_checkpoint_gb(win * SECONDS_PER_HOUR, bw, alpha, efficiency)
    return pd.DataFrame(
        {
            "window_h": win.ravel(),
            "bandwidth_gbps": bw.ravel(),
            "max_checkpoint_gb": np.asarray(gb, dtype=np.float64).ravel(),
        }
    )


def breakeven_sweep(
    checkpoint_gb: np.ndarray,
    network_kwh_per_gb: Sequence[float] = (0.001, 0.01, 0.06, 0.2, 1.0),
    bandwidth_gbps: float = 10,
    job_power_kw: float = 0.65,
    idle_kw: float = 0.11,
    write_gb_per_s: float = 0.6,
    restore_gb_per_s: float = 1.5,
    efficiency: float = 0.9,
) -> pd.DataFrame:
    """Migration time, energy and break-even time over checkpoint size and network energy.

    One row per (network energy, checkpoint), columns checkpoint_gb, network_kwh_per_gb,
    migration_s, migration_kwh, breakeven_s. Defaults: one H200-class GPU (docs/measured-data.md).

    checkpoint_gb: checkpoint sizes [GB]; network_kwh_per_gb: network energy per GB moved
    [kWh/GB]; bandwidth_gbps: nominal WAN bandwidth [Gbit/s]; job_power_kw: the job's power
    while training [kW]; idle_kw: its power while stopped [kW]; write_gb_per_s: checkpoint
    write rate [GB/s]; restore_gb_per_s: checkpoint load rate [GB/s]; efficiency: usable
    share of the bandwidth [-].
    """
    fm.FeasibilityParams(efficiency=efficiency, idle_kw=idle_kw)  # validates both
    sizes = _positive_1d("checkpoint_gb", checkpoint_gb)
    network = np.atleast_1d(np.asarray(network_kwh_per_gb, dtype=np.float64))
    if network.ndim != 1 or network.size == 0 or np.any(~np.isfinite(network) | (network < 0)):
        raise ValueError(
            "network_kwh_per_gb must be a non-empty 1-D sequence of finite values >= 0"
        )
    for name, value in (
        ("bandwidth_gbps", bandwidth_gbps),
        ("job_power_kw", job_power_kw),
        ("write_gb_per_s", write_gb_per_s),
        ("restore_gb_per_s", restore_gb_per_s),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    net, gb = np.meshgrid(network, sizes, indexing="ij")
    t_migration = fm.migration_s(
        fm.checkpoint_write_s(gb, write_gb_per_s),
        fm.transfer_s(gb, bandwidth_gbps, efficiency),
        fm.restore_s(gb, restore_gb_per_s),
    )
    e_migration = fm.migration_kwh(gb, t_migration, net, idle_kw)
    t_breakeven = fm.breakeven_s(e_migration, job_power_kw)
    return pd.DataFrame(
        {
            "checkpoint_gb": gb.ravel(),
            "network_kwh_per_gb": net.ravel(),
            "migration_s": np.asarray(t_migration, dtype=np.float64).ravel(),
            "migration_kwh": np.asarray(e_migration, dtype=np.float64).ravel(),
            "breakeven_s": np.asarray(t_breakeven, dtype=np.float64).ravel(),
        }
    )


def _number(where: str, value: object) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: expected a number, got {value!r}")
    return float(value)


def policy_comparison(evaluation: Mapping[str, object]) -> pd.DataFrame:
    """One row per policy, in the document's order, from the evaluator's JSON document.

    ``evaluation`` is ``{"policies": {NAME: {METRIC: value}}, "fluid_bound":
    {"renewable_used_kwh": float, "renewable_share": float}}``. Columns: policy, the known
    metrics (``POLICY_METRICS``; NaN where absent or null), any further numeric metrics, and
    renewable_fraction_of_bound = renewable_used_kwh / fluid bound's renewable_used_kwh [-].
    Raises InputError when the document lacks policies, the bound or a plotted metric.
    """
    policies = evaluation.get("policies")
    if not isinstance(policies, Mapping) or not policies:
        raise InputError("'policies' must be a non-empty object")
    bound = evaluation.get("fluid_bound")
    if not isinstance(bound, Mapping) or "renewable_used_kwh" not in bound:
        raise InputError("'fluid_bound.renewable_used_kwh' is missing")
    bound_kwh = _number("fluid_bound.renewable_used_kwh", bound["renewable_used_kwh"])
    if not bound_kwh > 0:
        raise InputError(f"fluid_bound.renewable_used_kwh must be > 0, got {bound_kwh}")

    extra: list[str] = []
    rows: list[dict[str, object]] = []
    for name, metrics in policies.items():
        if not isinstance(metrics, Mapping):
            raise InputError(f"policies.{name} must be an object of metrics")
        missing = [m for m in PLOTTED_METRICS if m not in metrics]
        if missing:
            raise InputError(f"policies.{name} lacks {', '.join(missing)}")
        row: dict[str, object] = {"policy": str(name)}
        for metric, value in metrics.items():
            row[str(metric)] = _number(f"policies.{name}.{metric}", value)
            if metric not in POLICY_METRICS and metric not in extra:
                extra.append(str(metric))
        rows.append(row)
    columns = ["policy", *POLICY_METRICS, *extra]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table[list(columns[1:])] = table[list(columns[1:])].astype(np.float64)
    table["renewable_fraction_of_bound"] = table["renewable_used_kwh"] / bound_kwh
    return table


# --- plots ------------------------------------------------------------------------------


def _new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, table: pd.DataFrame, png_path: Path) -> tuple[Path, Path]:
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=DPI)
    csv_path = png_path.with_suffix(".csv")
    table.to_csv(csv_path, index=False, float_format="%.6g")
    return png_path, csv_path


def _mark_h200(ax: Axes, *, horizontal: bool) -> None:
    for label, gb in H200_CHECKPOINTS_GB:
        if horizontal:
            ax.axhline(gb, color="0.35", linestyle=":", linewidth=1)
            ax.annotate(
                f"H200 {label} params: {gb:g} GB",
                xy=(1.0, gb),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 2),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=8,
                color="0.25",
            )
        else:
            first = gb == H200_CHECKPOINTS_GB[0][1]
            ax.axvline(
                gb,
                color="0.35",
                linestyle=":",
                linewidth=1,
                label="H200 checkpoints\n(parameters: size)" if first else None,
            )
            ax.annotate(
                f"{label}: {gb:g} GB",
                xy=(gb, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -4),
                textcoords="offset points",
                rotation=90,
                ha="left",
                va="top",
                fontsize=8,
                color="0.25",
            )


def plot_feasibility_domain(
    table: pd.DataFrame, png_path: Path, *, alpha: float = 0.1, efficiency: float = 0.9
) -> tuple[Path, Path]:
    """Draw ``feasibility_domain``'s table; write the PNG and the CSV beside it.

    alpha and efficiency [-] only label the figure; pass the values the table was built with.
    """
    figure = _new_figure(8.5, 5.6)
    ax = figure.add_subplot()
    ax.axvspan(*WINDOW_RANGE_H, color="tab:green", alpha=0.10, linewidth=0)
    ax.axhspan(*CHECKPOINT_RANGE_GB, color="tab:orange", alpha=0.10, linewidth=0)
    for bandwidth in sorted(table["bandwidth_gbps"].unique()):
        group = table[table["bandwidth_gbps"] == bandwidth]
        (line,) = ax.plot(group["window_h"], group["max_checkpoint_gb"], linewidth=2)
        ax.annotate(  # label the line itself, right of the CAISO band
            f"{float(bandwidth):g} Gbit/s",
            xy=(float(group["window_h"].iloc[-1]), float(group["max_checkpoint_gb"].iloc[-1])),
            xytext=(-6, 6),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=10,
            fontweight="bold",
            color=line.get_color(),
        )
    ax.set_yscale("log")
    ax.set_xlim(0.0, float(table["window_h"].max()))
    ax.set_ylim(0.5, float(table["max_checkpoint_gb"].max()) * 2)
    _mark_h200(ax, horizontal=True)
    ax.text(
        float(np.mean(WINDOW_RANGE_H)),
        0.97,
        f"mean CAISO curtailment windows {WINDOW_RANGE_H[0]:g}–{WINDOW_RANGE_H[1]:g} h",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="top",
        fontsize=9,
        color="darkgreen",
    )
    ax.text(
        0.15,
        CHECKPOINT_RANGE_GB[0] * 1.08,
        "~1 GB: ResNet-50",
        ha="left",
        va="bottom",
        fontsize=9,
        color="saddlebrown",
    )
    ax.text(
        0.15,
        CHECKPOINT_RANGE_GB[1] * 1.08,
        ">100 GB: large LLMs",
        ha="left",
        va="bottom",
        fontsize=9,
        color="saddlebrown",
    )
    ax.set_xlabel("renewable window at the destination [h]")
    ax.set_ylabel("largest feasible checkpoint [GB]")
    ax.set_title(
        f"Feasibility domain: WAN transfer ≤ α·window (α = {alpha:g}, "
        f"link efficiency {efficiency:g}); feasible below each line",
        fontsize=11,
    )
    ax.grid(True, which="major", alpha=0.3)
    return _save(figure, table, png_path)


def plot_breakeven(
    table: pd.DataFrame,
    png_path: Path,
    *,
    reference_window_h: float = WINDOW_RANGE_H[0],
    bandwidth_gbps: float = 10,
    job_power_kw: float = 0.65,
) -> tuple[Path, Path]:
    """Draw ``breakeven_sweep``'s table; write the PNG and the CSV beside it.

    reference_window_h [h] draws a horizontal reference; bandwidth_gbps [Gbit/s] and
    job_power_kw [kW] only label the figure.
    """
    figure = _new_figure(10.0, 5.6)
    ax = figure.add_subplot()
    colours = ("tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple")
    for i, network in enumerate(sorted(table["network_kwh_per_gb"].unique())):
        group = table[table["network_kwh_per_gb"] == network]
        ax.plot(
            group["checkpoint_gb"],
            group["breakeven_s"] / 60.0,
            linewidth=2,
            color=colours[i % len(colours)],
            label=f"{float(network):g} kWh/GB",
        )
    reference_min = reference_window_h * 60.0
    ax.axhline(
        reference_min,
        color="black",
        linestyle="--",
        linewidth=1.2,
        label=f"{reference_window_h:g} h window\n(shortest mean CAISO window)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(float(table["checkpoint_gb"].min()), float(table["checkpoint_gb"].max()))
    _mark_h200(ax, horizontal=False)
    ax.set_xlabel("checkpoint size [GB]")
    ax.set_ylabel("break-even time [min]\n(green running time that repays the move)")
    ax.set_title(
        f"Energy break-even of one migration over {bandwidth_gbps:g} Gbit/s "
        f"(job at {job_power_kw:g} kW)",
        fontsize=11,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="network energy", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return _save(figure, table, png_path)


def plot_policy_comparison(table: pd.DataFrame, png_path: Path) -> tuple[Path, Path]:
    """Draw ``policy_comparison``'s table as a 2x2 panel; write the PNG and the CSV beside it."""
    figure = _new_figure(10.0, 7.5)
    axes = figure.subplots(2, 2)
    policies = [str(p) for p in table["policy"]]
    x = np.arange(len(policies))
    panels: tuple[tuple[Axes, pd.Series, str, str], ...] = (
        (axes[0, 0], table["grid_kwh"], "grid energy [kWh]", "{:.4g}"),
        (
            axes[0, 1],
            table["renewable_fraction_of_bound"],
            "renewable used / fluid bound [-]",
            "{:.3f}",
        ),
        (axes[1, 0], table["migrations"], "migrations [-]", "{:.0f}"),
        (axes[1, 1], table["jct_p95_s"] / SECONDS_PER_HOUR, "job completion p95 [h]", "{:.3g}"),
    )
    for ax, values, label, fmt in panels:
        bars = ax.bar(x, values.to_numpy(dtype=np.float64), color="tab:blue", width=0.6)
        ax.bar_label(
            bars,
            labels=["n/a" if math.isnan(v) else fmt.format(v) for v in values],
            fontsize=8,
            padding=2,
        )
        ax.set_xticks(x, policies, rotation=20, ha="right")
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.15)
    axes[0, 1].axhline(1.0, color="black", linestyle="--", linewidth=1.2)
    axes[0, 1].annotate(
        "fluid bound",
        xy=(0.0, 1.0),
        xycoords=("axes fraction", "data"),
        xytext=(4, 3),
        textcoords="offset points",
        fontsize=9,
    )
    figure.suptitle("Policies on the same traces", fontsize=12)
    return _save(figure, table, png_path)


# --- the set ----------------------------------------------------------------------------


def load_evaluation(path: Path) -> Mapping[str, object]:
    """Read the evaluator's JSON document; InputError naming the file if it cannot."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from exc
    except RecursionError:
        raise InputError(f"{path}: not valid JSON: arrays or objects nested too deeply") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected a JSON object")
    return document


def write_paper_figures(out_dir: Path, evaluation_json: Path | None = None) -> list[Path]:
    """Write feasibility-domain, breakeven and (given an evaluation) policy-comparison figures.

    Each is a PNG with its CSV beside it in ``out_dir`` (created if needed). Returns the
    paths written, PNG before CSV.
    """
    out_dir = Path(out_dir)
    policies: pd.DataFrame | None = None
    if evaluation_json is not None:
        document = load_evaluation(evaluation_json)
        try:
            policies = policy_comparison(document)
        except InputError as exc:
            raise InputError(f"{evaluation_json}: {exc}") from exc
    written: list[Path] = []
    written += plot_feasibility_domain(
        feasibility_domain(DEFAULT_WINDOW_H), out_dir / "feasibility-domain.png"
    )
    written += plot_breakeven(breakeven_sweep(DEFAULT_CHECKPOINT_GB), out_dir / "breakeven.png")
    if policies is not None:
        written += plot_policy_comparison(policies, out_dir / "policy-comparison.png")
    return written
