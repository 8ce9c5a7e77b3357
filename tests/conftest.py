"""Fixtures of the integration and system layers: a fresh database per test on SQLite and on
PostgreSQL.

PostgreSQL comes from ``DR_GATEWAY_TEST_PG_URL`` (default: the local server's ``postgres``
database). Each test gets a database of its own, created and dropped around it. Where the
server cannot be reached the PostgreSQL cases are skipped, except under ``CI=true``, where
that is an error.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import make_engine, make_session_factory, upgrade

PG_ADMIN_URL = os.environ.get(
    "DR_GATEWAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except OperationalError as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of a new, empty database of each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "gateway.db"
        yield f"sqlite:///{path}"
        return
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable in CI: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"drgw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database upgraded to the newest schema once per test process: a copy of it
    is a new database at head in milliseconds (on SQLite, revision 0009's DROP and RENAME
    COLUMN re-check every view, about 2 s per upgrade)."""
    path = tmp_path_factory.mktemp("template") / "head.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(empty_database_url: str, request: pytest.FixtureRequest) -> str:
    """A new database of each backend, upgraded to the newest schema (on SQLite, a copy of
    :func:`sqlite_at_head`, taken with SQLite's backup API so that no WAL page is missed)."""
    url = make_url(empty_database_url)
    if url.get_backend_name() != "sqlite":
        upgrade(empty_database_url)
        return empty_database_url
    template: Path = request.getfixturevalue("sqlite_at_head")
    with (
        closing(sqlite3.connect(template)) as source,
        closing(sqlite3.connect(str(url.database))) as target,
    ):
        source.backup(target)
    return empty_database_url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)
