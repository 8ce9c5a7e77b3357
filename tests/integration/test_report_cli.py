"""``dr-gateway report energy|migrations|events``: options, renderings, the plot, end to end.

The pure parts (option parsing, table/CSV/JSON/Parquet renderings, the PNG) are checked on
DataFrames built here; the end-to-end cases upgrade a database of each backend, write ledger
rows through the rollup path, run the CLI in-process and read every output back.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

import models
from gateway.cli import main
from gateway.commands.report_kinds import FORMAT_NAMES
from gateway.commands.report_options import parse_by, parse_sites, parse_time
from gateway.db import make_engine, unit_of_work, upgrade
from gateway.errors import InputError
from gateway.reports.formats import (
    REPORT_FORMATS,
    Ratio,
    Totals,
    format_csv,
    format_json,
    format_table,
    render_text,
)
from gateway.reports.frames import energy_report, table_of_frame, write_parquet
from gateway.reports.plot import MAX_NAMED_SITES, PLOT_SIZE_PX, plot_energy
from gateway.reports.rollups import add_to_rollups

BY_KEYS = ("site", "hour", "day")
DAY0 = datetime(2026, 6, 1, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height [px] from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "text", "expected"),
    [
        ("date alone is midnight UTC", "2026-06-01", DAY0),
        ("date-time without zone is UTC", "2026-06-01T12:00", DAY0 + timedelta(hours=12)),
        ("Z suffix", "2026-06-01T12:00:00Z", DAY0 + timedelta(hours=12)),
        ("offset converted to UTC", "2026-06-01T14:00+02:00", DAY0 + timedelta(hours=12)),
        ("space separator", "2026-06-01 06:30", DAY0 + timedelta(hours=6, minutes=30)),
    ],
)
def test_parse_time_accepts_iso_dates_and_datetimes(
    label: str, text: str, expected: datetime
) -> None:
    value = parse_time("--since", text)
    assert value == expected, label
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), label


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "2026-06-01T25:00", ""])
def test_parse_time_error_names_the_option(text: str) -> None:
    with pytest.raises(InputError, match=r"^--until .*ISO 8601"):
        parse_time("--until", text)


def test_parse_sites_repeatable_and_comma_lists_keep_order_without_duplicates() -> None:
    assert parse_sites(None) is None
    assert parse_sites(["b", "a,c", " d , b"]) == ("b", "a", "c", "d")
    with pytest.raises(InputError, match=r"^--site"):
        parse_sites(["a,,b"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site,day", ("site", "day")),
        ("hour", ("hour",)),
        ("day, site", ("day", "site")),
        ("site", ("site",)),
        ("none", ()),
    ],
)
def test_parse_by_accepts(text: str, expected: tuple[str, ...]) -> None:
    assert parse_by(text, BY_KEYS) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("site,week", "unknown key 'week'"),
        ("site,site", "more than once"),
        ("hour,day", "choose one of hour and day"),
        ("", "unknown key ''"),
    ],
)
def test_parse_by_rejects_with_the_option_named(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=r"^--by") as info:
        parse_by(text, BY_KEYS)
    assert problem in str(info.value)


# --- renderings -----------------------------------------------------------------------------


def energy_frame(sites: int = 2, days: int = 3, seed: int = 7) -> pd.DataFrame:
    """Energy rows per site and day shaped like ``energy_report(by=("site", "day"))``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sites):
        for d in range(days):
            used = float(rng.uniform(0, 50))
            grid = float(rng.uniform(0, 50))
            rows.append(
                {
                    "site_id": f"site-{s:03d}",
                    "period_start_at": pd.Timestamp(DAY0 + timedelta(days=d)),
                    "load_kwh": used + grid,
                    "renewable_kwh": used + 5.0,
                    "renewable_used_kwh": used,
                    "grid_kwh": grid,
                    "curtailed_kwh": 5.0,
                    "captured_surplus_kwh": used,
                    "renewable_share": used / (used + grid),
                    "emissions_kg": np.nan if s == 0 else 0.2 * grid,
                    "migration_kwh": 0.0,
                }
            )
    return pd.DataFrame(rows)


