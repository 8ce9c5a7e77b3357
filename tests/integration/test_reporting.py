"""The reporting views against hand-computed values, and the report's three renderings.

The fleet (on each backend):

- sites a and b behind VTN ``vtn-1``, c behind ``vtn-2``, d behind no VTN and without data;
- ledger rows for a (two intervals), b (load 0) and c;
- migrations completed, aborted and in flight between a, b and c;
- events with resource targets, without (addressing every site of the VTN), in several
  versions, with several answers, one cancelled, and one VTN's resource id reused by another.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session, sessionmaker

import models
from gateway.errors import InputError
from gateway.reports.summary import (
    REPORT_COLUMNS,
    SiteReportRow,
    fleet_totals,
    format_report,
    site_report,
)

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
QUARTER = timedelta(minutes=15)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _site(site_id: str, vtn_id: str | None) -> models.Site:
    return models.Site(
        id=site_id,
        gpus_total=8,
        it_power_max_kw=100.0,
        pue=1.2,
        wan_bandwidth_gbps=10.0,
        controller_url=f"http://127.0.0.1:1/{site_id}",
        vtn_id=vtn_id,
        resource_id=f"res-{site_id}",
        updated_at=T0,
    )


def _ledger(site_id: str, start_min: float, kwh: tuple[float, ...]) -> models.LedgerRow:
    load, renewable, used, grid, curtailed, migration = kwh
    return models.LedgerRow(
        site_id=site_id,
        interval_start_at=_at(start_min),
        interval_end_at=_at(start_min) + QUARTER,
        load_kwh=load,
        renewable_kwh=renewable,
        renewable_used_kwh=used,
        grid_kwh=grid,
        curtailed_kwh=curtailed,
        migration_kwh=migration,
    )


def _job(job_id: str, site_id: str) -> models.Job:
    return models.Job(
        id=job_id,
        site_id=site_id,
        gpus=1,
        power_kw=0.7,
        checkpoint_gb=12.0,
        work_remaining_gpu_h=10.0,
        migratable=True,
        state="running",
        first_seen_at=T0,
        arrived_at_site_at=T0,
        updated_at=T0,
    )


def _migration(
    migration_id: str,
    source: str,
    target: str,
    state: str,
    downtime_s: float | None = None,
    migration_kwh: float | None = None,
) -> models.Migration:
    return models.Migration(
        id=migration_id,
        job_id=f"job-{migration_id}",
        source_site_id=source,
        target_site_id=target,
        state=state,
        reason="test",
        checkpoint_gb=12.0,
        expected_s=100.0,
        expected_kwh=0.1,
        downtime_s=downtime_s,
        migration_kwh=migration_kwh,
        planned_at=T0,
        updated_at=T0,
    )


def _event(
    vtn_id: str,
    event_id: str,
    modification_number: int,
    status: str,
    targets: list[tuple[str, str]],
    answers: list[tuple[str, float]] | None = None,
) -> models.Event:
    """One version of an event; ``answers`` are (opt, minutes after T0) in insertion order."""
    return models.Event(
        vtn_id=vtn_id,
        event_id=event_id,
        modification_number=modification_number,
        status=status,
        market_context="http://market.example/ctx",
        response_required="always",
        start_at=_at(60),
        duration_s=3600.0,
        received_at=_at(modification_number),
        targets=[models.EventTarget(kind=kind, value=value) for kind, value in targets],
        responses=[
            models.EventResponse(opt=opt, reason="test", responded_at=_at(minutes))
            for opt, minutes in answers or []
        ],
    )


def _fleet() -> list[list[Any]]:
    """The fleet's rows in stages, each stage referring only to rows of earlier ones."""
    ven = ("ven_id", "ven-1")
    sites = [_site("a", "vtn-1"), _site("b", "vtn-1"), _site("c", "vtn-2"), _site("d", None)]
    jobs = [_job(f"job-m{n}", "a") for n in range(1, 7)]
    return [
        sites,
        jobs,
        [
            # load, renewable, renewable used, grid, curtailed, migration [kWh]
            _ledger("a", 0, (10.0, 8.0, 8.0, 2.0, 0.0, 0.5)),
            _ledger("a", 15, (20.0, 30.0, 20.0, 0.0, 10.0, 1.5)),
            _ledger("b", 0, (0.0, 5.0, 0.0, 0.0, 5.0, 0.0)),
            _ledger("c", 30, (40.0, 10.0, 10.0, 30.0, 0.0, 0.125)),
            _migration("m1", "a", "b", "completed", downtime_s=120.0, migration_kwh=0.75),
            _migration("m2", "a", "c", "completed", downtime_s=300.0, migration_kwh=1.25),
            _migration("m3", "a", "b", "aborted", downtime_s=60.0, migration_kwh=0.5),
            _migration("m4", "b", "a", "transferring"),
            _migration("m5", "c", "a", "planned"),
            _migration("m6", "c", "b", "completed", downtime_s=30.0, migration_kwh=0.125),
            # ev-1: version 0 addressed a, the latest (1) addresses b only; latest answer optIn.
            _event("vtn-1", "ev-1", 0, "far", [("resource_id", "res-a")], [("optIn", 1)]),
            _event(
                "vtn-1",
                "ev-1",
                1,
                "active",
                [("resource_id", "res-b")],
                [("optOut", 2), ("optIn", 3)],
            ),
            # ev-2: no resource target, so every site of vtn-1 (a and b); answered optOut.
            _event("vtn-1", "ev-2", 0, "near", [ven], [("optOut", 1)]),
            # ev-3: cancelled, a by resource id (beside a VEN target); the answers were stored
            # out of order: the later one (optOut) wins.
            _event("vtn-1", "ev-3", 0, "far", [("resource_id", "res-a")]),
            _event(
                "vtn-1",
                "ev-3",
                1,
                "cancelled",
                [ven, ("resource_id", "res-a")],
                [("optOut", 9), ("optIn", 4)],
            ),
            # ev-5: VEN-wide at first; the latest version (2) targets an unknown resource: nobody.
            _event("vtn-1", "ev-5", 0, "far", [ven], [("optIn", 1)]),
            _event("vtn-1", "ev-5", 2, "far", [("resource_id", "res-unknown")]),
            # vtn-2's ev-1 is another event than vtn-1's ev-1; no targets: every site of vtn-2.
            _event("vtn-2", "ev-1", 0, "active", []),
            # ev-7: answered in version 0, not yet in the latest version 1: neither in nor out.
            _event("vtn-2", "ev-7", 0, "far", [], [("optIn", 1)]),
            _event("vtn-2", "ev-7", 1, "far", []),
            # ev-6: vtn-2 names res-a, but site a is behind vtn-1: nobody.
            _event("vtn-2", "ev-6", 0, "active", [("resource_id", "res-a")], [("optIn", 1)]),
        ],
    ]


