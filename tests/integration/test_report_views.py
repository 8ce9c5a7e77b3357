"""The report views of revision 0005: they exist after an upgrade, every column is documented
with its unit, and they give hand-computed answers (event baseline and delivery, migration
phases, energy per hour with captured surplus and emissions), on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.cli import main
from gateway.db import make_engine, unit_of_work, upgrade
from gateway.errors import InputError
from gateway.events import OptDecision
from gateway.reports.carbon import IntensityInterval, store_intensity
from gateway.reports.frames import energy_report, event_report, migration_report
from gateway.reports.queries import ENERGY_COLUMNS, energy_captured_kwh
from gateway.reports.rollups import rebuild_rollups
from gateway.ven import store as event_store
from models import Job, LedgerRow, Migration
from tests.support.reporting_data import dr_event, fleet_settings, ledger_row

VIEWS = (
    "event_site_windows",
    "event_site_intervals",
    "ledger_accounted",
    "site_energy_hourly",
    "site_energy_daily",
    "migration_timeline",
    "event_delivery",
    "event_interval_delivery",
)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "views.md"
UNIT_OF_SUFFIX = (
    ("g_co2_per_kwh", "g CO2/kWh"),
    ("_kwh", "kWh"),
    ("_kw", "kW"),
    ("_s", "s"),
    ("_at", "UTC"),
    ("_kg", "kg CO2"),
    ("_gb", "GB"),
    ("_bytes", "bytes"),
)
"""Name endings and the unit docs/views.md must give them (the first that matches)."""

D = datetime(2027, 5, 20, tzinfo=UTC)
"""The day of the hand-computed events."""


def _documented_columns() -> dict[str, dict[str, str]]:
    """view -> column -> unit, from the tables of docs/views.md (a heading may name several
    views; a row's first cell may name several columns)."""
    out: dict[str, dict[str, str]] = {}
    views: list[str] = []
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            views = re.findall(r"`(\w+)`", line)
            for view in views:
                out.setdefault(view, {})
            continue
        row = re.match(r"^\| ((?:`\w+`(?:, )?)+) \|([^|]*)\|", line)
        if row:
            for view in views:
                for name in re.findall(r"`(\w+)`", row.group(1)):
                    out[view][name] = row.group(2).strip()
    return out


def _columns(engine: Engine, view: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(f"SELECT * FROM {view} WHERE 1 = 0")).keys())


