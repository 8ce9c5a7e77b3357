"""Serving the site controller API (``docs/site-api.md``) with aiohttp: what its two servers share.

The simulated controller (:mod:`simulators.site_controller`) and the site agent
(:mod:`gateway.agent.server`) read requests and refuse them alike, as
``docs/site-api.openapi.yaml`` says:

- :func:`json_body`: a request body is a UTF-8 ``application/json`` object (``415`` otherwise),
  valid JSON without a key twice and without fields it does not know (``400`` naming the field);
  the bodies of the gateway's calls are read into :mod:`gateway.sites.records`'s records by
  :func:`reservation_body`, :func:`transfer_body`, :func:`restore_body` and
  :func:`migration_id_body`, path parameters by :func:`path_id` and :func:`operation_path`;
- :func:`bearer_auth_middleware`: every request carries the site's bearer token (``401`` with
  a ``WWW-Authenticate: Bearer`` challenge, also for a malformed or non-ASCII credential);
- :func:`error_middleware`: every error is the JSON answer ``{"error", "detail"}``, never a
  traceback: a :class:`RequestError` as it says, a :class:`~gateway.sites.fields.FieldError`
  as ``400 bad_request``, aiohttp's own (no route ``404``, wrong method ``405``, body above the
  application's ``client_max_size`` ``413``) with their code, and a bug as ``500 internal``; a
  client that hangs up mid-request is logged at debug, without a traceback;
- :func:`site_middlewares`: the three in order, with the ``414`` of a request target above
  :data:`gateway.http_edge.TARGET_MAX_BYTES` between them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.http_edge import (
    MalformedCredential,
    bearer_token,
    challenge,
    client_gone,
    same_token,
    target_length_middleware,
)
from gateway.sites.fields import FieldError, Fields
from gateway.sites.records import (
    OPERATION_KINDS,
    RESERVATION_FIELDS,
    RESTORE_FIELDS,
    TRANSFER_FIELDS,
    OperationKind,
    Reservation,
    RestoreRequest,
    TransferRequest,
    reservation_from_fields,
    restore_request_from_fields,
    transfer_request_from_fields,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_MEDIA_TYPE = "application/json"
UNAUTHORIZED_DETAIL = "missing or wrong bearer token"
REALM = "dr-gateway-site"
"""The realm of the ``WWW-Authenticate`` challenge of a ``401``."""
_HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
}
"""The error code of each aiohttp HTTP error a server answers; any other is ``error``."""
_ECHO_MAX_CHARS = 60


class RequestError(Exception):
    """A request the server refuses: its HTTP ``status``, error ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def not_found(detail: str) -> RequestError:
    return RequestError(404, "not_found", detail)