ENERGY_TOTALS = Totals(
    sums=("load_kwh", "renewable_used_kwh", "grid_kwh", "curtailed_kwh", "emissions_kg"),
    ratios=(Ratio("renewable_share", "renewable_used_kwh", "load_kwh"),),
)


def test_table_has_units_in_headers_and_a_total_row_with_recomputed_share() -> None:
    frame = energy_frame()
    lines = format_table(table_of_frame(frame), ENERGY_TOTALS).splitlines()
    header = lines[0]
    for text in (
        "site",
        "period start [UTC]",
        "load [kWh]",
        "renewable used [kWh]",
        "renewable share [%]",
        "emissions [kg]",
    ):
        assert text in header
    assert len(lines) == 2 + len(frame) + 2  # header, rule, rows, rule, total
    assert lines[2].split()[:2] == ["site-000", "2026-06-01"]  # a day shown as a date
    total = lines[-1].split()
    assert total[0] == "TOTAL"
    load = frame["load_kwh"].sum()
    share = frame["renewable_used_kwh"].sum() / load
    assert f"{load:,.2f}" in total
    assert f"{100 * share:.1f}" in total
    # Site 0 has no carbon intensity: the total is over the rows where emissions are known,
    # as SQL's SUM (and the report by nothing) has it.
    assert f"{frame['emissions_kg'].sum(skipna=True):,.2f}" in total
    assert "-" not in total


def test_total_is_unknown_only_when_no_row_is_known() -> None:
    frame = energy_frame()
    frame["emissions_kg"] = np.nan
    total = format_table(table_of_frame(frame), ENERGY_TOTALS).splitlines()[-1].split()
    assert total[0] == "TOTAL" and total.count("-") == 1


def test_table_of_one_row_has_no_total_and_an_empty_frame_says_so() -> None:
    one = format_table(table_of_frame(energy_frame(sites=1, days=1)), ENERGY_TOTALS)
    assert "TOTAL" not in one and len(one.splitlines()) == 3
    empty = format_table(table_of_frame(energy_frame().iloc[0:0]), ENERGY_TOTALS)
    assert "load [kWh]" in empty and "(no rows)" in empty


def test_table_shows_times_of_day_when_not_midnight() -> None:
    frame = energy_frame(sites=1, days=2)
    frame["period_start_at"] = frame["period_start_at"] + pd.Timedelta(hours=13)
    assert "2026-06-01 13:00" in format_table(table_of_frame(frame))


def test_csv_has_header_full_precision_iso_times_and_empty_unknowns() -> None:
    frame = energy_frame()
    text = format_csv(table_of_frame(frame))
    back = pd.read_csv(io.StringIO(text))
    assert list(back.columns) == list(frame.columns)
    assert back["period_start_at"].iloc[0] == "2026-06-01T00:00:00+00:00"
    assert np.array_equal(back["load_kwh"].to_numpy(), frame["load_kwh"].to_numpy())
    assert back["emissions_kg"].isna().sum() == 3  # site 0's three days: empty fields


def test_json_records_with_iso_times_and_nulls() -> None:
    frame = energy_frame()
    records = json.loads(format_json(table_of_frame(frame)))
    assert len(records) == len(frame)
    first = records[0]
    assert list(first) == list(frame.columns)
    assert first["period_start_at"] == "2026-06-01T00:00:00+00:00"
    assert datetime.fromisoformat(records[-1]["period_start_at"]) == DAY0 + timedelta(days=2)
    assert first["emissions_kg"] is None
    assert first["load_kwh"] == frame["load_kwh"].iloc[0]


def test_render_text_refuses_parquet() -> None:
    with pytest.raises(InputError, match=r"^--format parquet"):
        render_text(table_of_frame(energy_frame()), "parquet")