def test_upgrade_creates_the_views_and_docs_give_each_column_a_unit(
    empty_database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\nurl = "{empty_database_url}"\nauto_upgrade = false\n')
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    engine = make_engine(empty_database_url)
    try:
        _check_documented(engine)
    finally:
        engine.dispose()


def _check_documented(engine: Engine) -> None:
    assert set(VIEWS) <= set(inspect(engine).get_view_names())
    documented = _documented_columns()
    for view in VIEWS:
        columns = _columns(engine, view)
        assert view in documented, f"docs/views.md has no section for {view}"
        assert set(documented[view]) == set(columns), view
        for name in columns:
            unit = next((u for suffix, u in UNIT_OF_SUFFIX if name.endswith(suffix)), None)
            if unit is not None:
                assert documented[view][name] == unit, (view, name)


def _hourly(
    site_id: str, day: datetime, load_of_hour: dict[int, float], default: float
) -> list[LedgerRow]:
    return [
        ledger_row(site_id, day + timedelta(hours=h), 3600.0, load_of_hour.get(h, default), 0.0)
        for h in range(24)
    ]


def _seed_events(sessions: sessionmaker[Session], database_url: str) -> None:
    """alpha: hourly rows for 12 days before D at 5 + k kWh per hour on day D-k, an event on
    D-3, and on D 8 kWh in 14:00-16:00 and 11 kWh otherwise. beta: rows only on D, 9 kWh per
    hour, 7 in 10:00-11:00 and 11 in 20:00-21:00."""
    settings = fleet_settings(database_url, ["alpha", "beta"])
    rows = []
    for k in range(1, 13):
        rows += _hourly("alpha", D - timedelta(days=k), {}, 5.0 + k)
    rows += _hourly("alpha", D, {14: 8.0, 15: 8.0}, 11.0)
    rows += _hourly("beta", D, {10: 7.0, 20: 11.0}, 9.0)
    events = [
        dr_event("OLD", D - timedelta(days=3, hours=-9), ("SIMPLE", "level"), [(3600.0, 1)],
                 sites=["alpha"]),
        dr_event("SHED", D + timedelta(hours=14), ("LOAD_DISPATCH", "delta"),
                 [(3600.0, -2.0), (3600.0, -4.0)], sites=["alpha"]),
        dr_event("LEVEL", D + timedelta(hours=18), ("SIMPLE", "level"), [(3600.0, 2)],
                 sites=["alpha"]),
        dr_event("CAP", D + timedelta(hours=10), ("LOAD_CONTROL", "x-loadControlCapacity"),
                 [(3600.0, 0.5)], sites=["beta"]),
        dr_event("PRICE", D + timedelta(hours=20), ("ELECTRICITY_PRICE", "price"),
                 [(3600.0, -1.0)], sites=["beta"]),
        dr_event("FUTURE", D + timedelta(days=1, hours=10), ("LOAD_DISPATCH", "delta"),
                 [(3600.0, -1.0)], sites=["alpha"]),
    ]  # fmt: skip
    with unit_of_work(sessions) as session:
        fleet.sync_sites(session, settings.site, D)
        session.flush()
        session.add_all(rows)
        for event in events:
            row, _new = event_store.save_event(session, event, D - timedelta(days=20))
            if event.event_id == "SHED":
                event_store.save_response(
                    session, row, OptDecision("optIn", "can shed"), D - timedelta(days=20)
                )
        rebuild_rollups(session.connection())


def _by_event(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in frame.to_dict("records")}


def test_event_delivery_against_a_hand_computed_baseline(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    _seed_events(session_factory, database_url)
    with engine.connect() as conn:
        report = event_report(conn)
        alpha_only = event_report(conn, site_ids=["alpha"], since=D, until=D + timedelta(days=1))
    events = _by_event(report)
    assert set(events) == {"OLD", "SHED", "LEVEL", "CAP", "PRICE", "FUTURE"}
    assert set(_by_event(alpha_only)) == {"SHED", "LEVEL"}

    # like-days: D is a Thursday; the like days are the weekdays among the 45 before it
    # without an event: D-3 (Monday) had OLD, D-4, D-5, D-11, D-12 are weekend days, so
    # k = 1, 2, 6, 7, 8, 9, 10: 7 days (at least the 5 required), 5 + 43/7 kWh per hour.
    like_kw = 5.0 + 43.0 / 7.0
    shed = events["SHED"]
    assert shed["site_id"] == "alpha"
    assert shed["signal"] == "LOAD_DISPATCH/delta"
    assert shed["direction"] == "shed"
    assert shed["opt"] == "optIn"
    assert shed["baseline_method"] == "like-days"
    assert shed["baseline_days"] == 7
    assert shed["start_at"] == D + timedelta(hours=14)
    assert shed["end_at"] == D + timedelta(hours=16)
    # same-day adjustment over 10:00-13:00 (3 h ending an hour before the start): 11 kW
    # measured against like_kw, a ratio of 0.987 within the 20 % cap: 11 kWh per hour
    assert shed["requested_kwh"] == pytest.approx(2.0 + 4.0)
    assert shed["baseline_kwh"] == pytest.approx(2 * 11.0)
    assert shed["actual_kwh"] == pytest.approx(16.0)
    assert shed["delivered_kwh"] == pytest.approx(22.0 - 16.0)
    assert shed["delivery_ratio"] == pytest.approx(6.0 / 6.0)

    # SIMPLE level 2: half of the baseline; adjustment over 14:00-17:00 (8, 8, 11 kWh): 9 kW
    # against like_kw, 0.808, inside the cap
    level = events["LEVEL"]
    assert level["baseline_kwh"] == pytest.approx(9.0)
    assert level["requested_kwh"] == pytest.approx(0.5 * 9.0)
    assert level["delivered_kwh"] == pytest.approx(9.0 - 11.0)
    assert level["delivery_ratio"] == pytest.approx(-2.0 / 4.5)
    assert pd.isna(level["opt"])

    # no earlier day of beta: meter-before-after, the 15 minutes before 10:00 (9 kW); cap
    # 0.5*10*1.25 kW
    cap = events["CAP"]
    assert cap["baseline_method"] == "meter-before-after"
    assert cap["baseline_days"] == 0
    assert cap["baseline_kwh"] == pytest.approx(9.0)
    assert cap["requested_kwh"] == pytest.approx(9.0 - 6.25)
    assert cap["actual_kwh"] == pytest.approx(7.0)
    assert cap["delivery_ratio"] == pytest.approx(2.0 / 2.75)

    price = events["PRICE"]  # grid surplus: absorb up to the site's 12.5 kW
    assert price["direction"] == "absorb"
    assert price["requested_kwh"] == pytest.approx(12.5 - 9.0)
    assert price["delivered_kwh"] == pytest.approx(11.0 - 9.0)
    assert price["delivery_ratio"] == pytest.approx(2.0 / 3.5)

    # not yet accounted: nothing delivered yet; no rows in its adjustment window: ratio 1
    future = events["FUTURE"]
    assert future["baseline_method"] == "like-days"
    assert future["baseline_kwh"] == pytest.approx(like_kw)
    assert future["requested_kwh"] == pytest.approx(1.0)
    assert future["actual_kwh"] is None or math.isnan(future["actual_kwh"])
    assert future["delivered_kwh"] is None or math.isnan(future["delivered_kwh"])


def test_event_site_intervals_place_each_interval_and_say_what_it_asks(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    _seed_events(session_factory, database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT interval_position, ask, power_kw, duration_s FROM event_site_intervals "
                "WHERE event_id = 'SHED' ORDER BY interval_position"
            )
        ).all()
        price = conn.execute(
            text("SELECT site_id, ask, power_kw FROM event_site_intervals WHERE event_id = 'PRICE'")
        ).all()
    assert [tuple(r) for r in rows] == [(0, "shed", 2.0, 3600.0), (1, "shed", 4.0, 3600.0)]
    assert [tuple(r) for r in price] == [("beta", "absorb", 12.5)]


def test_hourly_view_captured_surplus_emissions_and_units(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, ["alpha"])
    start = D + timedelta(hours=9)
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, start)
        session.flush()
        event_store.save_event(
            session,
            dr_event("ABSORB", start + timedelta(hours=1), ("LOAD_DISPATCH", "delta"),
                     [(1800.0, 3.0)]),
            start,
        )  # fmt: skip
        # four 30-minute rows from 09:00: load 2 kWh each, renewable 0.5 kWh each
        for i in range(4):
            session.add(ledger_row("alpha", start + timedelta(minutes=30 * i), 1800.0, 2.0, 0.5))
    with engine.begin() as conn:
        store_intensity(
            conn,
            [IntensityInterval(None, start, start + timedelta(hours=1), 400.0, 2)],
            "test",
            start,
        )
    with engine.connect() as conn:
        hourly = pd.DataFrame(
            conn.execute(text("SELECT * FROM site_energy_hourly ORDER BY period_start_at")).all()
        )
        captured = energy_captured_kwh(conn)
        report = energy_report(conn, by=("site", "hour"))
    assert list(hourly["ledger_rows"]) == [2, 2]
    assert list(hourly["load_kwh"]) == pytest.approx([4.0, 4.0])
    assert list(hourly["renewable_share"]) == pytest.approx([0.25, 0.25])
    # 10:00-10:30 lies in the surplus event: its grid energy (1.5 kWh) is captured too
    assert list(hourly["captured_surplus_kwh"]) == pytest.approx([1.0, 1.0 + 1.5])
    assert captured == pytest.approx(3.5)
    # 09:00 is covered by 400 g/kWh: 3 kWh of grid -> 1.2 kg; 10:00 has no intensity
    assert hourly["emissions_kg"][0] == pytest.approx(1.2)
    assert hourly["emissions_kg"][1] is None or math.isnan(hourly["emissions_kg"][1])
    assert list(hourly["emissions_coverage"]) == pytest.approx([1.0, 0.0])
    end = pd.to_datetime(hourly["period_end_at"], utc=True, format="ISO8601")
    begin = pd.to_datetime(hourly["period_start_at"], utc=True, format="ISO8601")
    assert list(end - begin) == [pd.Timedelta(hours=1)] * 2
    assert list(report.columns) == ["site_id", "period_start_at", *ENERGY_COLUMNS]
    assert str(report["period_start_at"].dt.tz) == "UTC"
    assert list(report["emissions_kg"].isna()) == [False, True]


def _migration(
    migration_id: str, state: str, planned_at: datetime, offsets_s: dict[str, float]
) -> Migration:
    """A migration planned at ``planned_at``, reaching each state ``offsets_s`` later [s]."""
    at = planned_at
    row = Migration(
        id=migration_id,
        job_id="job-1",
        source_site_id="alpha",
        target_site_id="beta",
        state=state,
        reason="test",
        checkpoint_gb=12.5,
        expected_s=400.0,
        expected_kwh=0.4,
        attempts=1,
        planned_at=at,
        updated_at=at,
    )
    for column, offset_s in offsets_s.items():
        setattr(row, column, at + timedelta(seconds=offset_s))
    return row


def test_migration_timeline_gives_each_state_and_phase(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, ["alpha", "beta", "gamma"])
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, D)
        session.flush()
        session.add(
            Job(
                id="job-1", site_id="alpha", gpus=4, power_kw=2.6, checkpoint_gb=12.5,
                work_remaining_gpu_h=10.0, migratable=True, state="running",
                first_seen_at=D, arrived_at_site_at=D, updated_at=D,
            )
        )  # fmt: skip
        noon = D + timedelta(hours=12)
        completed = _migration(
            "m-completed",
            "completed",
            noon,
            {
                "target_reserved_at": 2,
                "checkpointing_at": 5,
                "transferring_at": 65,
                "restoring_at": 365,
                "completed_at": 400,
            },
        )
        completed.downtime_s = 335.0
        completed.migration_kwh = 0.3
        aborted = _migration(
            "m-aborted",
            "aborted",
            noon + timedelta(minutes=1),
            {"target_reserved_at": 1, "checkpointing_at": 2, "transferring_at": 10,
             "aborted_at": 70},
        )  # fmt: skip
        flying = _migration(
            "m-flying",
            "checkpointing",
            noon + timedelta(minutes=2),
            {"target_reserved_at": 1, "checkpointing_at": 3},
        )
        flying.target_site_id = "gamma"
        session.add_all([completed, aborted, flying])
    with engine.connect() as conn:
        report = migration_report(conn)
        to_gamma = migration_report(conn, site_ids=["gamma"])
        later = migration_report(conn, since=D + timedelta(hours=12, seconds=30))
    rows = {r["migration_id"]: r for r in report.to_dict("records")}
    assert list(report["migration_id"]) == ["m-completed", "m-aborted", "m-flying"]
    assert list(to_gamma["migration_id"]) == ["m-flying"]
    assert list(later["migration_id"]) == ["m-aborted", "m-flying"]

    done = rows["m-completed"]
    assert done["outcome"] == "completed"
    assert done["checkpoint_bytes"] == pytest.approx(12.5e9)
    assert done["downtime_s"] == pytest.approx(335.0)
    assert done["migration_kwh"] == pytest.approx(0.3)
    assert done["ended_at"] == D + timedelta(hours=12, seconds=400)
    assert done["transferring_at"] == D + timedelta(hours=12, seconds=65)
    phases = ("planned_s", "target_reserved_s", "checkpointing_s", "transferring_s", "restoring_s")
    assert [done[p] for p in phases] == pytest.approx([2.0, 3.0, 60.0, 300.0, 35.0])
    assert done["total_s"] == pytest.approx(400.0)

    gone = rows["m-aborted"]
    assert gone["outcome"] == "aborted"
    assert gone["transferring_s"] == pytest.approx(60.0)
    assert gone["total_s"] == pytest.approx(70.0)
    assert gone["restoring_s"] is None or math.isnan(gone["restoring_s"])

    flying_row = rows["m-flying"]
    assert flying_row["outcome"] == "in_flight"
    assert flying_row["planned_s"] == pytest.approx(1.0)
    assert flying_row["target_reserved_s"] == pytest.approx(2.0)
    for name in ("checkpointing_s", "total_s"):
        assert flying_row[name] is None or math.isnan(flying_row[name])
    assert pd.isna(flying_row["ended_at"])


