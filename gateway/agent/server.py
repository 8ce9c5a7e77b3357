"""The site agent's HTTP server: ``docs/site-api.md`` (``/v1``) in front of a :class:`SiteAgent`.

Besides the gateway's calls it serves the agent-only calls of ``docs/site-agent.md``:
``POST /v1/jobs`` (submit a job), ``PUT /v1/manifests/{migration_id}`` (a source agent says how
to run the job it sends) and the checkpoint upload of ``gateway.agent.transfer``
(``PUT``/``HEAD /v1/checkpoints/{migration_id}``). Every request needs the site's bearer token;
every error is JSON ``{"error", "detail"}``, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from yarl import URL

from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.agent.errors import AgentRequestError
from gateway.agent.transfer import checkpoint_routes
from gateway.sites.schema import (
    MIN_BANDWIDTH_GBPS,
    OPERATION_KINDS,
    FieldError,
    Fields,
    JobSpec,
    checkpoint_from_fields,
    job_spec_from_fields,
    job_status_to_wire,
    operation_to_wire,
    status_to_wire,
)

log = logging.getLogger(__name__)

AGENT_KEY = web.AppKey("agent", SiteAgent)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
_JSON_MEDIA_TYPE = "application/json"
_ECHO_MAX_CHARS = 60
_JOB_FIELDS = (
    "gpus",
    "power_kw",
    "checkpoint_gb",
    "work_remaining_gpu_h",
    "migratable",
    "flex_tier",
)
_TRANSFER_FIELDS = (
    "migration_id",
    "target_site_id",
    "target_url",
    "bandwidth_gbps",
    "target_token",
)
_COMMAND_MAX_ARGUMENTS = 1000


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AgentRequestError as exc:
        return _error(exc.status, exc.code, exc.detail)
    except FieldError as exc:
        return _error(400, "bad_request", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _ERROR_CODES.get(exc.status, "error"), exc.reason)
    except Exception:
        # Request boundary: a bug answers a JSON 500 and keeps the agent serving.
        log.exception("site agent failed on %s %s", request.method, request.path)
        return _error(500, "internal", "the site agent failed")


def _authorize(token: str) -> Callable[[web.Request], None]:
    expected = token.encode()

    def authorize(request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise web.HTTPUnauthorized(reason="missing or wrong bearer token")

    return authorize


def _auth_middleware(token: str) -> Middleware:
    authorize = _authorize(token)

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            authorize(request)
        except web.HTTPUnauthorized as exc:
            return _error(401, "unauthorized", exc.reason)
        return await handler(request)

    return middleware


# ---- request bodies (strict, like the simulator's) ---------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise FieldError(key[:_ECHO_MAX_CHARS], "appears twice in one object")
        document[key] = value
    return document


async def _body(request: web.Request, known: Iterable[str]) -> tuple[Fields, dict[str, Any]]:
    """The request's JSON object (as Fields and raw), refusing other media types and fields
    not in ``known``."""
    if request.content_type != _JSON_MEDIA_TYPE:
        shown = request.content_type[:_ECHO_MAX_CHARS]
        raise AgentRequestError(
            415,
            "unsupported_media_type",
            f"expected Content-Type {_JSON_MEDIA_TYPE}, got {shown!r}",
        )
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise AgentRequestError(
            415, "unsupported_media_type", f"expected a UTF-8 JSON body, got charset {charset!r}"
        )
    raw = await request.read()  # aiohttp answers 413 above the app's client_max_size
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise AgentRequestError(400, "bad_request", f"body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise AgentRequestError(400, "bad_request", f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise AgentRequestError(400, "bad_request", "body is nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise AgentRequestError(400, "bad_request", f"body is not usable JSON: {exc}") from exc
    fields = Fields(document)
    fields.reject_unknown(known)
    return fields, document


def _path(request: web.Request) -> Fields:
    return Fields(dict(request.match_info))


def _http_url(fields: Fields, key: str) -> str:
    text = fields.text(key)
    try:
        url = URL(text)
    except ValueError as exc:
        raise FieldError(key, f"not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise FieldError(key, "expected an absolute http or https URL")
    return text


def _command(document: dict[str, Any], key: str = "command") -> tuple[str, ...]:
    value = document.get(key)
    if (
        not isinstance(value, list)
        or not value
        or len(value) > _COMMAND_MAX_ARGUMENTS
        or not all(isinstance(item, str) for item in value)
    ):
        raise FieldError(
            key, f"expected a list of 1 to {_COMMAND_MAX_ARGUMENTS} strings (program, arguments)"
        )
    if not value[0]:
        raise FieldError(f"{key}[0]", "the program must not be empty")
    return tuple(value)


def _job_id(request: web.Request) -> str:
    return _path(request).identifier("job_id")


async def _migration_id_body(request: web.Request) -> str:
    fields, _ = await _body(request, ("migration_id",))
    return fields.identifier("migration_id")


# ---- handlers ---------------------------------------------------------------------------------


async def _get_status(request: web.Request) -> web.Response:
    return web.json_response(status_to_wire(request.app[AGENT_KEY].status()))


async def _post_job(request: web.Request) -> web.Response:
    fields, document = await _body(request, ("job_id", "command", *_JOB_FIELDS))
    job_id = fields.identifier("job_id")
    spec: JobSpec = job_spec_from_fields(job_id, fields)
    command = _command(document)
    status = await request.app[AGENT_KEY].submit(spec, command)
    return web.json_response(job_status_to_wire(status), status=201)


async def _post_reservation(request: web.Request) -> web.Response:
    fields, _ = await _body(request, ("migration_id", "job_id", "gpus", "power_kw"))
    migration_id = fields.identifier("migration_id")
    job_id = fields.identifier("job_id")
    gpus = fields.integer("gpus", minimum=1)
    power_kw = fields.number("power_kw", minimum=0.0)
    state = request.app[AGENT_KEY].reserve(migration_id, job_id, gpus, power_kw)
    return web.json_response({"migration_id": migration_id, "state": state})


async def _delete_reservation(request: web.Request) -> web.Response:
    migration_id = _path(request).identifier("migration_id")
    request.app[AGENT_KEY].release_reservation(migration_id)
    return web.json_response({"migration_id": migration_id, "state": "released"})


async def _get_operation(request: web.Request) -> web.Response:
    path = _path(request)
    migration_id = path.identifier("migration_id")
    kind = path.choice("kind", OPERATION_KINDS)
    op = request.app[AGENT_KEY].operation(migration_id, kind)
    return web.json_response(operation_to_wire(op))


async def _post_checkpoint(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    migration_id = await _migration_id_body(request)
    op = request.app[AGENT_KEY].checkpoint(job_id, migration_id)
    return web.json_response(operation_to_wire(op), status=202)


async def _post_transfer(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    fields, _ = await _body(request, _TRANSFER_FIELDS)
    migration_id = fields.identifier("migration_id")
    target_site_id = fields.text("target_site_id")
    target_url = _http_url(fields, "target_url")
    bandwidth_gbps = fields.number("bandwidth_gbps", minimum=MIN_BANDWIDTH_GBPS)
    target_token = fields.optional_text("target_token")
    op = request.app[AGENT_KEY].transfer(
        job_id, migration_id, target_site_id, target_url, bandwidth_gbps, target_token or None
    )
    return web.json_response(operation_to_wire(op), status=202)


async def _post_restore(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    fields, _ = await _body(request, ("migration_id", "source_site_id", "checkpoint", "job"))
    migration_id = fields.identifier("migration_id")
    source_site_id = fields.text("source_site_id")
    checkpoint_fields = fields.obj("checkpoint")
    checkpoint_fields.reject_unknown(("size_gb", "sha256"))
    checkpoint = checkpoint_from_fields(checkpoint_fields)
    job_fields = fields.obj("job")
    job_fields.reject_unknown(_JOB_FIELDS)
    job = job_spec_from_fields(job_id, job_fields)
    op = request.app[AGENT_KEY].restore(job, migration_id, source_site_id, checkpoint)
    return web.json_response(operation_to_wire(op), status=202)


async def _post_resume(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    migration_id = await _migration_id_body(request)
    status = await request.app[AGENT_KEY].resume(job_id, migration_id)
    return web.json_response(job_status_to_wire(status))


async def _post_release(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    migration_id = await _migration_id_body(request)
    request.app[AGENT_KEY].release(job_id, migration_id)
    return web.json_response({"job_id": job_id, "state": "released"})


async def _put_manifest(request: web.Request) -> web.Response:
    migration_id = _path(request).identifier("migration_id")
    fields, document = await _body(request, ("job_id", "command", "source_site_id"))
    job_id = fields.identifier("job_id")
    command = _command(document)
    source_site_id = fields.text("source_site_id")
    created = request.app[AGENT_KEY].receive_manifest(migration_id, job_id, command, source_site_id)
    answer = {"migration_id": migration_id, "job_id": job_id, "state": "received"}
    return web.json_response(answer, status=201 if created else 200)


def build_app(agent: SiteAgent) -> web.Application:
    """An aiohttp application serving ``agent`` under ``/v1``; it starts the agent when the
    application starts and closes it when the application is cleaned up."""
    app = web.Application(middlewares=[_errors_middleware, _auth_middleware(agent.settings.token)])
    app[AGENT_KEY] = agent
    app.router.add_get("/v1/status", _get_status)
    app.router.add_post("/v1/jobs", _post_job)
    app.router.add_post("/v1/reservations", _post_reservation)
    app.router.add_delete("/v1/reservations/{migration_id}", _delete_reservation)
    app.router.add_get("/v1/operations/{migration_id}/{kind}", _get_operation)
    app.router.add_post("/v1/jobs/{job_id}/checkpoint", _post_checkpoint)
    app.router.add_post("/v1/jobs/{job_id}/transfer", _post_transfer)
    app.router.add_post("/v1/jobs/{job_id}/restore", _post_restore)
    app.router.add_post("/v1/jobs/{job_id}/resume", _post_resume)
    app.router.add_post("/v1/jobs/{job_id}/release", _post_release)
    app.router.add_put("/v1/manifests/{migration_id}", _put_manifest)
    app.router.add_routes(checkpoint_routes(agent.received_dir, _authorize(agent.settings.token)))

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
    and exit) and the base URL, e.g. ``http://127.0.0.1:41234``. The agent is
    ``runner.app[AGENT_KEY]``."""
    agent = SiteAgent(settings)
    runner = web.AppRunner(build_app(agent), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    base_url = f"http://{bound_host}:{bound_port}"
    log.info("site agent %s serving at %s", settings.site_id, base_url)
    return runner, base_url


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
