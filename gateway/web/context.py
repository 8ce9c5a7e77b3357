"""What every handler of the web application shares: the database, the clock, the daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock


@dataclass(frozen=True, slots=True)
class VtnState:
    """One utility connection as the daemon sees it now."""

    vtn_id: str
    available: bool
    """The VTN answered its last polls (``gateway.ven.client.VenConnection.available``)."""


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The parts of the daemon's state that live in memory, not in the database."""

    scheduler_running: bool
    """The poll and plan rounds are scheduled."""
    stopping: bool
    """The daemon is shutting down."""
    vtns: tuple[VtnState, ...]


DaemonStateSource = Callable[[], DaemonState]


@dataclass(frozen=True, slots=True)
class WebContext:
    sessions: sessionmaker[Session]
    clock: Clock
    refresh_s: float
    """How often the dashboard page asks for new figures [wall s]."""
    daemon_state: DaemonStateSource | None
    """None when the application runs without a daemon (tests, tools)."""


CONTEXT = web.AppKey("context", WebContext)