@pytest.mark.parametrize(
    ("label", "kwargs", "message"),
    [
        ("unknown key", {"by": ("site", "week")}, "by: unknown key 'week'"),
        ("hour and day", {"by": ("hour", "day")}, "hour or day, not both"),
        ("a string", {"by": "site"}, "by: expected a sequence"),
        (
            "empty range",
            {"since": D, "until": D},
            "is not before until",
        ),
        (
            "day off its boundary",
            {"since": D + timedelta(hours=1), "by": ("site", "day")},
            "since: .* is not on a day boundary",
        ),
        (
            "hour off its boundary",
            {"until": D + timedelta(minutes=5), "by": ("hour",)},
            "until: .* is not on a hour boundary",
        ),
        ("naive", {"since": datetime(2027, 5, 20)}, "since: .* has no time zone"),
    ],
)
def test_energy_report_rejects_bad_arguments(
    database_url: str, engine: Engine, label: str, kwargs: dict[str, Any], message: str
) -> None:
    with engine.connect() as conn, pytest.raises(InputError, match=message):
        energy_report(conn, **kwargs)


def test_reports_reject_an_empty_range(database_url: str, engine: Engine) -> None:
    with engine.connect() as conn:
        for report in (migration_report, event_report):
            with pytest.raises(InputError, match="is not before until"):
                report(conn, since=D, until=D - timedelta(days=1))
        # a range on hour boundaries without a period key is answered from the hourly rollup
        assert energy_report(conn, since=D + timedelta(hours=3), by=("site",)).empty


