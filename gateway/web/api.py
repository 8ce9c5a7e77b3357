"""The JSON API (``/api/v1/...``, ``docs/web.md``): the dashboard's data for any client.

Every handler reads the database in a worker thread (a slow query does not hold up the
daemon's event loop) inside one session, and answers JSON: timestamps as ISO 8601 UTC with a
``Z``, energies in kWh, power in kW, durations in s, figures that do not exist as ``null``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session

from gateway.db import unit_of_work
from gateway.web import data
from gateway.web.context import CONTEXT, WebContext
from models import MIGRATION_STATES

API_PREFIX = "/api/v1"
RECENT_MIGRATIONS_DEFAULT = 20
EVENTS_DEFAULT = 50
LIMIT_MAX = 1000

T = TypeVar("T")


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses as objects, datetimes as ``...Z`` strings, tuples as lists
    and NaN as None, ready for :func:`json.dumps`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be aware UTC")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def json_answer(payload: Any, status: int = HTTPStatus.OK) -> web.Response:
    return web.json_response(
        jsonable(payload), status=status, dumps=lambda v: json.dumps(v, allow_nan=False)
    )


def error_answer(status: int, error: str, detail: str) -> web.Response:
    return json_answer({"error": error, "detail": detail}, status)


async def read(context: WebContext, reader: Callable[[Session], T]) -> T:
    """Run ``reader`` on a session of its own in a worker thread."""

    def in_thread() -> T:
        with unit_of_work(context.sessions) as session:
            return reader(session)

    return await asyncio.to_thread(in_thread)


def limit_parameter(request: web.Request, default: int) -> int:
    """``?limit=N`` (1 to LIMIT_MAX); 400 naming the parameter when it is bad."""
    text = request.query.get("limit")
    if text is None:
        return default
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIMIT_MAX:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": "bad request",
                    "detail": f"limit: expected a whole number from 1 to {LIMIT_MAX}, got {text!r}",
                }
            ),
            content_type="application/json",
        )
    return limit


# -- the handlers ---------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    """Everything the dashboard shows, in one answer."""
    context = request.app[CONTEXT]
    now = context.clock.now()
    recent = limit_parameter(request, RECENT_MIGRATIONS_DEFAULT)

    def reader(session: Session) -> dict[str, Any]:
        return {
            "generated_at": now,
            "refresh_s": context.refresh_s,
            "sites": data.sites(session),
            "jobs": data.jobs(session),
            "migrations": _migrations(session, recent),
            "events": data.events(session, EVENTS_DEFAULT),
            "energy": data.energy(session.connection(), now),
        }

    return json_answer(await read(context, reader))


async def sites(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    return json_answer({"sites": await read(context, data.sites)})


async def jobs(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    return json_answer({"jobs": await read(context, data.jobs)})


async def migrations(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    recent = limit_parameter(request, RECENT_MIGRATIONS_DEFAULT)
    return json_answer(await read(context, lambda session: _migrations(session, recent)))


async def events(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    limit = limit_parameter(request, EVENTS_DEFAULT)
    return json_answer({"events": await read(context, lambda s: data.events(s, limit))})


async def energy(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    now = context.clock.now()
    figures = await read(context, lambda session: data.energy(session.connection(), now))
    return json_answer(figures)


def _migrations(session: Session, recent: int) -> dict[str, Any]:
    return {
        "states": MIGRATION_STATES,
        "counts": data.migration_counts(session),
        "in_flight": data.migrations_in_flight(session),
        "recent": data.migrations_recent(session, recent),
    }


ROUTES: tuple[tuple[str, Callable[[web.Request], Any]], ...] = (
    ("/overview", overview),
    ("/sites", sites),
    ("/jobs", jobs),
    ("/migrations", migrations),
    ("/events", events),
    ("/energy", energy),
)
"""(path below API_PREFIX, handler): every route of the API is a GET."""


def add_routes(app: web.Application) -> None:
    for path, handler in ROUTES:
        app.router.add_get(API_PREFIX + path, handler)
