"""Alembic environment: the same settings as the daemon.

The URL comes, in this order, from a connection handed over by ``gateway.db.upgrade``, the
``sqlalchemy.url`` option set by ``gateway.db.alembic_config``, or the daemon's configuration
file named by the ``DR_GATEWAY_CONFIG`` environment variable (for the ``alembic`` command).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

import models
from gateway.db import make_engine
from gateway.settings import load_settings

config = context.config
target_metadata = models.Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    path = os.environ.get("DR_GATEWAY_CONFIG")
    if not path:
        raise SystemExit("set DR_GATEWAY_CONFIG to the gateway's configuration file")
    return load_settings(path).database.url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