def conflict(detail: str) -> RequestError:
    return RequestError(409, "conflict", detail)


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON error answer ``{"error": code, "detail": detail}`` with HTTP ``status``."""
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


def error_middleware(server: str, logger: logging.Logger) -> Middleware:
    """Every error as a JSON answer (see the module); ``server`` names the server in the
    ``500`` answer and in the log line of the failure, on ``logger``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return error_response(exc.status, exc.code, exc.detail)
        except FieldError as exc:
            return error_response(400, "bad_request", str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_ERROR_CODES.get(exc.status, "error")
            headers = {k: v for k, v in exc.headers.items() if k == "WWW-Authenticate"}
            return error_response(exc.status, code, exc.reason, headers)
        except Exception as exc:
            if isinstance(exc, ConnectionError) and client_gone(request):
                # The client hung up (mid-body, say): nobody to answer, nothing went wrong here.
                logger.debug(
                    "%s: client left during %s %s (%s)", server, request.method, request.path, exc
                )
                return error_response(400, "bad_request", "the client closed the connection")
            # Request boundary: a bug answers a JSON 500 and the server keeps serving.
            logger.exception("%s failed on %s %s", server, request.method, request.path)
            return error_response(500, "internal", f"the {server} failed")

    return middleware


def bearer_check(token: str) -> Callable[[web.Request], None]:
    """A check that raises ``HTTPUnauthorized`` (with its ``WWW-Authenticate`` challenge)
    unless a request carries ``Authorization: Bearer TOKEN`` (compared in constant time); a
    malformed credential is refused like a wrong one."""

    def check(request: web.Request) -> None:
        try:
            given = bearer_token(request.headers.get("Authorization"))
        except MalformedCredential:
            given, invalid = None, True
        else:
            invalid = given is not None
        if given is None or not same_token(given, token):
            raise web.HTTPUnauthorized(
                reason=UNAUTHORIZED_DETAIL,
                headers={"WWW-Authenticate": challenge(REALM, invalid=invalid)},
            )

    return check


def bearer_auth_middleware(token: str) -> Middleware:
    """``401 unauthorized`` for every request without the bearer token ``token``."""
    check = bearer_check(token)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            check(request)
        except web.HTTPUnauthorized as exc:
            headers = {"WWW-Authenticate": exc.headers["WWW-Authenticate"]}
            return error_response(401, "unauthorized", exc.reason, headers)
        return await handler(request)

    return middleware


def site_middlewares(server: str, logger: logging.Logger, token: str) -> list[Middleware]:
    """The middlewares of a site API server, outermost first: JSON errors
    (:func:`error_middleware`), ``414`` for an absurdly long target, the bearer token."""
    return [
        error_middleware(server, logger),
        target_length_middleware(
            lambda status, detail: error_response(status, "uri_too_long", detail)
        ),
        bearer_auth_middleware(token),
    ]


def _unsupported_media_type(detail: str) -> RequestError:
    return RequestError(415, "unsupported_media_type", detail)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise FieldError(key[:_ECHO_MAX_CHARS], "appears twice in one object")
        document[key] = value
    return document


async def json_body(request: web.Request, known: Iterable[str]) -> Fields:
    """The request's JSON object, refusing other media types and fields not in ``known``."""
    if request.content_type != JSON_MEDIA_TYPE:
        shown = request.content_type[:_ECHO_MAX_CHARS]
        raise _unsupported_media_type(f"expected Content-Type {JSON_MEDIA_TYPE}, got {shown!r}")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        shown = charset[:_ECHO_MAX_CHARS]
        raise _unsupported_media_type(f"expected a UTF-8 JSON body, got charset {shown!r}")
    raw = await request.read()  # aiohttp answers 413 above the app's client_max_size
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "bad_request", f"body is not UTF-8: {exc.reason}") from exc
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except FieldError:
        raise
    except json.JSONDecodeError as exc:
        raise RequestError(400, "bad_request", f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise RequestError(400, "bad_request", "body is nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise RequestError(400, "bad_request", f"body is not usable JSON: {exc}") from exc
    fields = Fields(document)
    fields.reject_unknown(known)
    return fields


def path_fields(request: web.Request) -> Fields:
    """The request's path parameters, read like the fields of a body."""
    return Fields(dict(request.match_info))


def path_id(request: web.Request, name: str) -> str:
    """The job or migration id in the path parameter ``name``."""
    return path_fields(request).identifier(name)


def operation_path(request: web.Request) -> tuple[str, OperationKind]:
    """The migration id and kind of ``GET /v1/operations/{migration_id}/{kind}``."""
    path = path_fields(request)
    return path.identifier("migration_id"), path.choice("kind", OPERATION_KINDS)


async def migration_id_body(request: web.Request) -> str:
    """The migration id of a ``{"migration_id"}`` body (checkpoint, resume, release)."""
    return (await json_body(request, ("migration_id",))).identifier("migration_id")


async def reservation_body(request: web.Request) -> Reservation:
    """The body of ``POST /v1/reservations``."""
    return reservation_from_fields(await json_body(request, RESERVATION_FIELDS))


async def transfer_body(request: web.Request) -> TransferRequest:
    """The body of ``POST /v1/jobs/{job_id}/transfer``."""
    return transfer_request_from_fields(await json_body(request, TRANSFER_FIELDS))


async def restore_body(request: web.Request, job_id: str) -> RestoreRequest:
    """The body of ``POST /v1/jobs/{job_id}/restore`` for the job ``job_id`` of its path."""
    return restore_request_from_fields(job_id, await json_body(request, RESTORE_FIELDS))
