"""The site controller API's one table of routes (``docs/site-api.openapi.yaml``).

Each row is a method, a path template, the operation's name (the document's ``operationId``)
and the servers that serve it (its ``x-served-by``). The site agent
(:mod:`gateway.agent.server`, with the checkpoint upload of
:mod:`gateway.agent.checkpoint_receiver`) and the simulator (:mod:`simulators.site_controller`)
bind their handlers to operations through :func:`server_route_defs`, which refuses a server
that lacks a handler for one of its rows or has one for a row it does not serve: a route
cannot be added to one server and forgotten in the other. ``tests/test_site_api_contract.py``
checks the table against the document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from gateway.sites.serving import Handler

Server = Literal["simulator", "agent"]
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
"""Answers ``Expect: 100-continue``: None lets the body come, a response refuses it unsent."""

_BOTH: tuple[Server, ...] = ("simulator", "agent")
_AGENT: tuple[Server, ...] = ("agent",)


@dataclass(frozen=True)
class SiteRoute:
    """One route: ``method`` (upper case), ``path`` (an aiohttp template such as
    ``/v1/jobs/{job_id}/restore``), ``operation`` (the ``operationId``) and ``served_by``."""

    method: str
    path: str
    operation: str
    served_by: tuple[Server, ...]


SITE_API_ROUTES: tuple[SiteRoute, ...] = (
    SiteRoute("GET", "/v1/status", "getStatus", _BOTH),
    SiteRoute("POST", "/v1/reservations", "reserve", _BOTH),
    SiteRoute("DELETE", "/v1/reservations/{migration_id}", "releaseReservation", _BOTH),
    SiteRoute("GET", "/v1/operations/{migration_id}/{kind}", "getOperation", _BOTH),
    SiteRoute("POST", "/v1/jobs/{job_id}/checkpoint", "checkpointJob", _BOTH),
    SiteRoute("POST", "/v1/jobs/{job_id}/transfer", "transferCheckpoint", _BOTH),
    SiteRoute("POST", "/v1/jobs/{job_id}/restore", "restoreJob", _BOTH),
    SiteRoute("POST", "/v1/jobs/{job_id}/resume", "resumeJob", _BOTH),
    SiteRoute("POST", "/v1/jobs/{job_id}/release", "releaseJob", _BOTH),
    SiteRoute("POST", "/v1/jobs/{job_id}/pause", "pauseJob", _AGENT),
    SiteRoute("POST", "/v1/jobs/{job_id}/unpause", "unpauseJob", _AGENT),
    SiteRoute("POST", "/v1/jobs", "submitJob", _AGENT),
    SiteRoute("PUT", "/v1/manifests/{migration_id}", "putManifest", _AGENT),
    SiteRoute("PUT", "/v1/checkpoints/{migration_id}", "putCheckpoint", _AGENT),
    SiteRoute("HEAD", "/v1/checkpoints/{migration_id}", "headCheckpoint", _AGENT),
)
"""Every route of the API. A ``GET`` route also answers ``HEAD`` (aiohttp's default); the
document lists ``HEAD`` only where it differs."""

_BY_OPERATION = {route.operation: route for route in SITE_API_ROUTES}
_BY_METHOD_PATH = {(route.method, route.path): route for route in SITE_API_ROUTES}


def route_of(operation: str) -> SiteRoute:
    """The row of ``operation``; KeyError for a name the table does not hold."""
    return _BY_OPERATION[operation]


def operation_at(method: str, path: str) -> str | None:
    """The operation that ``method`` on the path template ``path`` reaches, or None."""
    route = _BY_METHOD_PATH.get((method, path))
    return None if route is None else route.operation


@dataclass(frozen=True)
class OperationHandlers:
    """Handlers of some of the table's operations, by operation name; ``expect`` holds the
    ``Expect: 100-continue`` handler of an operation whose body may be refused before it is
    sent."""

    handlers: Mapping[str, Handler]
    expect: Mapping[str, ExpectHandler] = field(default_factory=dict)

    def __or__(self, other: OperationHandlers) -> OperationHandlers:
        return OperationHandlers(
            {**self.handlers, **other.handlers}, {**self.expect, **other.expect}
        )


def route_defs(bound: OperationHandlers) -> list[web.RouteDef]:
    """The aiohttp routes of the operations ``bound`` names, in the table's order; KeyError
    naming an operation the table does not hold."""
    for operation in (*bound.handlers, *bound.expect):
        route_of(operation)
    defs = []
    for route in SITE_API_ROUTES:
        handler = bound.handlers.get(route.operation)
        if handler is None:
            continue
        expect = bound.expect.get(route.operation)
        kwargs = {} if expect is None else {"expect_handler": expect}
        defs.append(web.route(route.method, route.path, handler, **kwargs))
    return defs


def server_route_defs(server: Server, bound: OperationHandlers) -> list[web.RouteDef]:
    """The aiohttp routes of every operation ``server`` serves; ValueError naming the
    operations it has no handler for, or handlers for operations it does not serve."""
    served = [route.operation for route in SITE_API_ROUTES if server in route.served_by]
    missing = [operation for operation in served if operation not in bound.handlers]
    extra = sorted(set(bound.handlers) - set(served))
    if missing or extra:
        raise ValueError(
            f"the {server}'s handlers do not match the site API's routes: "
            f"missing {missing or 'none'}, not served by the {server} {extra or 'none'}"
        )
    return route_defs(bound)
