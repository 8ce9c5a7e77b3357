"""The web application and its server: dashboard, JSON API, ``/healthz`` and ``/metrics``,
all behind the bearer token of ``[web]`` (``docs/web.md``)."""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.http_edge import SERVER_OPTIONS, client_gone, target_length_middleware
from gateway.settings_web import WebSettings
from gateway.web import api, dashboard, health, metrics
from gateway.web.auth import Handler, token_middleware
from gateway.web.context import CONTEXT, DaemonStateSource, WebContext

log = logging.getLogger(__name__)

SHUTDOWN_S = 2.0
"""How long a stopping server lets requests in progress finish [wall s]."""


def make_app(
    sessions: sessionmaker[Session],
    settings: WebSettings,
    clock: Clock,
    daemon_state: DaemonStateSource | None = None,
) -> web.Application:
    """The aiohttp application over the database behind ``sessions``.

    settings: the ``[web]`` section; its token (or token file, read now) guards every route.
    clock: the gateway's clock (the simulated one in a demo) for the times the API reports.
    daemon_state: what the daemon holds in memory (scheduler, VTN connections) for
        ``/healthz``; None without a daemon.
    Raises ConfigError when no usable token is configured."""
    app = web.Application(
        middlewares=[
            _json_errors,
            target_length_middleware(
                lambda status, detail: api.error_answer(status, "uri too long", detail)
            ),
            token_middleware(settings.bearer_token()),
        ]
    )
    app[CONTEXT] = WebContext(
        sessions=sessions, clock=clock, refresh_s=settings.refresh_s, daemon_state=daemon_state
    )
    app[metrics.REGISTRY_KEY] = metrics.make_registry(sessions)
    dashboard.add_routes(app)
    api.add_routes(app)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/metrics", metrics.metrics)
    app.on_response_prepare.append(dashboard.security_headers)
    return app


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors of the router (404, 405) as JSON, like every other answer of the API; a
    bug as a JSON 500 (logged with its traceback); a client that hung up at debug."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < HTTPStatus.BAD_REQUEST or exc.content_type == "application/json":
            raise
        return api.error_answer(exc.status, exc.reason.lower(), exc.text or exc.reason)
    except Exception as exc:
        if isinstance(exc, ConnectionError) and client_gone(request):
            log.debug("client left during %s %s (%s)", request.method, request.path, exc)
            return api.error_answer(HTTPStatus.BAD_REQUEST, "bad request", "client left")
        # Request boundary: a bug answers a JSON 500 and the server keeps serving.
        log.exception("web server failed on %s %s", request.method, request.path)
        return api.error_answer(
            HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error", "the web server failed"
        )


class WebServer:
    """The application served on ``host:port`` (port 0: one the system picks)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        """``http://HOST:PORT`` once started."""

    async def start(self) -> str:
        """Listen and return the URL; raises OSError when the address cannot be had."""
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_S,
            **SERVER_OPTIONS,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = _bound_address(runner)
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _bound_address(runner: web.AppRunner) -> tuple[str, int]:
    """The address the first socket of ``runner`` listens on (IPv6 hosts in brackets)."""
    for address in runner.addresses:
        host, port = str(address[0]), int(address[1])
        return (f"[{host}]" if ":" in host else host), port
    raise RuntimeError("the web server listens on no socket")
