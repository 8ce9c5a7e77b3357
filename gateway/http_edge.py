"""What the three HTTP servers (site agent, simulated site controller, dashboard) do alike at
their edge, before a request reaches a handler:

- :func:`bearer_token` reads ``Authorization: Bearer TOKEN`` (RFC 6750 §2.1); a Bearer header
  without a token is :class:`MalformedCredential`. Whatever follows ``Bearer`` is compared with
  the configured token as it is, so a malformed credential (not one RFC 6750 ``b64token``:
  spaces, commas, bytes that are not ASCII) is simply not equal: the servers answer ``401`` with
  a challenge (:func:`challenge`, RFC 6750 §3 and RFC 9110 §11.6.1), never a ``500``. (The
  ``[web]`` token must be a b64token; a site's token is any string of 8 or more characters,
  compared byte for byte as before.)
- :func:`same_token` compares a presented credential with the configured token in constant time,
  whatever characters it holds (a non-ASCII or undecodable header or cookie is just not equal);
- :func:`target_length_middleware` answers ``414 URI Too Long`` (RFC 9110 §15.5.15) for a
  request target above :data:`TARGET_MAX_BYTES`;
- :func:`client_gone` tells a client that hung up mid-request from a failure of the server, and
  :data:`SERVER_LOG` is the logger of aiohttp's connection handler (given with the
  request-line limit in :data:`SERVER_OPTIONS`): it logs a request the
  HTTP parser refused (aiohttp answers it ``400``) or a client that hung up at debug, in one
  line without a traceback, instead of as an error.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

TARGET_MAX_BYTES = 4096
"""The longest request target (path and query, as sent) a server reads [bytes]; longer ones
are answered ``414``. No route of these servers needs more than a few hundred bytes."""
REQUEST_LINE_MAX_BYTES = 65536
"""The longest request line aiohttp's HTTP parser reads on these servers [bytes] (its default
is 8190): a target up to this long reaches :func:`target_length_middleware` and is answered
``414`` as RFC 9112 §3 asks; a longer line is refused by the parser with ``400``."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorAnswer = Callable[[int, str], web.StreamResponse]
"""Builds a server's JSON error answer from (HTTP status, detail)."""


class MalformedCredential(ValueError):
    """An ``Authorization`` header that names the Bearer scheme but carries no token."""


def bearer_token(header: str | None) -> str | None:
    """What follows ``Bearer`` in an ``Authorization`` header, without the spaces around it;
    None when there is no header or it names another scheme (the scheme is case-insensitive,
    RFC 9110 §11.1). Raises MalformedCredential when nothing follows ``Bearer``. The value may
    hold anything the client sent (compare it with :func:`same_token`)."""
    if header is None:
        return None
    scheme, _, rest = header.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip(" \t")
    if not token:
        raise MalformedCredential("Authorization: expected 'Bearer TOKEN', got no token")
    return token


def same_token(presented: str, expected: str) -> bool:
    """True when ``presented`` is ``expected``, compared in constant time on the UTF-8 bytes.

    ``presented`` comes from a request and may hold anything aiohttp decoded (surrogate escapes
    of bytes that are not UTF-8, for instance): what cannot be encoded is simply not equal."""
    try:
        given = presented.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, expected.encode("utf-8"))


def challenge(realm: str, *, invalid: bool) -> str:
    """The ``WWW-Authenticate`` value of a ``401``: ``Bearer realm="REALM"``, with
    ``error="invalid_token"`` when a credential was presented but refused (RFC 6750 §3, §3.1)."""
    value = f'Bearer realm="{realm}"'
    return f'{value}, error="invalid_token"' if invalid else value


def target_length_middleware(answer: ErrorAnswer) -> Middleware:
    """``414`` (built by ``answer``) for a request target above :data:`TARGET_MAX_BYTES`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        size_bytes = len(request.raw_path.encode("utf-8", "surrogateescape"))
        if size_bytes > TARGET_MAX_BYTES:
            return answer(
                414,
                f"the request target is {size_bytes} bytes; this server reads at most "
                f"{TARGET_MAX_BYTES}",
            )
        return await handler(request)

    return middleware


def client_gone(request: web.Request) -> bool:
    """True when the client of ``request`` has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


SERVER_LOG = logging.getLogger("gateway.http_edge.connections")
"""aiohttp's connection handler logs there (:data:`SERVER_OPTIONS`)."""


class _ClientFaultsAtDebug(logging.Filter):
    """Turns aiohttp's error records about a client's fault (a request its parser refused, a
    connection the client dropped) into one debug line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | ConnectionError):
            return True
        if not SERVER_LOG.isEnabledFor(logging.DEBUG):
            return False
        summary = " ".join(str(exc).split())[:200]
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {summary}"
        record.args = ()
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        record.exc_info = None
        record.exc_text = None
        return True


SERVER_LOG.addFilter(_ClientFaultsAtDebug())

SERVER_OPTIONS: dict[str, Any] = {"logger": SERVER_LOG, "max_line_size": REQUEST_LINE_MAX_BYTES}
"""Keyword arguments of ``web.AppRunner`` for the three servers: the connection handler's
logger and the request-line limit."""
