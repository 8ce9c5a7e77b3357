"""The site agent's HTTP server: ``docs/site-api.md`` (``/v1``) in front of a :class:`SiteAgent`.

Besides the gateway's calls it serves the agent-only calls of ``docs/site-agent.md``:
``POST /v1/jobs`` (submit a job), ``PUT /v1/manifests/{migration_id}`` (a source agent says how
to run the job it sends) and the checkpoint upload of ``gateway.agent.transfer``
(``PUT``/``HEAD /v1/checkpoints/{migration_id}``). Every request needs the site's bearer token;
every error is JSON ``{"error", "detail"}``, never a traceback. Request bodies, the token check
and the error answers are the simulator's too (:mod:`gateway.sites.serving`), and so is the
table that binds handlers to routes (:mod:`gateway.sites.routes`).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from gateway.agent.checkpoint_receiver import checkpoint_handlers
from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.http_edge import SERVER_OPTIONS
from gateway.sites.fields import FieldError, Fields
from gateway.sites.records import (
    JOB_SPEC_FIELDS,
    job_spec_from_fields,
    job_status_to_wire,
    operation_to_wire,
    status_to_wire,
)
from gateway.sites.routes import OperationHandlers, server_route_defs
from gateway.sites.serving import (
    Handler,
    bearer_check,
    json_body,
    migration_id_body,
    operation_path,
    path_id,
    reservation_body,
    restore_body,
    site_middlewares,
    transfer_body,
)

log = logging.getLogger(__name__)

AGENT_KEY = web.AppKey("agent", SiteAgent)
_COMMAND_MAX_ARGUMENTS = 1000


def _command(fields: Fields, key: str = "command") -> tuple[str, ...]:
    """A job's command: the program and its arguments."""
    command = fields.text_list(key)
    if not 1 <= len(command) <= _COMMAND_MAX_ARGUMENTS:
        raise FieldError(
            key, f"expected a list of 1 to {_COMMAND_MAX_ARGUMENTS} strings (program, arguments)"
        )
    if not command[0]:
        raise FieldError(f"{key}[0]", "the program must not be empty")
    return command


# ---- handlers ---------------------------------------------------------------------------------


async def _get_status(request: web.Request) -> web.Response:
    return web.json_response(status_to_wire(request.app[AGENT_KEY].status()))


async def _post_job(request: web.Request) -> web.Response:
    fields = await json_body(request, ("job_id", "command", *JOB_SPEC_FIELDS))
    job_id = fields.identifier("job_id")
    spec = job_spec_from_fields(job_id, fields)
    command = _command(fields)
    status = await request.app[AGENT_KEY].submit(spec, command)
    return web.json_response(job_status_to_wire(status), status=201)


async def _post_reservation(request: web.Request) -> web.Response:
    asked = await reservation_body(request)
    agent = request.app[AGENT_KEY]
    state = await agent.reserve(asked.migration_id, asked.job_id, asked.gpus, asked.power_kw)
    return web.json_response({"migration_id": asked.migration_id, "state": state})


async def _delete_reservation(request: web.Request) -> web.Response:
    migration_id = path_id(request, "migration_id")
    await request.app[AGENT_KEY].release_reservation(migration_id)
    return web.json_response({"migration_id": migration_id, "state": "released"})


async def _get_operation(request: web.Request) -> web.Response:
    migration_id, kind = operation_path(request)
    op = request.app[AGENT_KEY].operation(migration_id, kind)
    return web.json_response(operation_to_wire(op))