def test_parquet_round_trip_keeps_types_and_aware_times(tmp_path: Path) -> None:
    frame = energy_frame()
    path = tmp_path / "energy.parquet"
    write_parquet(table_of_frame(frame), path)
    back = pd.read_parquet(path)
    assert list(back.columns) == list(frame.columns)
    assert str(back["period_start_at"].dt.tz) == "UTC"
    assert back["period_start_at"].iloc[0] == pd.Timestamp(DAY0)
    assert np.allclose(back["load_kwh"], frame["load_kwh"])
    assert back["emissions_kg"].isna().sum() == 3


# --- plot -----------------------------------------------------------------------------------


def test_plot_is_a_png_of_the_documented_size(tmp_path: Path) -> None:
    path = tmp_path / "energy.png"
    summary = plot_energy(energy_frame(sites=3, days=5), path, period=timedelta(days=1))
    assert png_size(path) == PLOT_SIZE_PX
    assert summary.sites_total == 3 and summary.sites_other == 0 and summary.periods == 5
    assert "summed" not in summary.note()


def test_plot_of_a_hundred_sites_names_the_largest_and_sums_the_rest(tmp_path: Path) -> None:
    frame = energy_frame(sites=100, days=4)
    # Make site-042 the largest consumer by far: it must be named first.
    frame.loc[frame["site_id"] == "site-042", "grid_kwh"] += 1000.0
    path = tmp_path / "fleet.png"
    summary = plot_energy(frame, path, period=timedelta(days=1))
    assert png_size(path) == PLOT_SIZE_PX
    assert len(summary.sites_named) == MAX_NAMED_SITES
    assert summary.sites_named[0] == "site-042"
    assert summary.sites_other == 100 - MAX_NAMED_SITES
    assert f"the other {100 - MAX_NAMED_SITES} summed" in summary.note()


def test_plot_fills_gaps_and_draws_an_empty_selection(tmp_path: Path) -> None:
    frame = energy_frame(sites=2, days=10)
    gappy = frame[~frame["period_start_at"].dt.day.isin([3, 4, 5])]
    summary = plot_energy(gappy, tmp_path / "gappy.png", period=timedelta(days=1))
    assert summary.periods == 10
    empty = plot_energy(frame.iloc[0:0], tmp_path / "empty.png", period=timedelta(hours=1))
    assert png_size(tmp_path / "empty.png") == PLOT_SIZE_PX
    assert empty.sites_total == 0 and "no energy rows" in empty.note()


# --- end to end: a database of each backend, the CLI in-process ------------------------------

ROOT = Path(__file__).resolve().parents[2]
SITES = ("s1", "s2", "s3")
STEP = timedelta(minutes=30)
STEPS = 2 * 48  # two days of half-hour rows per site


@dataclass(frozen=True)
class Written:
    """The ledger the fixture wrote: one dict per row, as the test computes its sums."""

    rows: list[dict[str, Any]]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _ledger_values(site_index: int, step: int) -> dict[str, float]:
    """A deterministic, varying half hour of one site [kWh]."""
    load_kwh = 1.0 + 0.5 * site_index + 0.1 * (step % 7)
    renewable_kwh = 0.25 * (step % 11)
    used_kwh = min(load_kwh, renewable_kwh)
    return {
        "load_kwh": load_kwh,
        "renewable_kwh": renewable_kwh,
        "renewable_used_kwh": used_kwh,
        "grid_kwh": load_kwh - used_kwh,
        "curtailed_kwh": renewable_kwh - used_kwh,
        "migration_kwh": 0.125 if step % 24 == 0 else 0.0,
    }


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    """The example configuration pointing at the upgraded database of each backend."""
    text = (ROOT / "config" / "example.toml").read_text()
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace('url = "sqlite:///dr-gateway.db"', f'url = "{database_url}"'))
    return path