def test_energy_report_of_an_empty_database(database_url: str, engine: Engine) -> None:
    with engine.connect() as conn:
        by_day = energy_report(conn, by=("site", "day"))
        total = energy_report(conn, by=())
        captured = energy_captured_kwh(conn)
    assert list(by_day.columns) == ["site_id", "period_start_at", *ENERGY_COLUMNS]
    assert by_day.empty
    assert str(by_day["period_start_at"].dt.tz) == "UTC"
    assert len(total) == 1
    assert total["load_kwh"].iloc[0] == 0.0
    assert math.isnan(total["renewable_share"].iloc[0])
    assert math.isnan(total["emissions_kg"].iloc[0])
    assert captured == 0.0


def test_a_schema_without_rollups_fails_with_sqlalchemy_errors(empty_database_url: str) -> None:
    # the fast fetch reads through the DB-API cursor; its errors still come as SQLAlchemy's
    upgrade(empty_database_url, "0004")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            for by in (("site", "day"), ("site",)):
                with pytest.raises(DBAPIError, match="energy_rollup_day"):
                    energy_report(conn, by=by)
                conn.rollback()
    finally:
        engine.dispose()


def test_an_event_opted_out_then_cancelled_reports_the_opt_out_not_the_acknowledgement(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """The optIn that answers a cancellation acknowledges it (OpenADR 2.0b) and promises
    nothing: the views report the opt the VEN committed to. An event cancelled before any
    other answer reports the acknowledgement (there is nothing else)."""
    settings = fleet_settings(database_url, ["alpha"])
    start_at = D + timedelta(hours=14)
    shed = (("LOAD_DISPATCH", "delta"), [(3600.0, -2.0)])
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, D)
        session.flush()
        session.add_all(_hourly("alpha", D, {}, 10.0))
        answered_at = D + timedelta(hours=1)
        for event_id, first_opt in (("OUT", "optOut"), ("IN", "optIn"), ("EARLY", None)):
            first, _new = event_store.save_event(
                session, dr_event(event_id, start_at, *shed, sites=["alpha"]), answered_at
            )
            if first_opt is not None:
                event_store.save_response(
                    session, first, OptDecision(first_opt, "planner"), answered_at
                )
            cancelled = dr_event(
                event_id,
                start_at,
                *shed,
                sites=["alpha"],
                modification=1,
                status="cancelled",
                cancel_effective_at=start_at + timedelta(minutes=30),  # a half hour in force
            )
            row, _new = event_store.save_event(session, cancelled, answered_at + timedelta(hours=1))
            event_store.save_response(
                session,
                row,
                OptDecision("optIn", "cancellation acknowledged"),
                answered_at + timedelta(hours=1),
            )
        rebuild_rollups(session.connection())
    with engine.connect() as conn:
        report = _by_event(event_report(conn))
        intervals = conn.execute(
            text("SELECT DISTINCT event_id, opt FROM event_interval_delivery")
        ).all()
    assert {e: report[e]["opt"] for e in ("OUT", "IN", "EARLY")} == {
        "OUT": "optOut",
        "IN": "optIn",
        "EARLY": "optIn",
    }
    assert dict(intervals) == {"OUT": "optOut", "IN": "optIn", "EARLY": "optIn"}
