"""The energy rollups equal a plain GROUP BY over the ledger, however the rows arrive.

Rows come through the daemon's path (``gateway.fleet.record_status``, which upserts the
rollups in the ledger row's transaction), through revision 0005's backfill, and through
``rebuild_rollups`` after carbon intensities for past rows are loaded. A row counts, whole,
in the hour and the day in which its interval starts.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.db import make_engine, make_session_factory, unit_of_work, upgrade
from gateway.events import DrEvent
from gateway.reports.carbon import IntensityInterval, store_intensity
from gateway.reports.frames import energy_report
from gateway.reports.rollups import rebuild_rollups
from gateway.settings import Settings
from gateway.ven import store as event_store
from models import EnergyRollupDay, EnergyRollupHour, LedgerRow
from tests.support.reporting_data import (
    ROLLUP_FIELDS,
    Sums,
    day_of,
    dr_event,
    fleet_settings,
    group_ledger,
    hour_of,
    ledger_row,
    site_status,
    stored_rollups,
)

SITES = ("alpha", "beta", "gamma")
T0 = datetime(2027, 3, 10, 18, 0, tzinfo=UTC)
"""The random run starts here and crosses midnight."""
RUN_S = 12 * 3600.0


def _events() -> list[DrEvent]:
    return [
        # surplus for beta only: LOAD_DISPATCH delta > 0 asks it to absorb
        dr_event(
            "SURPLUS-BETA", T0 + timedelta(hours=3), ("LOAD_DISPATCH", "delta"),
            [(3600.0, 3.0), (3600.0, 1.5)], sites=["beta"],
        ),
        # curtailment for alpha: not a surplus
        dr_event(
            "SHED-ALPHA", T0 + timedelta(hours=3), ("LOAD_DISPATCH", "delta"),
            [(7200.0, -2.0)], sites=["alpha"],
        ),
        # a negative price for every site of the VTN: grid surplus
        dr_event(
            "PRICE-ALL", T0 + timedelta(hours=8), ("ELECTRICITY_PRICE", "price"),
            [(3600.0, -5.0)],
        ),
        # a price above the threshold: no surplus
        dr_event(
            "PRICE-HIGH", T0 + timedelta(hours=10), ("ELECTRICITY_PRICE", "price"),
            [(3600.0, 12.0)],
        ),
        # a test event moves no load
        dr_event(
            "TEST-GAMMA", T0 + timedelta(hours=1), ("LOAD_DISPATCH", "delta"),
            [(3600.0, 4.0)], sites=["gamma"], test_event=True,
        ),
    ]  # fmt: skip


SURPLUS_WINDOWS = {
    "alpha": [(T0 + timedelta(hours=8), T0 + timedelta(hours=9))],
    "beta": [
        (T0 + timedelta(hours=3), T0 + timedelta(hours=5)),
        (T0 + timedelta(hours=8), T0 + timedelta(hours=9)),
    ],
    "gamma": [(T0 + timedelta(hours=8), T0 + timedelta(hours=9))],
}
"""Where the events above make a surplus, worked out by hand."""


def _in_surplus(site_id: str, at: datetime) -> bool:
    return any(start <= at < end for start, end in SURPLUS_WINDOWS[site_id])


def _fleet_intensity(hours: range) -> list[IntensityInterval]:
    return [
        IntensityInterval(
            None, T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1), 300.0 + 10.0 * h, h
        )
        for h in hours
    ]


GAMMA_INTENSITY = [
    IntensityInterval("gamma", T0 + timedelta(hours=2), T0 + timedelta(hours=4), 50.0, 1)
]


def _intensity_until(last_hour: int) -> object:
    """The intensity oracle once fleet hours [0, last_hour) and gamma's own are loaded."""

    def intensity(site_id: str, at: datetime) -> float | None:
        for interval in GAMMA_INTENSITY:
            if site_id == interval.site_id and interval.start_at <= at < interval.end_at:
                return interval.g_co2_per_kwh
        hour = (at - T0) // timedelta(hours=1)
        return 300.0 + 10.0 * hour if 0 <= hour < last_hour else None

    return intensity


