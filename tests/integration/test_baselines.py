"""Baselines: each method hand-computed in Python (``gateway/baselines.py``) and in SQL
(``event_interval_delivery``, revision 0006) on SQLite and PostgreSQL, and the two agreeing
on a random ledger with events."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.baselines import (
    Baseline,
    BaselineParams,
    LedgerSpan,
    baseline_kw,
    is_weekend,
    like_days,
    spans_from_ledger,
    spans_from_power,
    window_energy,
)
from gateway.db import unit_of_work
from gateway.events import DrEvent
from gateway.reports import baseline_input
from gateway.reports.rollups import rebuild_rollups
from gateway.ven import store as event_store
from models import LedgerRow, ProgrammeRow
from tests.support.reporting_data import PUE, dr_event, fleet_settings, ledger_row, site_status

D = datetime(2027, 5, 20, tzinfo=UTC)
"""A Thursday: D-4 and D-5 are a Sunday and a Saturday."""
START = D + timedelta(hours=14)
EVENT = [(START, START + timedelta(hours=1))]


def _hand_ledger(site_id: str, today_kwh: float) -> list[LedgerRow]:
    """Hourly rows: weekdays D-7..D-1 at 10 kWh per hour, the weekend at 100; on D
    ``today_kwh`` per hour until 12:00, 6 in 12:00-14:00, 7 in the event hour, 9 after."""
    rows = []
    for k in range(1, 8):
        day = D - timedelta(days=k)
        load_kwh = 100.0 if is_weekend(day.timestamp()) else 10.0
        rows += [
            ledger_row(site_id, day + timedelta(hours=h), 3600.0, load_kwh, 0.0) for h in range(24)
        ]
    for h in range(16):
        load_kwh = today_kwh if h < 12 else 6.0 if h < 14 else 7.0 if h == 14 else 9.0
        rows.append(ledger_row(site_id, D + timedelta(hours=h), 3600.0, load_kwh, 0.0))
    return rows


def _spans(rows: Sequence[LedgerRow]) -> tuple[LedgerSpan, ...]:
    return spans_from_ledger((r.interval_start_at, r.interval_end_at, r.load_kwh) for r in rows)


HAND_CASES: list[tuple[str, float, BaselineParams, str | None, float | None, float | None]] = [
    # label, load on D before 12:00, params, method used, baseline [kW], adjustment
    (
        "like-days, adjustment capped at +20 %: (16+16+6)/3 = 12.67 against 10",
        16.0,
        BaselineParams(),
        "like-days",
        12.0,
        1.2,
    ),
    (
        "like-days, adjustment capped at -20 %: (5+5+6)/3 = 5.33 against 10",
        5.0,
        BaselineParams(),
        "like-days",
        8.0,
        0.8,
    ),
    (
        "like-days, adjustment inside the cap: (11+11+6)/3 = 9.33 against 10",
        11.0,
        BaselineParams(),
        "like-days",
        28.0 / 3.0,
        28.0 / 30.0,
    ),
    (
        "like-days, a wider cap and a window ending at the start: 6 against 10",
        16.0,
        BaselineParams(adjustment_window_s=3600.0, adjustment_gap_s=0.0, adjustment_cap=0.5),
        "like-days",
        6.0,
        0.6,
    ),
    (
        "like-days without adjustment: the 5 weekdays' mean",
        16.0,
        BaselineParams(adjustment_window_s=0.0),
        "like-days",
        10.0,
        1.0,
    ),
    (
        "like-days with too few like days (5 < 6): meter-before-after, 15 min",
        16.0,
        BaselineParams(min_like_days=6),
        "meter-before-after",
        6.0,
        None,
    ),
    (
        "meter-before-after, 30 min before the start",
        16.0,
        BaselineParams(method="meter-before-after", meter_window_s=1800.0),
        "meter-before-after",
        6.0,
        None,
    ),
    ("hour-before", 16.0, BaselineParams(method="hour-before"), "hour-before", 6.0, None),
]


@pytest.mark.parametrize(
    ("label", "today_kwh", "params", "method", "expected_kw", "adjustment"),
    HAND_CASES,
    ids=[case[0] for case in HAND_CASES],
)
def test_each_method_by_hand(
    label: str,
    today_kwh: float,
    params: BaselineParams,
    method: str,
    expected_kw: float,
    adjustment: float | None,
) -> None:
    spans = _spans(_hand_ledger("alpha", today_kwh))
    result = baseline_kw(spans, START, EVENT, params, [(START, START + timedelta(hours=1))])
    assert result.method == method
    assert result.baseline_kw == pytest.approx((expected_kw,))
    assert result.adjustment == (None if adjustment is None else pytest.approx(adjustment))
    assert result.like_days == (5 if method == "like-days" else 0)


def test_like_days_are_weekdays_without_events_within_the_look_back() -> None:
    spans = _spans(_hand_ledger("alpha", 16.0))
    day_s = 86400.0
    d_s = D.timestamp()
    chosen = like_days(spans, START.timestamp(), [], BaselineParams())
    assert chosen == tuple(d_s - k * day_s for k in (1, 2, 3, 6, 7))
    # an event on D-2 (even one cancelled after its start) takes the day out; one stopped
    # at its start (cancelled before it) does not
    windows = [(d_s - 2 * day_s + 3600.0, d_s - 2 * day_s + 7200.0), (d_s - day_s, d_s - day_s)]
    assert d_s - 2 * day_s not in like_days(spans, START.timestamp(), windows, BaselineParams())
    assert d_s - day_s in like_days(spans, START.timestamp(), windows, BaselineParams())
    # the look-back counts days before the event's day: 3 days reach D-3
    assert like_days(spans, START.timestamp(), [], BaselineParams(lookback_days=3)) == tuple(
        d_s - k * day_s for k in (1, 2, 3)
    )
    # a weekend event's like days are weekend days
    sunday = D - timedelta(days=4, hours=-14)
    assert like_days(spans, sunday.timestamp(), [], BaselineParams()) == (d_s - 5 * day_s,)


def test_no_rows_before_the_start_gives_no_baseline() -> None:
    spans = _spans([ledger_row("alpha", START + timedelta(hours=1), 3600.0, 5.0, 0.0)])
    result = baseline_kw(spans, START, EVENT, BaselineParams())
    assert result == Baseline(None, 0, None, (None,))


def test_window_energy_is_pro_rata_and_power_samples_are_trapezoids() -> None:
    spans = spans_from_power(
        [D, D + timedelta(minutes=30), D + timedelta(minutes=60)], [2.0, 4.0, 4.0]
    )
    assert [s.load_kwh for s in spans] == pytest.approx([1.5, 2.0])
    energy_kwh, covered_s = window_energy(spans, D.timestamp() + 900.0, D.timestamp() + 2700.0)
    assert energy_kwh == pytest.approx(0.75 + 1.0)
    assert covered_s == pytest.approx(1800.0)
    # a row starting more than an hour before a window does not count in it
    long_row = (LedgerSpan(D.timestamp(), D.timestamp() + 3 * 3600.0, 3.0),)
    assert window_energy(long_row, D.timestamp() + 7200.0, D.timestamp() + 9000.0) == (0.0, 0.0)


# --- the SQL view ---------------------------------------------------------------------------

PROGRAMMES = {
    "ctx:like": BaselineParams(),
    "ctx:strict": BaselineParams(min_like_days=6),
    "ctx:meter": BaselineParams(method="meter-before-after", meter_window_s=1800.0),
    "ctx:hour": BaselineParams(method="hour-before"),
}
"""Market contexts and their baselines; ``ctx:none`` has no row (and no ``*``): defaults."""


def _seed_hand_case(sessions: sessionmaker[Session], database_url: str) -> None:
    settings = fleet_settings(database_url, ["alpha", "beta"])
    with unit_of_work(sessions) as session:
        fleet.sync_sites(session, settings.site, D)
        fleet.sync_programmes(session, list(PROGRAMMES.items()), D)
        session.flush()
        session.add_all(_hand_ledger("alpha", 16.0) + _hand_ledger("beta", 5.0))
        for context in (*PROGRAMMES, "ctx:none"):
            event = dr_event(
                f"EV-{context}",
                START,
                ("LOAD_DISPATCH", "delta"),
                [(3600.0, -3.0)],
                sites=["alpha", "beta"] if context == "ctx:like" else ["alpha"],
            )
            event_store.save_event(session, replace(event, market_context=context), D)
        rebuild_rollups(session.connection())


def _interval_rows(engine: Engine, where: str = "1 = 1") -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(
            text(
                f"SELECT * FROM event_interval_delivery WHERE {where} "
                "ORDER BY event_id, site_id, interval_index"
            )
        )
        return [dict(row) for row in result.mappings()]


def test_the_view_computes_each_programme_baseline(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    _seed_hand_case(session_factory, database_url)
    rows = {(r["event_id"], r["site_id"]): r for r in _interval_rows(engine)}
    expected = {
        ("EV-ctx:like", "alpha"): ("like-days", 12.0, 5, 1.2),
        ("EV-ctx:like", "beta"): ("like-days", 8.0, 5, 0.8),
        ("EV-ctx:strict", "alpha"): ("meter-before-after", 6.0, 0, None),
        ("EV-ctx:meter", "alpha"): ("meter-before-after", 6.0, 0, None),
        ("EV-ctx:hour", "alpha"): ("hour-before", 6.0, 0, None),
        ("EV-ctx:none", "alpha"): ("like-days", 12.0, 5, 1.2),
    }
    assert set(rows) == set(expected)
    for key, (method, kw, days, adjustment) in expected.items():
        row = rows[key]
        assert row["baseline_method"] == method, key
        assert row["baseline_kw"] == pytest.approx(kw), key
        assert row["baseline_kwh"] == pytest.approx(kw), key  # one hour
        assert row["baseline_days"] == days, key
        assert row["baseline_adjustment"] == (
            None if adjustment is None else pytest.approx(adjustment)
        ), key
        assert row["kind"] == "shed"
        assert row["requested_kw"] == pytest.approx(3.0)
        assert row["requested_kwh"] == pytest.approx(3.0)
        assert row["interval_index"] == 0
        assert row["duration_s"] == pytest.approx(3600.0)
    alpha = rows[("EV-ctx:like", "alpha")]
    assert alpha["actual_kwh"] == pytest.approx(7.0)
    assert alpha["delivered_kwh"] == pytest.approx(12.0 - 7.0)
    assert alpha["delivery_ratio"] == pytest.approx(5.0 / 3.0)
    hour = rows[("EV-ctx:hour", "alpha")]
    assert hour["delivered_kwh"] == pytest.approx(6.0 - 7.0)
    with engine.connect() as conn:
        events = conn.execute(
            text(
                "SELECT event_id, site_id, baseline_method, baseline_kwh, delivered_kwh "
                "FROM event_delivery WHERE event_id = 'EV-ctx:like' ORDER BY site_id"
            )
        ).all()
    assert [tuple(e) for e in events] == [
        ("EV-ctx:like", "alpha", "like-days", pytest.approx(12.0), pytest.approx(5.0)),
        ("EV-ctx:like", "beta", "like-days", pytest.approx(8.0), pytest.approx(8.0 - 7.0)),
    ]


def test_the_star_programme_takes_other_market_contexts_and_sync_replaces_rows(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    _seed_hand_case(session_factory, database_url)
    with unit_of_work(session_factory) as session:
        fleet.sync_programmes(
            session,
            [("*", BaselineParams(method="hour-before")), ("ctx:like", BaselineParams())],
            D,
        )
    with unit_of_work(session_factory) as session:
        stored = {
            row.market_context: row.baseline_method for row in session.scalars(select(ProgrammeRow))
        }
    assert stored == {"*": "hour-before", "ctx:like": "like-days"}
    methods = {
        r["event_id"]: r["baseline_method"] for r in _interval_rows(engine, "site_id = 'alpha'")
    }
    assert methods == {
        "EV-ctx:like": "like-days",
        "EV-ctx:strict": "hour-before",
        "EV-ctx:meter": "hour-before",
        "EV-ctx:hour": "hour-before",
        "EV-ctx:none": "hour-before",
    }


# --- SQL and Python agree -------------------------------------------------------------------

RANDOM_PROGRAMMES = {
    "ctx:like": BaselineParams(),
    "ctx:short": BaselineParams(
        like_days=4,
        lookback_days=9,
        min_like_days=3,
        adjustment_window_s=7200.0,
        adjustment_gap_s=1800.0,
        adjustment_cap=0.1,
        meter_window_s=1800.0,
    ),
    "ctx:meter": BaselineParams(method="meter-before-after", meter_window_s=900.0),
    "*": BaselineParams(method="hour-before"),
}
CONTEXTS = (*RANDOM_PROGRAMMES, "ctx:other")
SITES = ("s-a", "s-b", "s-c")
FIRST_DAY = datetime(2027, 3, 1, tzinfo=UTC)
DAYS = 40


def _random_ledger(rng: random.Random) -> list[LedgerRow]:
    """Rows of 5 to 20 minutes with random loads; some days and some hours missing."""
    rows = []
    for site_id in SITES:
        level_kwh_per_h = rng.uniform(5.0, 20.0)
        at = FIRST_DAY
        end = FIRST_DAY + timedelta(days=DAYS)
        while at < end:
            if at.hour == 0 and at.minute < 20 and rng.random() < 0.08:
                at += timedelta(days=1)  # a day without rows
                continue
            if rng.random() < 0.02:
                at += timedelta(minutes=rng.choice((40, 70, 95)))  # a gap
                continue
            length = timedelta(minutes=rng.choice((5, 10, 15, 20)))
            weekend = 0.5 if is_weekend(at.replace(hour=0, minute=0, second=0).timestamp()) else 1.0
            kwh = level_kwh_per_h * weekend * rng.uniform(0.6, 1.4) * length.total_seconds() / 3600
            rows.append(ledger_row(site_id, at, length.total_seconds(), kwh, 0.0))
            at += length
    return rows


def _random_events(rng: random.Random) -> list[DrEvent]:
    events = []
    for number in range(16):
        start = FIRST_DAY + timedelta(
            days=rng.randrange(8, DAYS), hours=rng.randrange(1, 22), minutes=rng.choice((0, 7, 30))
        )
        intervals = [
            (60.0 * rng.choice((15, 30, 45, 60)), -rng.uniform(1, 4))
            for _ in range(rng.randint(1, 3))
        ]
        sites = rng.sample(SITES, rng.randint(0, 2))
        event = dr_event(
            f"R{number:02d}", start, ("LOAD_DISPATCH", "delta"), intervals, sites=sites
        )
        events.append(
            replace(
                event,
                market_context=rng.choice(CONTEXTS),
                start_offset_s=rng.choice((0.0, 0.0, 90.0, 400.0)),
            )
        )
    return events


def _python_baseline(
    spans: Sequence[LedgerSpan], event: DrEvent, windows: list[tuple[datetime, datetime | None]]
) -> Baseline:
    params = RANDOM_PROGRAMMES.get(event.market_context, RANDOM_PROGRAMMES["*"])
    start = event.effective_start_at
    intervals = []
    at = start
    for interval in event.signals[0].intervals:
        intervals.append((at, at + timedelta(seconds=interval.duration_s)))
        at += timedelta(seconds=interval.duration_s)
    return baseline_kw(spans, start, intervals, params, windows)


def test_sql_view_and_python_twin_agree_on_a_random_ledger(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    rng = random.Random(20261206)
    ledger = _random_ledger(rng)
    events = _random_events(rng)
    settings = fleet_settings(database_url, list(SITES))
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, FIRST_DAY)
        fleet.sync_programmes(session, list(RANDOM_PROGRAMMES.items()), FIRST_DAY)
        session.flush()
        session.add_all(ledger)
        for event in events:
            event_store.save_event(session, event, FIRST_DAY)
        rebuild_rollups(session.connection())
    rows = _interval_rows(engine)
    by_event = {e.event_id: e for e in events}
    methods_seen = set()
    checked = 0
    with engine.connect() as conn:
        for (event_id, site_id), group in _grouped(rows).items():
            event = by_event[event_id]
            spans = _spans([r for r in ledger if r.site_id == site_id])
            windows = baseline_input.event_windows(conn, site_id)
            params = baseline_input.programme_params(conn, event.market_context)
            read = baseline_input.ledger_spans(conn, site_id, event.effective_start_at, params)
            assert params == RANDOM_PROGRAMMES.get(event.market_context, RANDOM_PROGRAMMES["*"])
            expected = _python_baseline(spans, event, windows)
            from_db = _python_baseline(read, event, windows)
            assert from_db == expected  # the reader gives the function what it needs
            assert [r["interval_index"] for r in group] == list(range(len(expected.baseline_kw)))
            for row, kw in zip(group, expected.baseline_kw, strict=True):
                assert row["baseline_method"] == expected.method, (event_id, site_id)
                assert row["baseline_days"] == expected.like_days, (event_id, site_id)
                assert _same(row["baseline_adjustment"], expected.adjustment), (event_id, site_id)
                assert _same(row["baseline_kw"], kw), (event_id, site_id, row["interval_index"])
                checked += 1
            methods_seen.add(expected.method)
    assert methods_seen >= {"like-days", "meter-before-after", "hour-before"}
    assert checked >= 20


def _grouped(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault((row["event_id"], row["site_id"]), []).append(row)
    return out


def _same(value: float | None, expected: float | None) -> bool:
    if value is None or expected is None:
        return value is None and expected is None
    return math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9)


def test_baselines_and_actuals_are_facility_energy_it_power_times_pue(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # the daemon's path: polled IT power (4 kW) becomes ledger energy at PUE 1.25 (5 kW)
    settings = fleet_settings(database_url, ["alpha"])
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, D)
        event_store.save_event(
            session,
            dr_event("FACILITY", START, ("LOAD_DISPATCH", "delta"), [(900.0, -1.0)]),
            D,
        )
    for minutes in range(0, 45, 5):
        at = START - timedelta(minutes=20) + timedelta(minutes=minutes)
        with unit_of_work(session_factory) as session:
            fleet.record_status(session, settings.site[0], site_status("alpha", at, 4.0, 0.0), at)
    [row] = _interval_rows(engine)
    assert row["baseline_method"] == "meter-before-after"
    assert row["baseline_kw"] == pytest.approx(4.0 * PUE)
    assert row["actual_kwh"] == pytest.approx(4.0 * PUE * 0.25)


def test_a_cancelled_event_is_measured_until_the_cancellation_takes_effect(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, ["alpha"])
    quarters = [(900.0, -1.0)] * 4
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, D)
        session.flush()
        session.add_all(_hand_ledger("alpha", 16.0))
        for event in (
            dr_event(
                "CUT",
                START,
                ("LOAD_DISPATCH", "delta"),
                quarters,
                status="cancelled",
                cancel_effective_at=START + timedelta(minutes=20),
            ),
            dr_event(
                "EARLY",
                START,
                ("LOAD_DISPATCH", "delta"),
                quarters,
                status="cancelled",
                cancel_effective_at=START - timedelta(minutes=5),
            ),
        ):
            event_store.save_event(session, event, D)
        rebuild_rollups(session.connection())
    rows = _interval_rows(engine)
    assert [(r["event_id"], r["interval_index"], r["duration_s"]) for r in rows] == [
        ("CUT", 0, pytest.approx(900.0)),
        ("CUT", 1, pytest.approx(300.0)),
    ]
    assert [r["requested_kwh"] for r in rows] == pytest.approx([0.25, 1.0 / 12.0])
    with engine.connect() as conn:
        early = conn.execute(
            text(
                "SELECT requested_kwh, baseline_kwh, baseline_method FROM event_delivery "
                "WHERE event_id = 'EARLY'"
            )
        ).one()
    assert tuple(early) == (0.0, None, None)
