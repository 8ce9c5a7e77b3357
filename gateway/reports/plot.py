"""The energy report as a PNG: renewable used, grid and curtailed energy per site over time.

One panel per quantity, sharing the time axis; in each, the sites' energies per period are
stacked, so the top of the stack is the fleet's total. A large fleet would make an unreadable
legend, so only the ``max_named_sites`` sites with the most energy (renewable used + grid +
curtailed over the whole range) are drawn by name and the rest are summed into one grey
"other (N sites)" band; the figure's subtitle says so. Drawn on matplotlib's Agg canvas, never
on a display.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOT_WIDTH_IN = 12.0
PLOT_HEIGHT_IN = 9.0
PLOT_DPI = 100
PLOT_SIZE_PX = (int(PLOT_WIDTH_IN * PLOT_DPI), int(PLOT_HEIGHT_IN * PLOT_DPI))
"""Width and height of the PNG [px]."""
MAX_NAMED_SITES = 8
"""Sites drawn by name; the others are summed into one band."""

PLOTTED_QUANTITIES: tuple[tuple[str, str], ...] = (
    ("renewable_used_kwh", "renewable used"),
    ("grid_kwh", "grid"),
    ("curtailed_kwh", "curtailed renewable"),
)
"""(column, panel title), one panel per row, top to bottom."""

_OTHER_COLOUR = "0.65"
_SITE_COLOURS = tuple(f"C{i}" for i in range(10) if i != 7)
"""matplotlib's default cycle without its grey (C7), which the "other" band uses."""


@dataclass(frozen=True)
class PlotSummary:
    """What ``plot_energy`` drew."""

    path: Path
    sites_total: int
    """Sites with rows in the plotted frame [count]."""
    sites_named: tuple[str, ...]
    """Sites drawn by name, largest energy first."""
    periods: int
    """Periods on the time axis, gaps included [count]."""

    @property
    def sites_other(self) -> int:
        """Sites summed into the "other" band [count]."""
        return self.sites_total - len(self.sites_named)

    def note(self) -> str:
        """One line for people: what the figure shows and what was summed."""
        if self.sites_total == 0:
            return f"plot: {self.path}: no energy rows in the selection (an empty figure)"
        text = f"plot: {self.path}: {self.sites_total} sites over {self.periods} periods"
        if self.sites_other:
            text += (
                f"; the {len(self.sites_named)} sites with the most energy drawn by name, "
                f"the other {self.sites_other} summed as 'other'"
            )
        return text


def _rank_sites(frame: pd.DataFrame) -> list[str]:
    """Site ids, most energy (renewable used + grid + curtailed) first, ties by id."""
    energy_kwh = frame[[column for column, _ in PLOTTED_QUANTITIES]].sum(axis=1)
    per_site = energy_kwh.groupby(frame["site_id"]).sum()
    ranked = sorted(per_site.items(), key=lambda item: (-float(item[1]), str(item[0])))
    return [str(site_id) for site_id, _ in ranked]


def _series(
    frame: pd.DataFrame, column: str, named: list[str], periods: pd.DatetimeIndex
) -> tuple[list[np.ndarray], list[str]]:
    """Per named site and for the rest: energy per period [kWh], gaps as 0."""
    table = frame.pivot_table(
        index="period_start_at", columns="site_id", values=column, aggfunc="sum", fill_value=0.0
    ).reindex(index=periods, fill_value=0.0)
    table = table.fillna(0.0)
    series = [
        table[site].to_numpy(dtype=float) if site in table else _zeros(periods) for site in named
    ]
    labels = list(named)
    others = [site for site in table.columns if site not in set(named)]
    if others:
        series.append(table[others].sum(axis=1).to_numpy(dtype=float))
        labels.append(f"other ({len(others)} sites)")
    return series, labels


def _zeros(periods: pd.DatetimeIndex) -> np.ndarray:
    return np.zeros(len(periods), dtype=float)


def _period_index(frame: pd.DataFrame, period: timedelta) -> pd.DatetimeIndex:
    starts = pd.DatetimeIndex(pd.to_datetime(frame["period_start_at"], utc=True))
    return pd.date_range(starts.min(), starts.max(), freq=pd.Timedelta(period), tz="UTC")


def _period_name(period: timedelta) -> str:
    names = {timedelta(hours=1): "hour", timedelta(days=1): "day"}
    return names.get(period, f"{period.total_seconds():g} s")


def plot_energy(
    frame: pd.DataFrame,
    path: Path,
    *,
    period: timedelta,
    max_named_sites: int = MAX_NAMED_SITES,
) -> PlotSummary:
    """Draw renewable used, grid and curtailed energy per site over time into a PNG.

    :param frame: energy rows with columns ``site_id``, ``period_start_at`` (timezone-aware
        UTC), ``renewable_used_kwh``, ``grid_kwh`` and ``curtailed_kwh`` [kWh per period], as
        ``energy_report(by=("site", "day"))`` returns them.
    :param path: the PNG to write (replaced if it exists), ``PLOT_SIZE_PX`` pixels.
    :param period: the length of one period [timedelta], e.g. one day.
    :param max_named_sites: sites drawn by name; the rest are summed [count].
    """
    figure = Figure(figsize=(PLOT_WIDTH_IN, PLOT_HEIGHT_IN), dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    # Fixed margins (room for the legend on the right): a constrained layout would double
    # the time to draw a year of days.
    figure.subplots_adjust(left=0.07, right=0.80, bottom=0.07, top=0.90, hspace=0.22)
    axes = figure.subplots(len(PLOTTED_QUANTITIES), 1, sharex=True)
    period_name = _period_name(period)
    rows = frame.dropna(subset=["period_start_at"])
    if rows.empty:
        summary = PlotSummary(path=path, sites_total=0, sites_named=(), periods=0)
        axes[0].text(0.5, 0.5, "no energy rows in the selection", ha="center", va="center")
    else:
        ranked = _rank_sites(rows)
        named = ranked[:max_named_sites]
        periods = _period_index(rows, period)
        # Step edges: every period's start, then the end of the last period.
        edges = np.append(
            periods.tz_localize(None).to_numpy(),
            (periods[-1] + period).tz_localize(None).to_datetime64(),
        )
        cycle = [_SITE_COLOURS[i % len(_SITE_COLOURS)] for i in range(len(named))]
        for ax, (column, title) in zip(axes, PLOTTED_QUANTITIES, strict=True):
            series, labels = _series(rows, column, named, periods)
            colours = [*cycle, _OTHER_COLOUR][: len(series)]
            stacked = [np.append(values, values[-1]) for values in series]
            ax.stackplot(edges, *stacked, labels=labels, colors=colours, step="post", linewidth=0)
            ax.set_title(title, loc="left")
            ax.set_ylabel(f"kWh per {period_name}")
            ax.grid(True, axis="y", color="0.9")
            ax.margins(x=0)
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(
            handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(0.81, 0.90), title="site"
        )
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(formatter)
        summary = PlotSummary(
            path=path, sites_total=len(ranked), sites_named=tuple(named), periods=len(periods)
        )
    axes[-1].set_xlabel("UTC")
    subtitle = f"stacked per site, per {period_name}"
    if summary.sites_other:
        subtitle += (
            f"; the {len(summary.sites_named)} of {summary.sites_total} sites with the most "
            f"energy by name, the other {summary.sites_other} summed as 'other'"
        )
    figure.suptitle(f"Energy per site [kWh]\n{subtitle}", fontsize="medium")
    figure.savefig(path, dpi=PLOT_DPI, format="png")
    return summary