@pytest.fixture
def written(session_factory: sessionmaker[Session]) -> Written:
    """Three sites, two days of ledger rows written through the rollup path, three
    migrations and one LOAD_DISPATCH event on s1."""
    rows: list[dict[str, Any]] = []
    with unit_of_work(session_factory) as session:
        for site_id in SITES:
            session.add(
                models.Site(
                    id=site_id,
                    gpus_total=8,
                    it_power_max_kw=100.0,
                    pue=1.2,
                    wan_bandwidth_gbps=10.0,
                    controller_url=f"http://127.0.0.1:1/{site_id}",
                    vtn_id="vtn-1",
                    resource_id=f"res-{site_id}",
                    updated_at=DAY0,
                )
            )
        session.flush()
        for site_index, site_id in enumerate(SITES):
            for step in range(STEPS):
                start_at = DAY0 + step * STEP
                values = _ledger_values(site_index, step)
                session.add(
                    models.LedgerRow(
                        site_id=site_id,
                        interval_start_at=start_at,
                        interval_end_at=start_at + STEP,
                        **values,
                    )
                )
                add_to_rollups(session, site_id, start_at)
                rows.append({"site_id": site_id, "interval_start_at": start_at, **values})
        for job_id, site_id in (("j1", "s1"), ("j2", "s2"), ("j3", "s3")):
            session.add(
                models.Job(
                    id=job_id,
                    site_id=site_id,
                    gpus=1,
                    power_kw=0.7,
                    checkpoint_gb=12.0,
                    work_remaining_gpu_h=10.0,
                    migratable=True,
                    state="running",
                    first_seen_at=DAY0,
                    arrived_at_site_at=DAY0,
                    updated_at=DAY0,
                )
            )
        session.flush()
        for number, (job_id, source, target, state, hours) in enumerate(
            (
                ("j1", "s1", "s2", "completed", 2),
                ("j2", "s2", "s3", "aborted", 26),
                ("j3", "s3", "s1", "transferring", 40),
            ),
            start=1,
        ):
            planned_at = DAY0 + timedelta(hours=hours)
            session.add(
                models.Migration(
                    id=f"m{number}",
                    job_id=job_id,
                    source_site_id=source,
                    target_site_id=target,
                    state=state,
                    reason="test",
                    checkpoint_gb=12.0 * number,
                    expected_s=100.0 * number,
                    expected_kwh=0.1 * number,
                    downtime_s=None if state == "transferring" else 60.0 * number,
                    migration_kwh=None if state == "transferring" else 0.5 * number,
                    planned_at=planned_at,
                    checkpointing_at=planned_at + timedelta(seconds=10),
                    transferring_at=planned_at + timedelta(seconds=30),
                    completed_at=planned_at + timedelta(seconds=90)
                    if state == "completed"
                    else None,
                    aborted_at=planned_at + timedelta(seconds=50) if state == "aborted" else None,
                    updated_at=planned_at,
                )
            )
        session.add(
            models.Event(
                vtn_id="vtn-1",
                event_id="ev-1",
                modification_number=0,
                status="completed",
                market_context="http://market.example/ctx",
                response_required="always",
                start_at=DAY0 + timedelta(days=1, hours=12),
                duration_s=3600.0,
                received_at=DAY0 + timedelta(days=1),
                targets=[models.EventTarget(kind="resource_id", value="res-s1")],
                signals=[
                    models.EventSignal(
                        position=0,
                        signal_id="sig-1",
                        signal_name="LOAD_DISPATCH",
                        signal_type="delta",
                        units="powerReal",
                        intervals=[models.EventInterval(position=0, duration_s=3600.0, value=-2.0)],
                    )
                ],
                responses=[
                    models.EventResponse(
                        opt="optIn", reason="test", responded_at=DAY0 + timedelta(days=1)
                    )
                ],
            )
        )
    return Written(rows)


def _cli(*args: str) -> int:
    return main(["report", *args])


def _expected_by_site_day(written: Written) -> pd.DataFrame:
    """The ledger's sums per site and UTC day, computed here from the rows written."""
    frame = written.frame()
    frame["period_start_at"] = frame["interval_start_at"].map(
        lambda at: at.replace(hour=0, minute=0)
    )
    sums = ["load_kwh", "renewable_used_kwh", "grid_kwh", "curtailed_kwh", "migration_kwh"]
    return frame.groupby(["site_id", "period_start_at"], as_index=False)[sums].sum()


