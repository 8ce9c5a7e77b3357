"""Maintenance windows in the database (``availability_windows``).

Each function works inside one unit of work (a Session passed in) and commits nothing itself.

Windows come from two sources. ``[[maintenance]]`` entries of the configuration are synced
with :func:`sync_config`: the configuration owns them, so an entry that is gone from it is
removed (and its opt cancelled). Windows added with ``dr-gateway maintenance add`` are the
CLI's and removed with ``maintenance remove``.

What still has to go to a VTN: :func:`unsent` (opts never answered) and :func:`uncancelled`
(acknowledged opts of removed windows whose cancellation was never answered). Windows that
have ended are neither sent nor cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.errors import InputError
from gateway.maintenance_window import Window
from gateway.settings_sites import MaintenanceSettings
from gateway.ven.availability import ACKNOWLEDGED, OptAnswer
from models import AvailabilityWindow, WindowSource

Span = tuple[datetime, datetime]
"""[start_at, end_at) of a window [aware UTC]."""


@dataclass(frozen=True)
class ConfigSync:
    """What :func:`sync_config` changed: the ids of the rows added and removed."""

    added: tuple[int, ...]
    removed: tuple[int, ...]


def new_opt_id() -> str:
    """A fresh optID; not all digits (openleadr would parse it as a number)."""
    return f"OPT-{uuid.uuid4().hex[:20].upper()}"


def add(
    session: Session, window: Window, source: WindowSource, now: datetime
) -> AvailabilityWindow:
    """Store a new window; its opt is sent by the daemon's next availability round."""
    row = AvailabilityWindow(
        site_id=window.site_id,
        start_at=window.start_at,
        end_at=window.end_at,
        reason=window.reason,
        source=source,
        opt_id=new_opt_id(),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def active_duplicate(session: Session, window: Window) -> AvailabilityWindow | None:
    """A window not removed with the same site, start and end, if any."""
    return session.scalars(
        select(AvailabilityWindow).where(
            AvailabilityWindow.site_id == window.site_id,
            AvailabilityWindow.start_at == window.start_at,
            AvailabilityWindow.end_at == window.end_at,
            AvailabilityWindow.cancelled_at.is_(None),
        )
    ).first()


def sync_config(
    session: Session, entries: Sequence[MaintenanceSettings], now: datetime
) -> ConfigSync:
    """Make the configuration's windows those stored with source ``config``.

    An entry is the same window as a stored one with the same site, start and end (its
    reason is updated); new entries are added, stored ones the configuration no longer has
    are removed.
    """
    stored = list(
        session.scalars(
            select(AvailabilityWindow).where(
                AvailabilityWindow.source == "config", AvailabilityWindow.cancelled_at.is_(None)
            )
        )
    )
    by_span = {(row.site_id, row.start_at, row.end_at): row for row in stored}
    added: list[int] = []
    kept: set[int] = set()
    for entry in entries:
        window = Window(entry.site, entry.start_at, entry.end_at, entry.reason)
        row = by_span.get((window.site_id, window.start_at, window.end_at))
        if row is None:
            row = add(session, window, "config", now)
            by_span[(window.site_id, window.start_at, window.end_at)] = row
            added.append(row.id)
        row.reason = window.reason
        kept.add(row.id)
    removed = []
    for row in stored:
        if row.id not in kept:
            row.cancelled_at = now
            removed.append(row.id)
    return ConfigSync(tuple(added), tuple(removed))


def remove(session: Session, window_id: int, now: datetime) -> AvailabilityWindow:
    """Remove a window added with the CLI; its opt is cancelled by the next round.

    Raises :class:`InputError` for an unknown id, a window of the configuration or one
    already removed.
    """
    row = session.get(AvailabilityWindow, window_id)
    if row is None:
        raise InputError(f"no maintenance window {window_id}; see dr-gateway maintenance list")
    if row.source == "config":
        raise InputError(
            f"maintenance window {window_id} comes from the configuration ([[maintenance]] for "
            f"site {row.site_id}); remove it there and restart the daemon"
        )
    if row.cancelled_at is not None:
        raise InputError(
            f"maintenance window {window_id} was removed at {row.cancelled_at.isoformat()}"
        )
    row.cancelled_at = now
    return row


def windows(session: Session, *, include_removed: bool = False) -> list[AvailabilityWindow]:
    """Stored windows by start, then id."""
    query = select(AvailabilityWindow).order_by(AvailabilityWindow.start_at, AvailabilityWindow.id)
    if not include_removed:
        query = query.where(AvailabilityWindow.cancelled_at.is_(None))
    return list(session.scalars(query))


def unsent(session: Session, now: datetime) -> list[AvailabilityWindow]:
    """Windows not removed or ended whose opt no VTN has answered yet."""
    return list(
        session.scalars(
            select(AvailabilityWindow)
            .where(
                AvailabilityWindow.cancelled_at.is_(None),
                AvailabilityWindow.sent_at.is_(None),
                AvailabilityWindow.end_at > now,
            )
            .order_by(AvailabilityWindow.id)
        )
    )


def uncancelled(session: Session, now: datetime) -> list[AvailabilityWindow]:
    """Removed windows, not ended, whose acknowledged opt no VTN has cancelled yet."""
    return list(
        session.scalars(
            select(AvailabilityWindow)
            .where(
                AvailabilityWindow.cancelled_at.is_not(None),
                AvailabilityWindow.response_code == ACKNOWLEDGED,
                AvailabilityWindow.cancel_sent_at.is_(None),
                AvailabilityWindow.end_at > now,
            )
            .order_by(AvailabilityWindow.id)
        )
    )


def record_sent(
    session: Session, window_id: int, vtn_id: str, answer: OptAnswer, at: datetime
) -> None:
    """The VTN ``vtn_id`` answered the window's oadrCreateOpt at ``at``."""
    row = session.get_one(AvailabilityWindow, window_id)
    row.vtn_id = vtn_id
    row.sent_at = at
    row.response_code = answer.response_code
    row.response_description = answer.description
    row.last_error = None


def record_cancel_sent(session: Session, window_id: int, answer: OptAnswer, at: datetime) -> None:
    """The VTN answered the window's oadrCancelOpt at ``at``."""
    row = session.get_one(AvailabilityWindow, window_id)
    row.cancel_sent_at = at
    row.cancel_response_code = answer.response_code
    row.last_error = None


def record_failure(session: Session, window_id: int, error: str) -> None:
    """The last attempt for the window got no answer: it is tried again later."""
    session.get_one(AvailabilityWindow, window_id).last_error = error


def maintenance_by_site(session: Session, now: datetime) -> dict[str, tuple[Span, ...]]:
    """The windows not removed and not ended, by site id, by start."""
    out: dict[str, list[Span]] = {}
    for row in windows(session):
        if row.end_at > now:
            out.setdefault(row.site_id, []).append((row.start_at, row.end_at))
    return {site_id: tuple(spans) for site_id, spans in out.items()}


def state(row: AvailabilityWindow, now: datetime) -> str:
    """What became of a window, for people: ``sent``, ``refused 454``, ``pending``, ..."""
    if row.cancelled_at is not None:
        if row.response_code != ACKNOWLEDGED:
            return "removed"
        if row.cancel_sent_at is not None:
            return f"removed, cancel answered {row.cancel_response_code}"
        return "removed, ended" if row.end_at <= now else "removed, cancel pending"
    if row.sent_at is not None:
        if row.response_code == ACKNOWLEDGED:
            return "ended" if row.end_at <= now else "acknowledged"
        return f"refused {row.response_code}"
    if row.end_at <= now:
        return "ended, never sent"
    return "pending" if row.last_error is None else "pending, retrying"