def _assert_same(
    actual: dict[tuple[str, datetime], Sums], expected: dict[tuple[str, datetime], Sums]
) -> None:
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = actual[key]
        assert (got.rows, got.emissions_rows) == (want.rows, want.emissions_rows), key
        for name in ROLLUP_FIELDS:
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-9), (
                key,
                name,
            )


def _load_intensity(engine: Engine, intervals: list[IntensityInterval]) -> None:
    with engine.begin() as conn:
        store_intensity(conn, intervals, "test", T0)


def _random_polls(seed: int) -> list[tuple[datetime, str, float, float]]:
    """(time, site, IT power [kW], renewable power [kW]) with gaps of 30 s to 50 min, so that
    many ledger rows span an hour boundary and one spans midnight."""
    rng = random.Random(seed)
    polls = []
    for site_id in SITES:
        at = T0 + timedelta(seconds=rng.uniform(0, 600))
        while at < T0 + timedelta(seconds=RUN_S):
            renewable_kw = 0.0 if rng.random() < 0.2 else rng.uniform(0, 12)
            polls.append((at, site_id, rng.uniform(0, 8), renewable_kw))
            at += timedelta(seconds=rng.choice([30.0, rng.uniform(60, 3000)]))
    polls.sort()
    return polls


def _run_fleet(
    sessions: sessionmaker[Session],
    settings: Settings,
    polls: list[tuple[datetime, str, float, float]],
) -> None:
    by_id = {s.id: s for s in settings.site}
    for at, site_id, it_kw, renewable_kw in polls:
        with unit_of_work(sessions) as session:
            fleet.record_status(
                session, by_id[site_id], site_status(site_id, at, it_kw, renewable_kw), at
            )


def _ledger(session: Session) -> list[LedgerRow]:
    return list(session.scalars(select(LedgerRow)))


def test_rollups_written_with_each_ledger_row_equal_group_by(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, SITES)
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, T0)
        for event in _events():
            event_store.save_event(session, event, T0)
    _load_intensity(engine, _fleet_intensity(range(0, 6)) + GAMMA_INTENSITY)
    _run_fleet(session_factory, settings, _random_polls(seed=6))

    with session_factory() as session:
        rows = _ledger(session)
        # the data covers what the rollups must get right
        assert any(hour_of(r.interval_start_at) != hour_of(r.interval_end_at) for r in rows)
        assert any(day_of(r.interval_start_at) != day_of(r.interval_end_at) for r in rows)
        assert any(_in_surplus(r.site_id, r.interval_start_at) and r.grid_kwh > 0 for r in rows)
        intensity = _intensity_until(6)
        for model, period_of in ((EnergyRollupHour, hour_of), (EnergyRollupDay, day_of)):
            _assert_same(
                stored_rollups(session, model),
                group_ledger(rows, period_of, _in_surplus, intensity),  # type: ignore[arg-type]
            )
        # and the plain GROUP BY in SQL agrees on the energies
        sql_sums = dict(
            session.execute(
                select(LedgerRow.site_id, func.sum(LedgerRow.load_kwh)).group_by(LedgerRow.site_id)
            ).all()
        )
        rollup_sums = dict(
            session.execute(
                select(EnergyRollupDay.site_id, func.sum(EnergyRollupDay.load_kwh)).group_by(
                    EnergyRollupDay.site_id
                )
            ).all()
        )
        assert rollup_sums == pytest.approx(sql_sums, rel=1e-9)

    # intensities for past hours: loading them recomputes the rollups they cover
    _load_intensity(engine, _fleet_intensity(range(6, 12)))
    with session_factory() as session:
        rows = _ledger(session)
        intensity = _intensity_until(12)
        for model, period_of in ((EnergyRollupHour, hour_of), (EnergyRollupDay, day_of)):
            _assert_same(
                stored_rollups(session, model),
                group_ledger(rows, period_of, _in_surplus, intensity),  # type: ignore[arg-type]
            )


