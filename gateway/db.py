"""Engines, sessions and schema upgrades for the state store.

Alembic (and the template engine it brings) is imported by the functions that work on the
schema, and the ORM by the one that makes sessions, not at the top: a command that only
reads, such as ``dr-gateway report``, starts without them.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

import migrations
from gateway.errors import GatewayError, InputError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
CONNECT_TIMEOUT_S = 10
"""Longest wait for a database server while a command checks that it can connect [s]."""
URL_RULE = "expected sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DATABASE"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker  # the ORM loads for the commands that use it

    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session per unit of work: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``."""
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def ensure_schema(url: str, *, auto_upgrade: bool) -> None:
    """Make sure the database at ``url`` is at the head revision before a command uses it:
    upgrade it when ``auto_upgrade`` (``[database] auto_upgrade``), else raise InputError
    (exit 2) saying which revision it is at and what to run."""
    if auto_upgrade:
        upgrade(url)
        return
    engine = make_engine(url)
    try:
        current, head = current_revision(engine), head_revision()
    finally:
        engine.dispose()
    if current != head:
        raise InputError(
            f"the database at {safe_url(url)} is at schema revision {current or '(empty)'}, not "
            f"{head}: run dr-gateway db upgrade"
        )


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages; the text itself when it is no URL."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def is_memory_sqlite(url: URL) -> bool:
    """True for an in-memory SQLite database (``sqlite://``, ``:memory:``, ``mode=memory``)."""
    database = url.database or ""
    return (
        database in ("", ":memory:")
        or database.startswith("file::memory:")
        or url.query.get("mode") == "memory"
    )


def url_problem(url: str) -> str | None:
    """Why a command cannot keep its state at ``url``, without connecting; None when it can.

    An in-memory SQLite database is refused: each connection would see its own, empty
    database, and nothing would survive the command (the daemon, ``db upgrade``, a loaded
    carbon file). Programs that want one (tests) call :func:`make_engine` directly."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return f"not a database URL we can use; {URL_RULE}"
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        return f"unsupported database {backend!r}; {URL_RULE}"
    if backend == "sqlite" and is_memory_sqlite(parsed):
        return (
            "an in-memory SQLite database keeps nothing after the command ends (and every "
            "connection would see its own); give a file: sqlite:///PATH"
        )
    return None


class DatabaseUnreachable(GatewayError):
    """The database server did not answer: a failure of the moment (exit 1), not a setting."""


REFUSED_BY_SETTING = re.compile(
    r"FATAL:\s+(database \S.* does not exist|role \S.* does not exist|password authentication "
    r"failed|no pg_hba\.conf entry)"
)
"""How PostgreSQL refuses a connection because of the URL (an unknown database or role, a
wrong password, a client it does not admit); psycopg reports these without a SQLSTATE. Any
other failure to connect is the server's state of the moment."""


def open_problem(url: str, *, connect: bool = True) -> str | None:
    """Why the database at ``url`` cannot be used as configured, or None.

    SQLite: the file must be a SQLite database, or not exist yet in a directory this user may
    write; nothing is created. PostgreSQL, with ``connect``: a connection within
    :data:`CONNECT_TIMEOUT_S`; a refused login or an unknown database is a problem of the URL,
    while a server that does not answer raises :class:`DatabaseUnreachable`."""
    problem = url_problem(url)
    if problem is not None:
        return problem
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_problem(Path(parsed.database or ""))
    if not connect:
        return None
    engine = create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        message = f"cannot connect to {safe_url(url)}: {_first_line(exc.orig or exc)}"
        if REFUSED_BY_SETTING.search(str(exc.orig or exc)):
            return message
        raise DatabaseUnreachable(message) from exc
    finally:
        engine.dispose()
    return None


def _sqlite_problem(path: Path) -> str | None:
    if "\x00" in str(path):
        return "a path cannot hold a NUL character"
    if path.exists():
        if not path.is_file():
            return f"{path} is not a file"
        try:
            uri = f"file:{quote(str(path.absolute()))}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_S)) as db:
                db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:
            return f"cannot open {path} as a SQLite database: {_first_line(exc)}"
        return None
    directory = path.absolute().parent
    if not directory.is_dir():
        return f"cannot create {path}: the directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"cannot create {path}: the directory {directory} is not writable by this user"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
