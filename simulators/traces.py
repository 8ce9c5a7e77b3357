"""A renewable power series replayed against simulated time.

:class:`RenewableTrace` reads a series (for instance a year of PV power from
:func:`gateway.evaluation.weather.pv_power_kw`) at ``trace_start_at + (at - sim_start_at)``,
interpolating between points and wrapping around the series' span; the simulated sites, the
grid VTN, the demo and the campaigns run on it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from gateway.evaluation.weather import TRACE_YEAR, FloatArray


class RenewableTrace:
    """A renewable power series replayed against simulated time.

    Simulated time ``at`` reads the series at ``trace_start_at + (at - sim_start_at)``,
    linearly interpolated between points and wrapped around the series' span (a year of
    TMY data repeats itself; after the last point it interpolates back to the first).

    series: power, indexed by a regular, increasing, timezone-aware DatetimeIndex [kW];
    sim_start_at: the simulated instant that maps to ``trace_start_at``;
    trace_start_at: an instant inside the series' span (e.g. in its year).
    """

    def __init__(self, series: pd.Series, sim_start_at: datetime, trace_start_at: datetime) -> None:
        index = series.index
        if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
            raise ValueError("series must have a timezone-aware DatetimeIndex")
        if len(series) < 2:
            raise ValueError("series needs at least two points")
        steps_ns = np.diff(index.as_unit("ns").asi8)
        if steps_ns[0] <= 0 or np.any(steps_ns != steps_ns[0]):
            raise ValueError("series index must be regular and increasing")
        values = series.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("series values must be finite and >= 0")
        for name, at in (("sim_start_at", sim_start_at), ("trace_start_at", trace_start_at)):
            if at.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        self.series = series
        self.sim_start_at = sim_start_at.astimezone(UTC)
        self.trace_start_at = trace_start_at.astimezone(UTC)
        self.step_s = float(steps_ns[0]) / 1e9
        self.period_s = self.step_s * len(values)
        first_at: datetime = index[0].to_pydatetime()
        self._offset_s = (self.trace_start_at - first_at).total_seconds()
        self._x_s: FloatArray = np.arange(len(values) + 1, dtype=np.float64) * self.step_s
        self._y_kw: FloatArray = np.append(values, values[0])

    @classmethod
    def constant(cls, kw: float) -> RenewableTrace:
        """A trace that delivers ``kw`` at every instant [kW]."""
        start_at = datetime(TRACE_YEAR, 1, 1, tzinfo=UTC)
        index = pd.DatetimeIndex([start_at, start_at + timedelta(hours=1)])
        series = pd.Series([float(kw), float(kw)], index=index, name="renewable_kw")
        return cls(series, sim_start_at=start_at, trace_start_at=start_at)

    def _position_s(self, at: datetime) -> float:
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        return ((at - self.sim_start_at).total_seconds() + self._offset_s) % self.period_s

    def kw_at(self, at: datetime) -> float:
        """Renewable power at simulated time ``at`` [kW]."""
        return float(np.interp(self._position_s(at), self._x_s, self._y_kw))

    def forecast_kw(self, at: datetime, step_s: float, horizon_s: float) -> list[float]:
        """Perfect forecast: power at ``at + i * step_s`` for ``i * step_s < horizon_s`` [kW].

        step_s: spacing [s]; horizon_s: span covered [s]. Index 0 is ``at``; at least one value.
        """
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        if horizon_s < 0:
            raise ValueError(f"horizon_s must be >= 0, got {horizon_s}")
        count = max(1, math.ceil(horizon_s / step_s - 1e-9))
        positions_s = (self._position_s(at) + np.arange(count) * step_s) % self.period_s
        return [float(v) for v in np.interp(positions_s, self._x_s, self._y_kw)]