def test_rebuild_gives_the_rollups_the_upserts_gave(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, SITES)
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, T0)
        for event in _events():
            event_store.save_event(session, event, T0)
    _load_intensity(engine, _fleet_intensity(range(0, 12)) + GAMMA_INTENSITY)
    _run_fleet(session_factory, settings, _random_polls(seed=7)[:150])
    with session_factory() as session:
        upserted = [stored_rollups(session, m) for m in (EnergyRollupHour, EnergyRollupDay)]
    with engine.begin() as conn:
        rebuild_rollups(conn)
    with session_factory() as session:
        rebuilt = [stored_rollups(session, m) for m in (EnergyRollupHour, EnergyRollupDay)]
    for before, after in zip(upserted, rebuilt, strict=True):
        _assert_same(after, before)


@pytest.mark.parametrize(
    ("label", "first_at", "second_at", "hour_at", "day_at"),
    [
        (
            "across an hour",
            datetime(2027, 3, 10, 10, 58, tzinfo=UTC),
            datetime(2027, 3, 10, 11, 3, tzinfo=UTC),
            datetime(2027, 3, 10, 10, tzinfo=UTC),
            datetime(2027, 3, 10, tzinfo=UTC),
        ),
        (
            "across midnight",
            datetime(2027, 3, 10, 23, 58, tzinfo=UTC),
            datetime(2027, 3, 11, 0, 3, tzinfo=UTC),
            datetime(2027, 3, 10, 23, tzinfo=UTC),
            datetime(2027, 3, 10, tzinfo=UTC),
        ),
        (
            "starting on the hour",
            datetime(2027, 3, 11, 0, 0, tzinfo=UTC),
            datetime(2027, 3, 11, 0, 5, tzinfo=UTC),
            datetime(2027, 3, 11, 0, tzinfo=UTC),
            datetime(2027, 3, 11, tzinfo=UTC),
        ),
    ],
)
def test_a_row_counts_whole_in_the_hour_and_day_it_starts_in(
    database_url: str,
    session_factory: sessionmaker[Session],
    label: str,
    first_at: datetime,
    second_at: datetime,
    hour_at: datetime,
    day_at: datetime,
) -> None:
    settings = fleet_settings(database_url, ["alpha"])
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, first_at)
    for at in (first_at, second_at):
        with unit_of_work(session_factory) as session:
            fleet.record_status(session, settings.site[0], site_status("alpha", at, 4.0, 2.0), at)
    load_kwh = 4.0 * 1.25 * (second_at - first_at).total_seconds() / 3600.0
    with session_factory() as session:
        for model, period_at in ((EnergyRollupHour, hour_at), (EnergyRollupDay, day_at)):
            rows = session.scalars(select(model)).all()
            assert [(r.period_start_at, r.ledger_rows) for r in rows] == [(period_at, 1)], label
            assert rows[0].load_kwh == pytest.approx(load_kwh)
            assert rows[0].grid_kwh == pytest.approx(load_kwh - 2.0 * 5 / 60)
            assert rows[0].emissions_rows == 0


def test_a_ledger_row_rolled_back_leaves_no_rollup(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, ["alpha"])
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, T0)
        fleet.record_status(session, settings.site[0], site_status("alpha", T0, 4.0, 2.0), T0)
    later = T0 + timedelta(minutes=5)
    with (
        pytest.raises(RuntimeError, match="after the ledger row"),
        unit_of_work(session_factory) as session,
    ):
        assert fleet.record_status(
            session, settings.site[0], site_status("alpha", later, 4.0, 2.0), later
        )
        assert session.scalar(select(func.count()).select_from(EnergyRollupHour)) == 1
        raise RuntimeError("a failure after the ledger row")
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(LedgerRow)) == 0
        assert session.scalar(select(func.count()).select_from(EnergyRollupHour)) == 0
        assert session.scalar(select(func.count()).select_from(EnergyRollupDay)) == 0


