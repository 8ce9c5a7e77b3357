"""Renewable power traces from the typical-meteorological-year files that pvlib ships.

:func:`pv_power_kw` turns one TMY2 or TMY3 file into a year of hourly PV power for a plant
of a given capacity; :class:`RenewableTrace` replays such a series against simulated time.
:func:`load_weather` also reads EnergyPlus ``.epw`` files, and
:func:`pv_power_from_weather_kw` runs the same PV chain on weather already read.

Time labels. TMY3 files label each hour by its *end* (``01:00`` holds the irradiance
received from 00:00 to 01:00 local standard time); pvlib's TMY2 reader already relabels
TMY2 hours by their *start*. Both are brought to one convention here: the series that
:func:`pv_power_kw` returns is labelled by the **start** of each hour, in UTC, and each
value is the mean power over ``[t, t + 1 h)``. The sun's position is taken at the middle of
the hour. Every file's year is coerced to 2001 (not a leap year), so the series holds 8760
values; in UTC it runs from the first local midnight of 2001 to an hour before the next.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pvlib

from gateway.errors import InputError

logger = logging.getLogger(__name__)

_DATA_DIR = Path(pvlib.__file__).parent / "data"

BUNDLED_WEATHER: dict[str, Path] = {
    "greensboro-nc": _DATA_DIR / "723170TYA.CSV",
    "sand-point-ak": _DATA_DIR / "703165TY.csv",
    "miami-fl": _DATA_DIR / "12839.tm2",
}
"""Weather files shipped inside pvlib, by place: two TMY3 files and one TMY2 file."""

TRACE_YEAR = 2001
"""The year every weather file is coerced to (a common, non-leap year)."""

HOURS_PER_YEAR = 8760
ALBEDO = 0.25
"""Ground reflectance used for every file [-] (the TMY3 albedo column is often empty)."""
GAMMA_PDC_PER_C = -0.004
"""PVWatts temperature coefficient of power of crystalline silicon [1/°C]."""

_WEATHER_COLUMNS = ("ghi", "dni", "dhi", "temp_air", "wind_speed")
FloatArray = npt.NDArray[np.float64]


def pv_power_kw(
    weather_path: Path | str,
    capacity_kw: float,
    *,
    tilt_deg: float | None = None,
    azimuth_deg: float = 180.0,
    system_loss: float = 0.14,
) -> pd.Series:
    """A year of hourly AC power of a fixed-tilt PV plant at the weather file's location [kW].

    weather_path: a TMY3 (``.csv``) or TMY2 (``.tm2``) file;
    capacity_kw: DC nameplate at 1000 W/m² and 25 °C, also the AC limit [kW];
    tilt_deg: tilt from horizontal, default the site's latitude [°];
    azimuth_deg: direction the modules face, 180 = south [°];
    system_loss: share lost in wiring, soiling, mismatch and inverter [-].

    Plane-of-array irradiance from the isotropic sky model, cell temperature from the
    Faiman model, DC power from PVWatts, then ``system_loss``; clipped to
    ``[0, capacity_kw]``. Returns a series named ``renewable_kw`` labelled by the start of
    each hour in UTC (see the module docstring). Raises :class:`InputError` naming the file
    when it cannot be read.
    """
    if not capacity_kw > 0:
        raise ValueError(f"capacity_kw must be > 0, got {capacity_kw}")
    if not 0 <= system_loss < 1:
        raise ValueError(f"system_loss must be in [0, 1), got {system_loss}")
    path = Path(weather_path)
    weather, meta = read_weather(path)
    ac_kw = pv_power_from_weather_kw(
        weather,
        meta,
        capacity_kw,
        tilt_deg=tilt_deg,
        azimuth_deg=azimuth_deg,
        system_loss=system_loss,
    )
    logger.debug("PV trace from %s: %.0f kWh/year", path, float(ac_kw.sum()))
    return ac_kw


def pv_power_from_weather_kw(
    weather: pd.DataFrame,
    meta: dict[str, Any],
    capacity_kw: float,
    *,
    tilt_deg: float | None = None,
    azimuth_deg: float = 180.0,
    system_loss: float = 0.14,
) -> pd.Series:
    """:func:`pv_power_kw` for weather already read (by :func:`load_weather` or a reader) [kW].

    weather: hourly ``ghi``, ``dni``, ``dhi`` [W/m²], ``temp_air`` [°C] and ``wind_speed``
    [m/s], labelled by the start of each hour in UTC;
    meta: the file's ``latitude`` [°], ``longitude`` [°] and ``altitude`` [m];
    the other parameters as in :func:`pv_power_kw`.
    """
    if not capacity_kw > 0:
        raise ValueError(f"capacity_kw must be > 0, got {capacity_kw}")
    if not 0 <= system_loss < 1:
        raise ValueError(f"system_loss must be in [0, 1), got {system_loss}")
    latitude_deg = float(meta["latitude"])
    location = pvlib.location.Location(
        latitude_deg, float(meta["longitude"]), tz="UTC", altitude=float(meta["altitude"])
    )
    mid_hour = pd.DatetimeIndex(weather.index) + pd.Timedelta(minutes=30)
    solar = location.get_solarposition(mid_hour, temperature=weather["temp_air"].to_numpy())
    solar.index = weather.index
    surface_tilt_deg = abs(latitude_deg) if tilt_deg is None else tilt_deg
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt_deg,
        azimuth_deg,
        solar["apparent_zenith"],
        solar["azimuth"],
        weather["dni"],
        weather["ghi"],
        weather["dhi"],
        albedo=ALBEDO,
        model="isotropic",
    )
    poa_w_m2 = poa["poa_global"].fillna(0.0).clip(lower=0.0)
    temp_cell_c = pvlib.temperature.faiman(poa_w_m2, weather["temp_air"], weather["wind_speed"])
    # pvwatts_dc is linear in pdc0, so a pdc0 in kW gives DC power in kW.
    dc_kw = pvlib.pvsystem.pvwatts_dc(poa_w_m2, temp_cell_c, capacity_kw, GAMMA_PDC_PER_C)
    ac_kw = (pd.Series(dc_kw, index=weather.index) * (1.0 - system_loss)).clip(0.0, capacity_kw)
    return ac_kw.astype(np.float64).rename("renewable_kw")


def read_weather(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a TMY3 or TMY2 file into one shape.

    Returns hourly ``ghi``, ``dni``, ``dhi`` [W/m²], ``temp_air`` [°C] and ``wind_speed``
    [m/s], labelled by the start of each hour in UTC and coerced to :data:`TRACE_YEAR`,
    and the file's metadata (``latitude``, ``longitude``, ``altitude``, ``TZ``).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tm2"):
        raise InputError(f"weather file {path}: expected a TMY3 .csv or a TMY2 .tm2 file")
    try:
        if suffix == ".csv":
            frame, meta = _read_tmy3(path)
        else:
            frame, meta = _read_tmy2(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"weather file {path} cannot be read: {exc}") from exc
    _check_weather(path, frame)
    return frame, meta


_EPW_RANGES: dict[str, tuple[float, float]] = {
    "ghi": (0.0, 1500.0),
    "dni": (0.0, 1500.0),
    "dhi": (0.0, 1000.0),
    "temp_air": (-70.0, 70.0),
    "wind_speed": (0.0, 40.0),
}
"""Physical ranges of EPW columns [W/m², °C, m/s]; EPW's missing markers fall outside them."""