EXPECTED: dict[str, SiteReportRow] = {
    "a": SiteReportRow(
        site_id="a",
        renewable_used_kwh=28.0,
        grid_kwh=2.0,
        curtailed_kwh=10.0,
        load_kwh=30.0,
        renewable_share=28.0 / 30.0,
        migration_kwh=2.0,
        migrations_out=3,
        migrations_in=2,
        completed_migrations=2,
        downtime_s=420.0,
        events=2,
        opted_in=0,
        opted_out=2,
    ),
    "b": SiteReportRow(
        site_id="b",
        renewable_used_kwh=0.0,
        grid_kwh=0.0,
        curtailed_kwh=5.0,
        load_kwh=0.0,
        renewable_share=None,
        migration_kwh=0.0,
        migrations_out=1,
        migrations_in=3,
        completed_migrations=0,
        downtime_s=0.0,
        events=2,
        opted_in=1,
        opted_out=1,
    ),
    "c": SiteReportRow(
        site_id="c",
        renewable_used_kwh=10.0,
        grid_kwh=30.0,
        curtailed_kwh=0.0,
        load_kwh=40.0,
        renewable_share=0.25,
        migration_kwh=0.125,
        migrations_out=2,
        migrations_in=1,
        completed_migrations=1,
        downtime_s=30.0,
        events=2,
        opted_in=0,
        opted_out=0,
    ),
    "d": SiteReportRow(
        site_id="d",
        renewable_used_kwh=0.0,
        grid_kwh=0.0,
        curtailed_kwh=0.0,
        load_kwh=0.0,
        renewable_share=None,
        migration_kwh=0.0,
        migrations_out=0,
        migrations_in=0,
        completed_migrations=0,
        downtime_s=0.0,
        events=0,
        opted_in=0,
        opted_out=0,
    ),
}

EXPECTED_ENERGY_EXTRA = {
    # site: (renewable_kwh, first_interval_at, last_interval_at)
    "a": (38.0, _at(0), _at(30)),
    "b": (5.0, _at(0), _at(15)),
    "c": (10.0, _at(30), _at(45)),
    "d": (0.0, None, None),
}