async def _post_checkpoint(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    migration_id = await migration_id_body(request)
    op = request.app[AGENT_KEY].checkpoint(job_id, migration_id)
    return web.json_response(operation_to_wire(op), status=202)


async def _post_transfer(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    asked = await transfer_body(request)
    op = request.app[AGENT_KEY].transfer(
        job_id,
        asked.migration_id,
        asked.target_site_id,
        asked.target_url,
        asked.bandwidth_gbps,
        asked.target_token,
    )
    return web.json_response(operation_to_wire(op), status=202)


async def _post_restore(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    asked = await restore_body(request, job_id)
    op = request.app[AGENT_KEY].restore(
        asked.job, asked.migration_id, asked.source_site_id, asked.checkpoint
    )
    return web.json_response(operation_to_wire(op), status=202)


async def _post_resume(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    migration_id = await migration_id_body(request)
    status = await request.app[AGENT_KEY].resume(job_id, migration_id)
    return web.json_response(job_status_to_wire(status))


async def _lever_id(request: web.Request) -> str:
    return (await json_body(request, ("lever_id",))).identifier("lever_id")


async def _post_pause(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    status = await request.app[AGENT_KEY].pause(job_id, await _lever_id(request))
    return web.json_response(job_status_to_wire(status))


async def _post_unpause(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    status = await request.app[AGENT_KEY].unpause(job_id, await _lever_id(request))
    return web.json_response(job_status_to_wire(status))


async def _post_release(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    migration_id = await migration_id_body(request)
    request.app[AGENT_KEY].release(job_id, migration_id)
    return web.json_response({"job_id": job_id, "state": "released"})


async def _put_manifest(request: web.Request) -> web.Response:
    migration_id = path_id(request, "migration_id")
    fields = await json_body(request, ("job_id", "command", "source_site_id"))
    job_id = fields.identifier("job_id")
    command = _command(fields)
    source_site_id = fields.text("source_site_id")
    created = request.app[AGENT_KEY].receive_manifest(migration_id, job_id, command, source_site_id)
    answer = {"migration_id": migration_id, "job_id": job_id, "state": "received"}
    return web.json_response(answer, status=201 if created else 200)


_HANDLERS: dict[str, Handler] = {
    "getStatus": _get_status,
    "submitJob": _post_job,
    "reserve": _post_reservation,
    "releaseReservation": _delete_reservation,
    "getOperation": _get_operation,
    "checkpointJob": _post_checkpoint,
    "transferCheckpoint": _post_transfer,
    "restoreJob": _post_restore,
    "resumeJob": _post_resume,
    "releaseJob": _post_release,
    "putManifest": _put_manifest,
    "pauseJob": _post_pause,
    "unpauseJob": _post_unpause,
}
"""The agent's handlers by operation (``gateway.sites.routes``), but the checkpoint upload's."""


def build_app(agent: SiteAgent) -> web.Application:
    """An aiohttp application serving ``agent`` under ``/v1``; it starts the agent when the
    application starts and closes it when the application is cleaned up."""
    token = agent.settings.token
    app = web.Application(middlewares=site_middlewares("site agent", log, token))
    app[AGENT_KEY] = agent
    uploads = checkpoint_handlers(agent.received_dir, bearer_check(token))
    app.router.add_routes(server_route_defs("agent", OperationHandlers(_HANDLERS) | uploads))

    async def start(_app: web.Application) -> None:
        await agent.start()

    async def close(_app: web.Application) -> None:
        await agent.close()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return app


async def start_agent_server(
    settings: AgentSettings, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start an agent and serve it on ``host:port`` (0: an OS-assigned port); returns the
    runner (``await runner.cleanup()`` stops the server and the agent, whose jobs checkpoint
    and exit) and the base URL, e.g. ``http://127.0.0.1:41234`` (``https://`` with ``[tls]``,
    which refuses clients without a certificate at the handshake when it requires them). The
    agent is ``runner.app[AGENT_KEY]``. ConfigError when a TLS file went bad."""
    ssl_context = None if settings.tls is None else settings.tls.server_context()
    agent = SiteAgent(settings)
    runner = web.AppRunner(build_app(agent), access_log=None, **SERVER_OPTIONS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    scheme = "http" if ssl_context is None else "https"
    base_url = f"{scheme}://{_url_host(bound_host)}:{bound_port}"
    tls = settings.tls
    security = "" if tls is None else " (mutual TLS)" if tls.mutual else " (TLS)"
    log.info("site agent %s serving at %s%s", settings.site_id, base_url, security)
    return runner, base_url


def _url_host(host: str) -> str:
    """``host`` as it stands in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


async def serve_until_signalled(settings: AgentSettings) -> int:
    """``dr-gateway site-agent``: serve on the configured address until SIGINT or SIGTERM, then
    stop the agent (its jobs checkpoint and exit); the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner, base_url = await start_agent_server(
        settings, host=settings.listen_host, port=settings.listen_port
    )
    try:
        log.info("site agent %s: SIGINT or SIGTERM stops it (%s)", settings.site_id, base_url)
        await stop.wait()
        log.info("site agent %s stopping", settings.site_id)
    finally:
        await runner.cleanup()
    return 0