def read_epw_weather(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read an EnergyPlus weather file (``.epw``) into the shape of :func:`read_weather`.

    EPW files label each hour by its end (hour 1 holds 00:00 to 01:00 local standard time);
    pvlib's reader already relabels them by their start, so only the year is coerced (to
    :data:`TRACE_YEAR`) and the index converted to UTC. EPW marks missing values with 9999,
    999 or 99.9; any value outside a physical range is rejected with :class:`InputError`.
    """
    file = Path(path)
    if file.suffix.lower() != ".epw":
        raise InputError(f"weather file {file}: expected an EnergyPlus .epw file")
    try:
        data, meta = pvlib.iotools.read_epw(file, coerce_year=TRACE_YEAR)
        frame = pd.DataFrame(
            {col: data[col].to_numpy(dtype=np.float64) for col in _WEATHER_COLUMNS},
            index=pd.DatetimeIndex(data.index).tz_convert(UTC),
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"weather file {file} cannot be read: {exc}") from exc
    _check_weather(file, frame)
    for col, (low, high) in _EPW_RANGES.items():
        values = frame[col].to_numpy()
        bad = np.flatnonzero((values < low) | (values > high))
        if bad.size:
            at = frame.index[bad[0]]
            raise InputError(
                f"weather file {file}: {col} = {values[bad[0]]:g} at {at.isoformat()} is "
                f"missing or out of range [{low:g}, {high:g}] ({bad.size} such hours)"
            )
    return frame, dict(meta)


def load_weather(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read any supported weather file by its suffix: ``.epw``, TMY3 ``.csv`` or TMY2 ``.tm2``.

    Returns the frame and metadata of :func:`read_weather` (hourly, labelled by the start of
    each hour in UTC, year :data:`TRACE_YEAR`); metadata always holds ``latitude`` [°],
    ``longitude`` [°], ``altitude`` [m] and ``TZ`` (offset of local standard time [h]).
    """
    file = Path(path)
    if file.suffix.lower() == ".epw":
        return read_epw_weather(file)
    return read_weather(file)


