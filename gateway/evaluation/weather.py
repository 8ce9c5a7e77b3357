"""Weather files to PV power: the chain that turns a typical meteorological year into kW.

:func:`pv_power_kw` turns one TMY2 or TMY3 file into a year of hourly PV power for a plant
of a given capacity. :func:`load_weather` also reads EnergyPlus ``.epw`` files, and
:func:`pv_power_from_weather_kw` runs the same PV chain on weather already read.
:mod:`gateway.evaluation.trace_build` builds the bundled traces with it, and
``simulators/traces.py`` replays such a series against simulated time.

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
from datetime import UTC
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
