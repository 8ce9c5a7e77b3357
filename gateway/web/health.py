"""``/healthz``: can the gateway do its work? 200 when it can, 503 when it cannot.

Unhealthy means the database does not answer (every part of the gateway needs it) or the
daemon is shutting down. A utility (VTN) that cannot be reached is reported but does not make
the gateway unhealthy: the gateway keeps reconnecting and the other utilities carry on.
"""

from __future__ import annotations

import asyncio
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from gateway.web import data
from gateway.web.api import json_answer
from gateway.web.context import CONTEXT, WebContext


def _check_database(context: WebContext) -> dict[str, Any]:
    """Whether the database answers, how fast [ms], and if not, why (one line)."""
    started = time.perf_counter()
    try:
        with context.sessions() as session:
            data.database_reachable(session.connection())
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's words, without the SQL
        first_line = str(cause).splitlines()
        return {
            "reachable": False,
            "error": f"{type(exc).__name__}: {first_line[0] if first_line else ''}"[:300],
        }
    return {"reachable": True, "latency_ms": round((time.perf_counter() - started) * 1e3, 3)}


async def healthz(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    database = await asyncio.to_thread(_check_database, context)
    daemon = None if context.daemon_state is None else context.daemon_state()
    healthy = database["reachable"] and not (daemon is not None and daemon.stopping)
    return json_answer(
        {
            "status": "ok" if healthy else "unavailable",
            "checked_at": context.clock.now(),
            "database": database,
            "daemon": daemon,
        },
        HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
    )