def _read_tmy3(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    data, meta = pvlib.iotools.read_tmy3(path, coerce_year=TRACE_YEAR, map_variables=True)
    # TMY3 labels the end of each hour; move the label to its start.
    start_local = data.index - pd.Timedelta(hours=1)
    frame = pd.DataFrame(
        {col: data[col].to_numpy(dtype=np.float64) for col in _WEATHER_COLUMNS},
        index=start_local.tz_convert(UTC),
    )
    return frame, dict(meta)


def _read_tmy2(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    data, meta = pvlib.iotools.read_tmy2(str(path))
    # pvlib already labels TMY2 hours by their start; only the year needs coercing.
    local = data.index
    naive = pd.to_datetime(
        pd.DataFrame(
            {"year": TRACE_YEAR, "month": local.month, "day": local.day, "hour": local.hour}
        )
    )
    start_local = pd.DatetimeIndex(naive).tz_localize(local.tz)
    frame = pd.DataFrame(
        {
            "ghi": data["GHI"].to_numpy(dtype=np.float64),
            "dni": data["DNI"].to_numpy(dtype=np.float64),
            "dhi": data["DHI"].to_numpy(dtype=np.float64),
            # TMY2 stores temperature and wind speed in tenths.
            "temp_air": data["DryBulb"].to_numpy(dtype=np.float64) / 10.0,
            "wind_speed": data["Wspd"].to_numpy(dtype=np.float64) / 10.0,
        },
        index=start_local.tz_convert(UTC),
    )
    return frame, dict(meta)


def _check_weather(path: Path, frame: pd.DataFrame) -> None:
    index = frame.index
    if len(frame) != HOURS_PER_YEAR:
        raise InputError(f"weather file {path}: {len(frame)} hours, expected {HOURS_PER_YEAR}")
    if not isinstance(index, pd.DatetimeIndex) or len(set(np.diff(index.asi8).tolist())) != 1:
        raise InputError(f"weather file {path}: timestamps are not a regular hourly series")
    missing = frame[list(_WEATHER_COLUMNS)].isna().any()
    if missing.any():
        names = ", ".join(str(col) for col in missing[missing].index)
        raise InputError(f"weather file {path}: missing values in {names}")


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
