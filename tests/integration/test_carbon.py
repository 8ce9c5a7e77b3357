"""Grid carbon intensity from CSV: every bad input named by file, line and column; a load
through ``dr-gateway carbon load`` gives past ledger rows their emissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.cli import main
from gateway.db import unit_of_work
from gateway.errors import InputError
from gateway.fleet import sync_sites
from gateway.reports.carbon import read_intensity_csv
from gateway.reports.rollups import rebuild_rollups
from models import CarbonIntensity, EnergyRollupDay
from tests.support.reporting_data import fleet_settings, ledger_row

HEADER = "start_at,end_at,g_co2_per_kwh,site_id\n"
A, B = "2027-01-01T00:00:00Z", "2027-01-01T01:00:00Z"
GOOD = f"{A},{B},400,\n"


@pytest.mark.parametrize(
    ("label", "content", "message"),
    [
        ("empty file", "", r":1: expected a header row"),
        (
            "unknown column",
            "start_at,end_at,g_co2_per_kwh,region\n",
            r":1: column 'region': unknown",
        ),
        ("missing column", "start_at,g_co2_per_kwh\n" + GOOD, r":1: column 'end_at': missing"),
        (
            "repeated column",
            "start_at,end_at,end_at,g_co2_per_kwh\n",
            r":1: column 'end_at': appears twice",
        ),
        ("no rows", HEADER, r"no intervals after the header"),
        ("short row", HEADER + "2027-01-01T00:00:00Z,400\n", r":2: expected 4 fields"),
        (
            "bad time",
            HEADER + f"yesterday,{B},400,\n",
            r":2: column start_at: 'yesterday' is not an ISO 8601",
        ),
        (
            "naive time",
            HEADER + f"2027-01-01T00:00:00,{B},400,\n",
            r":2: column start_at: .* has no time zone",
        ),
        ("end first", HEADER + f"{B},{A},400,\n", r":2: column end_at: .* is not after start_at"),
        (
            "not a number",
            HEADER + f"{A},{B},lots,\n",
            r":2: column g_co2_per_kwh: 'lots' is not a number",
        ),
        (
            "negative",
            HEADER + f"{A},{B},-3,\n",
            r":2: column g_co2_per_kwh: -3 must be a finite number >= 0",
        ),
        ("infinite", HEADER + f"{A},{B},inf,\n", r":2: column g_co2_per_kwh: inf must be a finite"),
        (
            "unknown site",
            HEADER + f"{A},{B},400,nowhere\n",
            r":2: column site_id: unknown site 'nowhere'",
        ),
        (
            "overlap",
            HEADER + GOOD + "\n2027-01-01T00:30:00Z,2027-01-01T02:00:00Z,380,\n",
            r":4: column start_at: the interval overlaps line 2 \(both for every site\)",
        ),
    ],
)
def test_bad_files_are_named_by_line_and_column(
    tmp_path: Path, label: str, content: str, message: str
) -> None:
    path = tmp_path / "intensity.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=f"^{path}.*{message}"):
        read_intensity_csv(path, known_sites={"alpha"})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing\.csv: cannot read"):
        read_intensity_csv(tmp_path / "nothing.csv")


def test_scopes_may_overlap_each_other_and_offsets_become_utc(tmp_path: Path) -> None:
    path = tmp_path / "intensity.csv"
    path.write_text(
        HEADER + GOOD + "2027-01-01T01:00:00+01:00,2027-01-01T02:00:00+01:00,120,alpha\n",
        encoding="utf-8",
    )
    fleet_wide, alpha = read_intensity_csv(path, known_sites={"alpha"})
    assert fleet_wide.site_id is None and alpha.site_id == "alpha"
    assert alpha.start_at == datetime(2027, 1, 1, 0, tzinfo=UTC)
    assert (alpha.g_co2_per_kwh, alpha.line) == (120.0, 3)


def test_carbon_load_gives_past_rows_emissions_and_replaces_overlaps(
    database_url: str,
    engine: Engine,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start = datetime(2027, 1, 1, 22, tzinfo=UTC)
    settings = fleet_settings(database_url, ["alpha"])
    with unit_of_work(session_factory) as session:
        sync_sites(session, settings.site, start)
        session.flush()
        for h in range(4):  # 22:00-02:00, 2 kWh of grid per hour
            session.add(ledger_row("alpha", start + timedelta(hours=h), 3600.0, 3.0, 1.0))
        session.flush()
        rebuild_rollups(session.connection())
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n'
        + "".join(
            f'[[site]]\nid = "{s.id}"\ngpus_total = 8\nit_power_max_kw = 10.0\n'
            f'wan_bandwidth_gbps = 10.0\ncontroller_url = "http://127.0.0.1:9/{s.id}"\n'
            'controller_token = "controller-token"\n'
            for s in settings.site
        ),
        encoding="utf-8",
    )
    first = tmp_path / "first.csv"
    first.write_text(
        HEADER
        + "2027-01-01T22:00:00Z,2027-01-02T00:00:00Z,500,\n"
        + "2027-01-02T00:00:00Z,2027-01-02T01:00:00Z,100,alpha\n",
        encoding="utf-8",
    )
    assert main(["carbon", "load", "--config", str(config), str(first)]) == 0
    assert "loaded 2 carbon-intensity intervals" in capsys.readouterr().out

    def days() -> dict[datetime, tuple[float, int]]:
        with session_factory() as session:
            return {
                r.period_start_at: (r.emissions_kg, r.emissions_rows)
                for r in session.scalars(select(EnergyRollupDay))
            }

    jan1, jan2 = datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)
    emissions = days()
    assert emissions[jan1] == (pytest.approx(2 * 2.0 * 0.5), 2)
    assert emissions[jan2] == (pytest.approx(2.0 * 0.1), 1)

    # a second file for all sites over 23:00-02:00 replaces the overlapping 22-24 interval
    second = tmp_path / "second.csv"
    second.write_text(
        "start_at,end_at,g_co2_per_kwh\n2027-01-01T23:00:00Z,2027-01-02T02:00:00Z,200\n",
        encoding="utf-8",
    )
    assert main(["carbon", "load", "--config", str(config), str(second)]) == 0
    assert "replacing 1" in capsys.readouterr().out
    emissions = days()
    assert emissions[jan1] == (pytest.approx(2.0 * 0.2), 1)  # 22:00 is no longer covered
    # 00:00 keeps alpha's own 100 g/kWh; 01:00 gets the new all-sites 200 g/kWh
    assert emissions[jan2] == (pytest.approx(2.0 * 0.1 + 2.0 * 0.2), 2)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(CarbonIntensity)) == 2

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "2027-01-02T00:00:00Z,2027-01-02T01:00:00Z,oops,\n")
    assert main(["carbon", "load", "--config", str(config), str(bad)]) == 2
    assert f"{bad}:2: column g_co2_per_kwh" in capsys.readouterr().err
    assert days() == emissions
