"""The schema Alembic builds: no drift against the models, the views, downgrades, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pprint import pformat
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

import models
from gateway import db
from gateway.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from gateway.errors import InputError

REPORTING_VIEWS = {"site_energy", "site_migrations", "site_events", "site_report"}


def _drift(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, models.Base.metadata))
    finally:
        engine.dispose()


def _names(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()), set(inspector.get_view_names())
    finally:
        engine.dispose()


def test_upgrade_of_empty_database_matches_models(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    diff = _drift(empty_database_url)
    assert diff == [], f"schema drift after upgrade to head:\n{pformat(diff)}"


def test_alembic_check_finds_nothing_to_generate(database_url: str) -> None:
    # The same comparison through migrations/env.py, as `alembic check` runs it.
    command.check(alembic_config(database_url))


def test_upgrade_creates_every_table_and_reporting_view(engine: Engine) -> None:
    inspector = inspect(engine)
    assert set(models.Base.metadata.tables) <= set(inspector.get_table_names())
    assert set(inspector.get_view_names()) >= REPORTING_VIEWS
    assert current_revision(engine) == head_revision()


def test_views_are_not_part_of_the_models() -> None:
    assert not REPORTING_VIEWS & set(models.Base.metadata.tables)


def test_downgrade_to_base_then_upgrade_again(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
    tables, views = _names(database_url)
    assert tables == {"alembic_version"}
    assert views == set()

    upgrade(database_url)
    tables, views = _names(database_url)
    assert set(models.Base.metadata.tables) <= tables
    assert views >= REPORTING_VIEWS
    diff = _drift(database_url)
    assert diff == [], f"schema drift after downgrade and upgrade:\n{pformat(diff)}"


def _site(site_id: str, updated_at: datetime, last_status_at: datetime | None) -> models.Site:
    return models.Site(
        id=site_id,
        gpus_total=8,
        it_power_max_kw=50.0,
        pue=1.2,
        wan_bandwidth_gbps=10.0,
        controller_url="http://127.0.0.1:1/",
        vtn_id="vtn-1",
        resource_id=f"res-{site_id}",
        updated_at=updated_at,
        last_status_at=last_status_at,
    )


def test_timestamps_round_trip_as_aware_utc(session_factory: sessionmaker[Session]) -> None:
    cest = timezone(timedelta(hours=2))
    updated_at = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=cest)
    last_status_at = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    with session_factory.begin() as session:
        session.add(_site("a", updated_at, last_status_at))
        session.add(_site("b", updated_at + timedelta(seconds=1), None))

    with session_factory() as session:
        site = session.get_one(models.Site, "a")
        for value, expected in [
            (site.updated_at, updated_at),
            (site.last_status_at, last_status_at),
        ]:
            assert value is not None
            assert value.tzinfo is UTC
            assert value == expected
            assert value.microsecond == expected.microsecond
        assert site.updated_at.hour == 1  # 03:30 at +02:00 is 01:30 UTC
        assert session.get_one(models.Site, "b").last_status_at is None

        # Comparisons in SQL see the instant, whatever zone the bound value is in.
        same_instant = updated_at.astimezone(timezone(timedelta(hours=-5)))
        found = session.scalars(
            select(models.Site.id).where(models.Site.updated_at == same_instant)
        )
        assert list(found) == ["a"]
        later = session.scalars(select(models.Site.id).where(models.Site.updated_at > same_instant))
        assert list(later) == ["b"]


def test_naive_timestamp_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(_site("naive", datetime(2026, 1, 1, 12, 0), None))
        with pytest.raises(StatementError) as caught:
            session.flush()
        assert isinstance(caught.value.orig, ValueError)
        assert "naive datetime" in str(caught.value.orig)
        session.rollback()
        assert session.scalars(select(models.Site.id)).all() == []


def test_revision_0009_turns_interval_uids_into_text_and_back(empty_database_url: str) -> None:
    """0009 keeps every stored uid as its decimal text; its downgrade keeps the uids an
    INTEGER can hold and clears the others (a 60-digit uid cannot be one)."""
    url = empty_database_url
    config = alembic_config(url)
    upgrade(url, "0008")
    engine = make_engine(url)
    insert_event = text(
        "INSERT INTO events (id, vtn_id, event_id, modification_number, status, "
        "market_context, priority, test_event, response_required, start_at, duration_s, "
        "received_at) VALUES (1, 'vtn', 'e', 0, 'far', 'mc', 0, false, 'always', "
        ":at, 3600, :at)"
    )
    try:
        with engine.begin() as connection:
            connection.execute(insert_event, {"at": "2027-01-01 00:00:00+00:00"})
            connection.execute(
                text(
                    "INSERT INTO event_signals (id, event_pk, position, signal_id, "
                    "signal_name, signal_type) VALUES (1, 1, 0, 's', 'SIMPLE', 'level')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO event_intervals (signal_pk, position, uid, duration_s, value) "
                    "VALUES (1, 0, 7, 3600, 1.0), (1, 1, NULL, 0, 1.0)"
                )
            )
        command.upgrade(config, "0009")
        long_uid = "1" * 60
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO event_intervals (signal_pk, position, uid, duration_s, value) "
                    "VALUES (1, 2, :uid, 0, 1.0)"
                ),
                {"uid": long_uid},
            )
            uids = connection.execute(
                text("SELECT uid FROM event_intervals ORDER BY position")
            ).scalars()
            assert list(uids) == ["7", None, long_uid]
        command.downgrade(config, "0008")
        with engine.begin() as connection:
            uids = connection.execute(
                text("SELECT uid FROM event_intervals ORDER BY position")
            ).scalars()
            assert list(uids) == [7, None, None]
    finally:
        engine.dispose()


def test_a_command_on_a_database_behind_the_head_is_told_what_to_run(
    empty_database_url: str,
) -> None:
    with pytest.raises(InputError) as behind:
        db.ensure_schema(empty_database_url, auto_upgrade=False)
    assert str(behind.value) == (
        f"the database at {db.safe_url(empty_database_url)} is at schema revision (empty), "
        f"not {head_revision()}: run dr-gateway db upgrade"
    )
    db.ensure_schema(empty_database_url, auto_upgrade=True)
    db.ensure_schema(empty_database_url, auto_upgrade=False)  # at the head now: no error


def test_the_schema_message_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "current_revision", lambda engine: "0001")
    url = "postgresql+psycopg://gateway:s3cret-password@127.0.0.1:5432/gateway"
    with pytest.raises(InputError) as behind:
        db.ensure_schema(url, auto_upgrade=False)
    message = str(behind.value)
    assert "s3cret-password" not in message
    assert "postgresql+psycopg://gateway:***@127.0.0.1:5432/gateway" in message