def test_energy_csv_json_table_parquet_and_plot_agree_with_the_ledger(
    config: Path,
    written: Written,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = _expected_by_site_day(written)
    assert len(expected) == len(SITES) * 2

    assert _cli("energy", "--config", str(config), "--format", "csv") == 0
    csv_frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv_frame[["site_id", "period_start_at"]].itertuples(index=False)) == [
        (row.site_id, row.period_start_at.isoformat()) for row in expected.itertuples(index=False)
    ]
    for name in ("load_kwh", "renewable_used_kwh", "grid_kwh", "curtailed_kwh", "migration_kwh"):
        assert csv_frame[name].to_numpy() == pytest.approx(expected[name].to_numpy()), name
    share = expected["renewable_used_kwh"] / expected["load_kwh"]
    assert csv_frame["renewable_share"].to_numpy() == pytest.approx(share.to_numpy())

    # JSON: two of the sites, the second day only, fleet per hour.
    assert (
        _cli(
            "energy",
            "--config",
            str(config),
            "--site",
            "s1",
            "--site",
            "s3",
            "--since",
            "2026-06-02",
            "--until",
            "2026-06-03T00:00:00Z",
            "--by",
            "hour",
            "--format",
            "json",
        )
        == 0
    )
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 24
    assert set(records[0]) == {"period_start_at", *ENERGY_VALUE_COLUMNS}
    assert records[0]["period_start_at"] == "2026-06-02T00:00:00+00:00"
    assert records[5]["period_start_at"] == "2026-06-02T05:00:00+00:00"
    ledger = written.frame()
    chosen = ledger[
        ledger["site_id"].isin(["s1", "s3"])
        & (ledger["interval_start_at"] >= DAY0 + timedelta(days=1))
    ]
    assert sum(r["load_kwh"] for r in records) == pytest.approx(chosen["load_kwh"].sum())
    assert records[0]["emissions_kg"] is None  # no carbon intensity loaded

    # Table: units in the headers, one row per site and day, and a TOTAL row that equals the
    # fleet total over the range.
    assert _cli("energy", "--config", str(config)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "load [kWh]" in lines[0] and "renewable share [%]" in lines[0]
    assert len(lines) == 2 + len(expected) + 2
    total = lines[-1].split()
    assert total[0] == "TOTAL"
    assert f"{expected['load_kwh'].sum():,.2f}" in total
    fleet_share = expected["renewable_used_kwh"].sum() / expected["load_kwh"].sum()
    assert f"{100 * fleet_share:.1f}" in total

    # Parquet to a file, and the plot beside it: equal to the query's own frame.
    parquet = tmp_path / "energy.parquet"
    png = tmp_path / "energy.png"
    assert (
        _cli(
            "energy",
            "--config",
            str(config),
            "--format",
            "parquet",
            "--output",
            str(parquet),
            "--plot",
            str(png),
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"wrote {len(expected)} rows to {parquet}" in captured.err
    assert f"plot: {png}: 3 sites over 2 periods" in captured.err
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            direct = energy_report(connection)
    finally:
        engine.dispose()
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), direct, check_dtype=False)
    assert png_size(png) == PLOT_SIZE_PX

    # A plot of a report by site alone is drawn per day; --output for text formats.
    text_out = tmp_path / "by-site.csv"
    assert (
        _cli(
            "energy",
            "--config",
            str(config),
            "--by",
            "site",
            "--format",
            "csv",
            "--output",
            str(text_out),
            "--plot",
            str(png),
        )
        == 0
    )
    by_site = pd.read_csv(text_out)
    assert list(by_site["site_id"]) == list(SITES)
    assert "over 2 periods" in capsys.readouterr().err
    # By hour, the plot is per hour too.
    hourly_png = tmp_path / "hourly.png"
    assert (
        _cli("energy", "--config", str(config), "--by", "site,hour", "--plot", str(hourly_png)) == 0
    )
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 + len(SITES) * 48 + 2
    assert f"plot: {hourly_png}: 3 sites over 48 periods" in captured.err
    assert png_size(hourly_png) == PLOT_SIZE_PX


ENERGY_VALUE_COLUMNS = (
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "captured_surplus_kwh",
    "renewable_share",
    "emissions_kg",
    "migration_kwh",
)


def test_migrations_and_events_reports(
    config: Path, written: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del written
    assert _cli("migrations", "--config", str(config), "--format", "json") == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["migration_id"] for r in records] == ["m1", "m2", "m3"]
    assert [r["outcome"] for r in records] == ["completed", "aborted", "in_flight"]
    assert records[0]["planned_at"] == "2026-06-01T02:00:00+00:00"
    assert records[0]["completed_at"] == "2026-06-01T02:01:30+00:00"
    assert records[2]["downtime_s"] is None

    # --site matches source or target; --since selects by planned_at.
    assert _cli("migrations", "--config", str(config), "--site", "s1", "--format", "csv") == 0
    assert list(pd.read_csv(io.StringIO(capsys.readouterr().out))["migration_id"]) == ["m1", "m3"]
    assert _cli("migrations", "--config", str(config), "--since", "2026-06-02") == 0
    table = capsys.readouterr().out.splitlines()
    assert "downtime [s]" in table[0] and "checkpoint [GB]" in table[0]
    assert [line.split()[0] for line in table[2:-2]] == ["m2", "m3"]
    total = table[-1].split()
    assert total[0] == "TOTAL" and "120" in total  # m2's downtime; m3's is unknown yet

    parquet = tmp_path / "migrations.parquet"
    assert (
        _cli("migrations", "--config", str(config), "--format", "parquet", "--output", str(parquet))
        == 0
    )
    back = pd.read_parquet(parquet)
    assert list(back["migration_id"]) == ["m1", "m2", "m3"]
    assert str(back["planned_at"].dt.tz) == "UTC"

    assert _cli("events", "--config", str(config), "--format", "json") == 0
    [event] = json.loads(capsys.readouterr().out)
    assert (event["vtn_id"], event["event_id"], event["site_id"]) == ("vtn-1", "ev-1", "s1")
    assert event["start_at"] == "2026-06-02T12:00:00+00:00"
    assert event["opt"] == "optIn"
    assert event["requested_kwh"] == pytest.approx(2.0)  # 2 kW shed for one hour
    assert _cli("events", "--config", str(config), "--site", "s2", "--format", "csv") == 0
    assert pd.read_csv(io.StringIO(capsys.readouterr().out)).empty
    assert _cli("events", "--config", str(config)) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "requested [kWh]" in header and "delivery ratio [%]" in header


def test_events_by_interval(
    config: Path, written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    del written
    # one event of one hour on s1 at 12:00; one earlier day only, fewer than the 5 like days
    # the default programme needs: meter-before-after, the 15 minutes before 12:00 of the
    # half-hour row from 11:30 (step 71: 1.1 kWh, 2.2 kW); the hour drew 1.2 + 1.3 kWh
    assert _cli("events", "--config", str(config), "--by", "interval", "--format", "json") == 0
    [interval] = json.loads(capsys.readouterr().out)
    assert (interval["event_id"], interval["site_id"], interval["interval_index"]) == (
        "ev-1",
        "s1",
        0,
    )
    assert interval["start_at"] == "2026-06-02T12:00:00+00:00"
    assert interval["end_at"] == "2026-06-02T13:00:00+00:00"
    assert interval["kind"] == "shed"
    assert interval["opt"] == "optIn"
    assert interval["baseline_method"] == "meter-before-after"
    assert interval["requested_kw"] == pytest.approx(2.0)
    assert interval["requested_kwh"] == pytest.approx(2.0)
    assert interval["baseline_kw"] == pytest.approx(2.2)
    assert interval["actual_kwh"] == pytest.approx(2.5)
    assert interval["delivered_kwh"] == pytest.approx(2.2 - 2.5)
    assert interval["delivery_ratio"] == pytest.approx(-0.3 / 2.0)
    assert _cli("events", "--config", str(config), "--format", "json") == 0
    [event] = json.loads(capsys.readouterr().out)
    assert event["delivered_kwh"] == pytest.approx(interval["delivered_kwh"])
    assert event["baseline_method"] == "meter-before-after"
    assert _cli("events", "--config", str(config), "--by", "interval", "--format", "csv") == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame["interval_index"]) == [0]
    assert _cli("events", "--config", str(config), "--by", "interval") == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "interval index" in header and "requested [kW]" in header
    assert "baseline [kW]" in header and "delivery ratio [%]" in header


def test_events_by_an_unknown_level_exits_2_naming_it(
    offline_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("events", "--config", str(offline_config), "--by", "hour") == 2
    _assert_one_line_naming(capsys.readouterr().err, "--by hour: unknown level")


@pytest.fixture
def offline_config(tmp_path: Path) -> Path:
    """A configuration whose database is never opened: for errors found before any query."""
    text = (ROOT / "config" / "example.toml").read_text()
    path = tmp_path / "offline.toml"
    url = f"sqlite:///{tmp_path / 'never-created.db'}"
    path.write_text(text.replace('url = "sqlite:///dr-gateway.db"', f'url = "{url}"'))
    return path


def _assert_one_line_naming(err: str, named: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"dr-gateway: {named}"), err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--since", "last tuesday"], "--since last tuesday"),
        (["--until", "2026-06-01", "--since", "2026-06-02"], "--until 2026-06-01"),
        (["--format", "xml"], "--format xml"),
        (["--format", "parquet"], "--format parquet"),
        (["--by", "site,week"], "--by site,week"),
        (["--by", "day", "--since", "2026-06-01T06:00"], "--since 2026-06-01T06:00"),
        (["--by", "site", "--until", "2026-06-01T06:30"], "--until 2026-06-01T06:30"),
        (["--plot", "energy.svg"], "--plot energy.svg"),
        (["--output", "/nonexistent-dir/x.csv"], "--output /nonexistent-dir/x.csv"),
    ],
)
def test_bad_options_exit_2_with_one_line_naming_the_option(
    offline_config: Path, args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("energy", "--config", str(offline_config), *args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_one_line_naming(captured.err, named)
    assert not (offline_config.parent / "never-created.db").exists()


def test_an_unknown_site_exits_2_naming_it(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind in ("energy", "migrations", "events"):
        assert _cli(kind, "--config", str(config), "--site", "nope,other") == 2
        _assert_one_line_naming(capsys.readouterr().err, "--site nope,other: no such site")


def test_options_before_the_kind_and_a_missing_config_are_refused(
    offline_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("--format", "json", "energy", "--config", str(offline_config)) == 2
    _assert_one_line_naming(capsys.readouterr().err, "--format: given before 'energy'")
    assert _cli() == 2
    _assert_one_line_naming(capsys.readouterr().err, "report: --config FILE is required")


def test_a_database_without_the_rollups_asks_for_an_upgrade(
    tmp_path: Path, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "config" / "example.toml").read_text()
    path = tmp_path / "old.toml"
    path.write_text(
        text.replace('url = "sqlite:///dr-gateway.db"', f'url = "{empty_database_url}"')
    )
    upgrade(empty_database_url, "0004")
    assert _cli("energy", "--config", str(path)) == 2
    err = capsys.readouterr().err
    assert "schema revision 0004" in err and "dr-gateway db upgrade" in err
    assert err.count("\n") == 1


def test_the_parser_offers_every_format_the_renderer_knows() -> None:
    assert FORMAT_NAMES == REPORT_FORMATS


def test_an_unreachable_database_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "config" / "example.toml").read_text()
    path = tmp_path / "down.toml"
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nothing-listens-on-port-1"
    path.write_text(text.replace('url = "sqlite:///dr-gateway.db"', f'url = "{url}"'))
    assert _cli("energy", "--config", str(path)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dr-gateway: report: cannot read the database at postgresql")
