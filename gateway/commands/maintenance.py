"""The ``maintenance`` command: add, list and remove site maintenance windows.

The command writes to the database; the running daemon sends each new window to the site's
VTN as an optOut availability schedule (EiOpt) and cancels removed ones, within one poll
interval. Windows of the configuration (``[[maintenance]]``) are synced first, so that the
list shows them too; they are changed in the configuration, not here.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from gateway.clock import SystemClock
from gateway.commands.options import ISO_INSTANT_EXAMPLE
from gateway.db import (
    ensure_schema,
    make_engine,
    make_session_factory,
    unit_of_work,
)
from gateway.errors import InputError
from gateway.fleet import sync_sites
from gateway.maintenance import store
from gateway.maintenance_window import Window, instant_problem, reason_problem, span_problem
from gateway.settings import Settings
from gateway.settings_base import instant_range_problem
from gateway.startup import load_checked_settings
from gateway.ven.availability import ACKNOWLEDGED
from models import AvailabilityWindow


def run(args: argparse.Namespace) -> int:
    """Run the ``maintenance`` subcommand in ``args``; the exit code."""
    settings = load_checked_settings(args.config)
    now = SystemClock().now()
    window: Window | None = None
    if args.maintenance_command == "add":
        window = parse_window(settings, args.site, args.start, args.end, args.reason, args.config)
    ensure_schema(settings.database.url, auto_upgrade=settings.database.auto_upgrade)
    engine = make_engine(settings.database.url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            sync_sites(session, settings.site, now)
            store.sync_config(session, settings.maintenance, now)
            if window is not None:
                return _add(session, settings, window, now)
            if args.maintenance_command == "remove":
                row = store.remove(session, args.id, now)
                print(f"removed maintenance window {row.id} of site {row.site_id}{_cancel(row)}")
                return 0
            rows = store.windows(session, include_removed=args.all)
            print(format_windows(rows, settings, now, args.format), end="")
            return 0
    finally:
        engine.dispose()


def parse_window(
    settings: Settings, site: str, start: str, end: str, reason: str, config: str
) -> Window:
    """The window the ``add`` options describe; :class:`InputError` naming the option."""
    site_ids = [s.id for s in settings.site]
    if site not in site_ids:
        raise InputError(f"--site {site}: not a [[site]] of {config}; expected one of {site_ids}")
    start_at = parse_instant("--start", start)
    end_at = parse_instant("--end", end)
    problem = span_problem(start_at, end_at)
    if problem is not None:
        raise InputError(f"--end {end}: {problem}")
    problem = reason_problem(reason)
    if problem is not None:
        raise InputError(f"--reason: {problem}")
    return Window(site, start_at, end_at, reason)


def parse_instant(option: str, text: str) -> datetime:
    """An aware UTC instant from ISO 8601 ``text``; :class:`InputError` naming ``option``."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"{option} {text}: not an ISO 8601 time such as {ISO_INSTANT_EXAMPLE}"
        ) from exc
    problem = instant_problem(value) or instant_range_problem(value)
    if problem is not None:
        raise InputError(f"{option} {text}: {problem}")
    return value.astimezone(UTC)


def format_windows(
    rows: list[AvailabilityWindow], settings: Settings, now: datetime, form: str
) -> str:
    """The windows as a text table or JSON, with their state."""
    served = {s.id: s.vtn for s in settings.site}
    records = [
        {
            "id": row.id,
            "site": row.site_id,
            "start_at": row.start_at.isoformat(),
            "end_at": row.end_at.isoformat(),
            "source": row.source,
            "state": _state(row, served, now),
            "vtn": row.vtn_id or served.get(row.site_id),
            "opt_id": row.opt_id,
            "reason": row.reason,
        }
        for row in rows
    ]
    if form == "json":
        return json.dumps(records, indent=2) + "\n"
    if not records:
        return "no maintenance windows\n"
    columns = ("id", "site", "start_at", "end_at", "source", "state", "reason")
    cells = [[str(r[c]) for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _state(row: AvailabilityWindow, served: dict[str, str | None], now: datetime) -> str:
    state = store.state(row, now)
    if state.startswith("pending") and served.get(row.site_id) is None:
        return "not sent: no VTN serves the site"
    return state


def _add(session: Session, settings: Settings, window: Window, now: datetime) -> int:
    duplicate = store.active_duplicate(session, window)
    if duplicate is not None:
        raise InputError(
            f"site {window.site_id} already has maintenance window {duplicate.id} from "
            f"{window.start_at.isoformat()} to {window.end_at.isoformat()}"
        )
    row = store.add(session, window, "cli", now)
    vtn = settings.site_by_id(window.site_id).vtn
    where = (
        f"the daemon sends it to VTN {vtn}"
        if vtn is not None
        else "no VTN serves the site: kept from events and migrations, not sent"
    )
    print(
        f"added maintenance window {row.id} for site {row.site_id} from "
        f"{row.start_at.isoformat()} to {row.end_at.isoformat()}; {where}"
    )
    return 0


def _cancel(row: AvailabilityWindow) -> str:
    if row.response_code == ACKNOWLEDGED:
        return f"; the daemon cancels opt {row.opt_id} at VTN {row.vtn_id}"
    return ""
