"""Renewable traces: PV from pvlib's bundled weather files, and replay against simulated time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gateway.errors import InputError
from gateway.evaluation.weather import BUNDLED_WEATHER, pv_power_kw
from simulators.traces import RenewableTrace

CAPACITY_KW = 100.0

# place: (offset of local standard time from UTC [h], longitude [°], capacity-factor range)
SITES: dict[str, tuple[int, float, tuple[float, float]]] = {
    "greensboro-nc": (-5, -79.95, (0.12, 0.22)),
    "sand-point-ak": (-9, -160.517, (0.06, 0.15)),
    "miami-fl": (-5, -80.267, (0.13, 0.23)),
}


@pytest.fixture(scope="module")
def pv_by_site() -> dict[str, pd.Series]:
    return {name: pv_power_kw(path, CAPACITY_KW) for name, path in BUNDLED_WEATHER.items()}


def test_bundled_weather_files_exist() -> None:
    assert set(BUNDLED_WEATHER) == set(SITES)
    for path in BUNDLED_WEATHER.values():
        assert path.is_file(), path


@pytest.mark.parametrize("site", sorted(SITES))
def test_series_is_a_year_of_hours_in_utc_within_capacity(
    site: str, pv_by_site: dict[str, pd.Series]
) -> None:
    pv = pv_by_site[site]
    index = pv.index
    assert isinstance(index, pd.DatetimeIndex)
    assert str(index.tz) == "UTC"
    assert pv.name == "renewable_kw"
    assert len(pv) == 8760
    assert (np.diff(index.as_unit("s").asi8) == 3600).all()
    assert pv.min() >= 0.0
    assert pv.max() <= CAPACITY_KW
    # the first hour is local midnight of 1 January 2001
    offset_h = SITES[site][0]
    assert index[0] == pd.Timestamp(2001, 1, 1, tz="UTC") - pd.Timedelta(hours=offset_h)


@pytest.mark.parametrize("site", sorted(SITES))
def test_zero_at_local_midnight_and_positive_at_local_noon(
    site: str, pv_by_site: dict[str, pd.Series]
) -> None:
    pv = pv_by_site[site]
    offset_h = SITES[site][0]
    local_hour = (pd.DatetimeIndex(pv.index).hour + offset_h) % 24
    assert (pv[local_hour == 0] == 0.0).all()
    noon = pv[local_hour == 12]
    assert (noon > 0).mean() > 0.95
    assert noon.mean() > 0.2 * CAPACITY_KW


@pytest.mark.parametrize("site", sorted(SITES))
def test_yearly_energy_gives_a_plausible_capacity_factor(
    site: str, pv_by_site: dict[str, pd.Series]
) -> None:
    low, high = SITES[site][2]
    capacity_factor = pv_by_site[site].sum() / (CAPACITY_KW * 8760)
    assert low < capacity_factor < high


@pytest.mark.parametrize("site", sorted(SITES))
def test_hour_labels_are_hour_starts_centred_on_solar_noon(
    site: str, pv_by_site: dict[str, pd.Series]
) -> None:
    """Labels are the start of each hour: the energy-weighted mid-hour falls on solar noon.

    A label at the hour's end (TMY3's raw convention) would put it an hour late.
    """
    pv = pv_by_site[site]
    solar_noon_utc_h = 12.0 - SITES[site][1] / 15.0
    mid_hour_h = pd.DatetimeIndex(pv.index).hour.to_numpy() + 0.5
    from_noon_h = (mid_hour_h - solar_noon_utc_h + 12.0) % 24.0 - 12.0
    centroid_h = float((from_noon_h * pv.to_numpy()).sum() / pv.sum())
    assert abs(centroid_h) < 0.25


def test_tilt_changes_the_yield(pv_by_site: dict[str, pd.Series]) -> None:
    flat = pv_power_kw(BUNDLED_WEATHER["greensboro-nc"], CAPACITY_KW, tilt_deg=0.0)
    assert flat.sum() < pv_by_site["greensboro-nc"].sum()


def test_unreadable_weather_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    with pytest.raises(InputError, match=r"missing\.csv"):
        pv_power_kw(missing, 10.0)
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("this is not\na TMY3 file\n")
    with pytest.raises(InputError, match=r"garbage\.csv"):
        pv_power_kw(garbage, 10.0)
    wrong_kind = tmp_path / "weather.json"
    wrong_kind.write_text("{}")
    with pytest.raises(InputError, match=r"weather\.json"):
        pv_power_kw(wrong_kind, 10.0)


def _ramp_trace(sim_start_at: datetime) -> RenewableTrace:
    index = pd.date_range("2001-06-01", periods=3, freq="h", tz="UTC")
    series = pd.Series([0.0, 10.0, 20.0], index=index)
    return RenewableTrace(series, sim_start_at, datetime(2001, 6, 1, tzinfo=UTC))


SIM_START = datetime(2026, 11, 27, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("label", "after_s", "expected_kw"),
    [
        ("first point", 0.0, 0.0),
        ("between points", 1800.0, 5.0),
        ("on a point", 3600.0, 10.0),
        ("last point", 7200.0, 20.0),
        ("wraps from last to first", 9000.0, 10.0),
        ("one period later", 10800.0 + 1800.0, 5.0),
        ("before the start wraps back", -1800.0, 10.0),
    ],
)
def test_kw_at_interpolates_linearly_and_wraps(
    label: str, after_s: float, expected_kw: float
) -> None:
    trace = _ramp_trace(SIM_START)
    assert trace.kw_at(SIM_START + timedelta(seconds=after_s)) == pytest.approx(expected_kw)


def test_trace_start_offsets_the_replay() -> None:
    index = pd.date_range("2001-06-01", periods=3, freq="h", tz="UTC")
    series = pd.Series([0.0, 10.0, 20.0], index=index)
    trace = RenewableTrace(series, SIM_START, datetime(2001, 6, 1, 1, tzinfo=UTC))
    assert trace.kw_at(SIM_START) == pytest.approx(10.0)


def test_forecast_is_the_trace_itself_with_index_zero_now() -> None:
    trace = _ramp_trace(SIM_START)
    at = SIM_START + timedelta(minutes=15)
    forecast = trace.forecast_kw(at, step_s=900.0, horizon_s=3 * 3600.0)
    assert len(forecast) == 12
    assert forecast[0] == pytest.approx(trace.kw_at(at))
    for i, value in enumerate(forecast):
        assert value == pytest.approx(trace.kw_at(at + timedelta(seconds=900.0 * i)))


def test_forecast_of_a_day_at_15_minutes_has_96_values(pv_by_site: dict[str, pd.Series]) -> None:
    trace = RenewableTrace(pv_by_site["miami-fl"], SIM_START, datetime(2001, 6, 21, tzinfo=UTC))
    forecast = trace.forecast_kw(SIM_START, step_s=900.0, horizon_s=86400.0)
    assert len(forecast) == 96
    assert max(forecast) > 0.0
    assert min(forecast) == 0.0


def test_constant_trace() -> None:
    trace = RenewableTrace.constant(7.5)
    assert trace.kw_at(SIM_START) == 7.5
    assert trace.forecast_kw(SIM_START, 900.0, 3600.0) == [7.5] * 4


@pytest.mark.parametrize(
    ("label", "series"),
    [
        (
            "naive index",
            pd.Series([1.0, 2.0], index=pd.date_range("2001-01-01", periods=2, freq="h")),
        ),
        ("one point", pd.Series([1.0], index=pd.date_range("2001-01-01", periods=1, tz="UTC"))),
        (
            "negative power",
            pd.Series(
                [1.0, -2.0], index=pd.date_range("2001-01-01", periods=2, freq="h", tz="UTC")
            ),
        ),
        (
            "irregular index",
            pd.Series(
                [1.0, 2.0, 3.0],
                index=pd.DatetimeIndex(
                    ["2001-01-01 00:00", "2001-01-01 01:00", "2001-01-01 03:00"], tz="UTC"
                ),
            ),
        ),
    ],
)
def test_trace_rejects_bad_series(label: str, series: pd.Series) -> None:
    with pytest.raises(ValueError):
        RenewableTrace(series, SIM_START, datetime(2001, 1, 1, tzinfo=UTC))