EXPECTED_MIGRATIONS = {
    # site: (completed_out, aborted_out, in_flight, downtime_s, migration_kwh)
    "a": (2, 1, 2, 420.0, 2.0),
    "b": (0, 0, 1, 0.0, 0.0),
    "c": (1, 0, 1, 30.0, 0.125),
    "d": (0, 0, 0, 0.0, 0.0),
}

EXPECTED_EVENTS = {
    # site: (events, opted_in, opted_out, cancelled)
    "a": (2, 0, 2, 1),
    "b": (2, 1, 1, 0),
    "c": (2, 0, 0, 0),
    "d": (0, 0, 0, 0),
}


@pytest.fixture
def fleet(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The database of every test here, filled with the fleet above."""
    with session_factory.begin() as session:
        for stage in _fleet():
            session.add_all(stage)
            session.flush()
    return session_factory


def _assert_rows_equal(actual: SiteReportRow, expected: SiteReportRow) -> None:
    for name in REPORT_COLUMNS:
        got, want = getattr(actual, name), getattr(expected, name)
        if isinstance(want, float):
            assert got == pytest.approx(want), f"{actual.site_id}.{name}"
        else:
            assert got == want, f"{actual.site_id}.{name}"
            assert type(got) is type(want), f"{actual.site_id}.{name}"


def test_site_report_matches_hand_computed_values(fleet: sessionmaker[Session]) -> None:
    with fleet() as session:
        rows = site_report(session)
    assert [row.site_id for row in rows] == ["a", "b", "c", "d"]
    for row in rows:
        _assert_rows_equal(row, EXPECTED[row.site_id])


def test_site_report_of_one_site_and_through_a_connection(fleet: sessionmaker[Session]) -> None:
    with fleet() as session:
        connection: Connection = session.connection()
        assert site_report(connection, site_id="c") == site_report(session, "c")
        [row] = site_report(connection, site_id="c")
        _assert_rows_equal(row, EXPECTED["c"])
        assert site_report(session, site_id="nowhere") == []


def test_site_report_lists_sites_of_an_empty_fleet_with_zeros(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as session:
        session.add(_site("d", None))
    with session_factory() as session:
        [row] = site_report(session)
    _assert_rows_equal(row, EXPECTED["d"])


def test_site_energy_view_columns(fleet: sessionmaker[Session]) -> None:
    query = text(
        "SELECT site_id, load_kwh, renewable_kwh, renewable_used_kwh, grid_kwh, curtailed_kwh,"
        " migration_kwh, renewable_share, first_interval_at, last_interval_at"
        " FROM site_energy ORDER BY site_id"
    ).columns(first_interval_at=models.UTCDateTime(), last_interval_at=models.UTCDateTime())
    with fleet() as session:
        rows = session.execute(query).mappings().all()
    assert [row["site_id"] for row in rows] == ["a", "b", "c", "d"]
    for row in rows:
        site = row["site_id"]
        report = EXPECTED[site]
        renewable_kwh, first_at, last_at = EXPECTED_ENERGY_EXTRA[site]
        assert row["load_kwh"] == pytest.approx(report.load_kwh)
        assert row["renewable_kwh"] == pytest.approx(renewable_kwh)
        assert row["renewable_used_kwh"] == pytest.approx(report.renewable_used_kwh)
        assert row["grid_kwh"] == pytest.approx(report.grid_kwh)
        assert row["curtailed_kwh"] == pytest.approx(report.curtailed_kwh)
        assert row["migration_kwh"] == pytest.approx(report.migration_kwh)
        assert row["renewable_share"] == pytest.approx(report.renewable_share)
        assert row["first_interval_at"] == first_at
        assert row["last_interval_at"] == last_at


def test_site_migrations_view_columns(fleet: sessionmaker[Session]) -> None:
    query = text(
        "SELECT site_id, migrations_out, migrations_in, completed_out, aborted_out, in_flight,"
        " downtime_s, migration_kwh FROM site_migrations ORDER BY site_id"
    )
    with fleet() as session:
        rows = session.execute(query).all()
    assert [row.site_id for row in rows] == ["a", "b", "c", "d"]
    for row in rows:
        report = EXPECTED[row.site_id]
        completed, aborted, in_flight, downtime_s, migration_kwh = EXPECTED_MIGRATIONS[row.site_id]
        assert (row.migrations_out, row.migrations_in) == (
            report.migrations_out,
            report.migrations_in,
        )
        assert (row.completed_out, row.aborted_out, row.in_flight) == (
            completed,
            aborted,
            in_flight,
        )
        assert row.downtime_s == pytest.approx(downtime_s)
        assert row.migration_kwh == pytest.approx(migration_kwh)


def test_site_events_view_columns(fleet: sessionmaker[Session]) -> None:
    query = text(
        "SELECT site_id, events, opted_in, opted_out, cancelled FROM site_events ORDER BY site_id"
    )
    with fleet() as session:
        rows = session.execute(query).all()
    assert {row.site_id: tuple(row[1:]) for row in rows} == EXPECTED_EVENTS


def test_fleet_totals_sum_sites_and_recompute_the_share() -> None:
    total = fleet_totals(list(EXPECTED.values()))
    expected = SiteReportRow(
        site_id="TOTAL",
        renewable_used_kwh=38.0,
        grid_kwh=32.0,
        curtailed_kwh=15.0,
        load_kwh=70.0,
        renewable_share=38.0 / 70.0,
        migration_kwh=2.125,
        migrations_out=6,
        migrations_in=6,
        completed_migrations=3,
        downtime_s=450.0,
        events=6,
        opted_in=1,
        opted_out=3,
    )
    _assert_rows_equal(total, expected)


def test_fleet_totals_of_no_load_has_no_share() -> None:
    total = fleet_totals([EXPECTED["b"], EXPECTED["d"]])
    assert total.renewable_share is None
    assert fleet_totals([]).load_kwh == 0.0


def _rows() -> list[SiteReportRow]:
    return [EXPECTED[site] for site in ("a", "b", "c", "d")]


def test_table_is_aligned_with_units_and_a_total_row() -> None:
    text = format_report(_rows(), "table")
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    header, rule, *body, last_rule, total = lines
    assert len({len(line) for line in lines}) == 1, "every line has the same width"
    assert set(rule) == {"-", " "} and rule == last_rule
    assert "load [kWh]" in header and "downtime [s]" in header and "[%]" in header
    # The columns' right edges line up with the header's (left edge for the site id).
    right_edges = [
        i + 1 for i, char in enumerate(rule) if char == "-" and rule[i + 1 : i + 2] != "-"
    ]
    for line in [header, *body, total]:
        assert all(line[edge - 1] != " " for edge in right_edges[1:]), line
    cells = {line.split()[0]: line.split()[1:] for line in [*body, total]}
    energy_a = ["30.00", "28.00", "2.00", "10.00", "93.3", "2.00"]
    counts_a = ["3", "2", "2", "420", "2", "0", "2"]
    assert cells["a"] == energy_a + counts_a
    assert cells["b"][4] == "-"  # no load, no share
    energy_total = ["70.00", "38.00", "32.00", "15.00", "54.3", "2.12"]
    counts_total = ["6", "6", "3", "450", "6", "1", "3"]
    assert cells["TOTAL"] == energy_total + counts_total


def test_table_of_no_sites_still_has_its_total() -> None:
    header, _rule, _last_rule, total = format_report([], "table").splitlines()
    assert header.startswith("site")
    assert total.split() == ["TOTAL", "0.00", "0.00", "0.00", "0.00", "-", "0.00"] + ["0"] * 7


def test_csv_parses_back_to_the_rows() -> None:
    text = format_report(_rows(), "csv")
    assert text.endswith("\n") and not text.endswith("\n\n")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == list(REPORT_COLUMNS)
    assert [row["site_id"] for row in parsed] == ["a", "b", "c", "d"]
    for row, expected in zip(parsed, _rows(), strict=True):
        for name, want in asdict(expected).items():
            if want is None:
                assert row[name] == ""
            elif isinstance(want, int):
                assert int(row[name]) == want
            elif isinstance(want, float):
                assert float(row[name]) == want  # full precision, not rounded
            else:
                assert row[name] == want


def test_json_parses_back_to_the_rows() -> None:
    text = format_report(_rows(), "json")
    assert text.endswith("]\n")
    parsed = json.loads(text)
    assert parsed == [asdict(row) for row in _rows()]
    assert all(list(obj) == list(REPORT_COLUMNS) for obj in parsed)
    assert parsed[1]["renewable_share"] is None


def test_unknown_format_is_refused() -> None:
    with pytest.raises(InputError, match="table, csv, json"):
        format_report(_rows(), "xml")  # type: ignore[arg-type]