def test_upgrade_backfills_the_rollups_from_existing_ledger_rows(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0004")
    settings = fleet_settings(empty_database_url, SITES)
    rng = random.Random(11)
    engine = make_engine(empty_database_url)
    if engine.dialect.name == "postgresql":
        # Today's model writes an interval's uid as text (revision 0009); PostgreSQL, unlike
        # SQLite, refuses text in revision 0004's INTEGER column. The backfill never reads it.
        with engine.begin() as connection:
            connection.execute(
                text(
                    "ALTER TABLE event_intervals ALTER COLUMN uid TYPE VARCHAR(128) USING uid::text"
                )
            )
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            fleet.sync_sites(session, settings.site, T0)
            for event in _events():
                event_store.save_event(session, event, T0)
            for site_id in SITES:
                at = T0
                while at < T0 + timedelta(seconds=RUN_S):
                    duration_s = rng.choice([300.0, 420.0, 1500.0])
                    session.add(
                        ledger_row(site_id, at, duration_s, rng.uniform(0, 3), rng.uniform(0, 3))
                    )
                    at += timedelta(seconds=duration_s)
        upgrade(empty_database_url)
        with make_session_factory(engine)() as session:
            rows = _ledger(session)
            assert len(rows) > 100
            for model, period_of in ((EnergyRollupHour, hour_of), (EnergyRollupDay, day_of)):
                _assert_same(
                    stored_rollups(session, model), group_ledger(rows, period_of, _in_surplus)
                )
    finally:
        engine.dispose()


def test_energy_report_equals_group_by_over_the_ledger(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    settings = fleet_settings(database_url, SITES)
    with unit_of_work(session_factory) as session:
        fleet.sync_sites(session, settings.site, T0)
        for event in _events():
            event_store.save_event(session, event, T0)
    _run_fleet(session_factory, settings, _random_polls(seed=8)[:120])
    with session_factory() as session:
        rows = _ledger(session)
    by_day = group_ledger(rows, day_of, _in_surplus)
    by_hour = group_ledger(rows, hour_of, _in_surplus)
    since, until = T0, T0 + timedelta(hours=4)
    with engine.connect() as conn:
        daily = energy_report(conn, by=("site", "day"))
        hourly = energy_report(
            conn, since=since, until=until, site_ids=["beta"], by=("site", "hour")
        )
        per_site = energy_report(conn, by=("site",))
        fleet_total = energy_report(conn, by=())
    assert list(daily.columns[:2]) == ["site_id", "period_start_at"]
    assert len(daily) == len(by_day)
    for record in daily.to_dict("records"):
        want = by_day[(record["site_id"], record["period_start_at"].to_pydatetime())]
        assert record["load_kwh"] == pytest.approx(want.load_kwh)
        assert record["captured_surplus_kwh"] == pytest.approx(want.captured_surplus_kwh)
        assert record["renewable_share"] == pytest.approx(want.renewable_used_kwh / want.load_kwh)
        assert record["emissions_kg"] != record["emissions_kg"]  # NaN: no intensity loaded
    want_hours = {k: v for k, v in by_hour.items() if k[0] == "beta" and since <= k[1] < until}
    assert len(hourly) == len(want_hours) > 0
    for record in hourly.to_dict("records"):
        want = want_hours[("beta", record["period_start_at"].to_pydatetime())]
        assert record["grid_kwh"] == pytest.approx(want.grid_kwh)
    for record in per_site.to_dict("records"):
        site_rows = [r for r in rows if r.site_id == record["site_id"]]
        assert record["curtailed_kwh"] == pytest.approx(sum(r.curtailed_kwh for r in site_rows))
    assert len(fleet_total) == 1
    assert fleet_total["load_kwh"].iloc[0] == pytest.approx(sum(r.load_kwh for r in rows))
    assert fleet_total["captured_surplus_kwh"].iloc[0] == pytest.approx(
        sum(v.captured_surplus_kwh for v in by_day.values())
    )
