"""``dr-gateway db``: upgrade the database schema, or print its revision."""

from __future__ import annotations

import argparse

from alembic.util.exc import CommandError

from gateway.db import current_revision, head_revision, make_engine, upgrade
from gateway.errors import InputError
from gateway.startup import load_checked_settings


def run(args: argparse.Namespace) -> int:
    """Run ``dr-gateway db ACTION`` as parsed into ``args``; the exit code."""
    settings = load_checked_settings(args.config)
    if args.db_command == "upgrade":
        try:
            upgrade(settings.database.url, args.revision)
        except CommandError as exc:
            raise InputError(f"--revision {args.revision}: {exc}") from exc
        print(f"database upgraded to {args.revision}")
        return 0
    engine = make_engine(settings.database.url)
    try:
        print(f"current {current_revision(engine) or '(empty)'}; head {head_revision()}")
    finally:
        engine.dispose()
    return 0
