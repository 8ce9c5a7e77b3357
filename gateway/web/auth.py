"""The bearer token in front of every route (``docs/web.md``).

A request is let in when it carries the configured token in any of three places:

- ``Authorization: Bearer TOKEN`` (Prometheus, curl, probes);
- the ``dr_gateway_token`` cookie, which the dashboard sets (HttpOnly, SameSite=Strict) so
  that the page's own requests need nothing else;
- ``?token=TOKEN`` in the URL, so that a browser can open the dashboard: a GET of the page
  with it is answered by a redirect to the same URL without it, setting the cookie, so the
  token does not stay in the address bar or the history.

Every other request gets 401 with a JSON body and ``WWW-Authenticate: Bearer`` (with
``error="invalid_token"`` when a credential was presented, RFC 6750 §3.1). A malformed
credential (``Bearer`` without a token, or with anything that is not the configured b64token: a
non-ASCII or undecodable token, header or cookie) is refused like a wrong one, never answered
500. Tokens are compared
in time independent of where they differ (:func:`gateway.http_edge.same_token`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.http_edge import MalformedCredential, bearer_token, challenge, same_token

log = logging.getLogger(__name__)

COOKIE_NAME = "dr_gateway_token"
QUERY_PARAMETER = "token"
REALM = "dr-gateway"
PAGES_THAT_SET_THE_COOKIE = frozenset({"/"})
"""GETs of these paths with ``?token=`` are redirected to set the cookie."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(presented: str | None, expected: str) -> bool:
    """True when ``presented`` is the ``expected`` token (constant-time on the bytes); None
    (a malformed credential) matches nothing."""
    return presented is not None and same_token(presented, expected)


def presented_tokens(request: web.Request) -> list[tuple[str, str | None]]:
    """(where, token) for each credential the request carries; the token of a Bearer header
    without one is None."""
    found: list[tuple[str, str | None]] = []
    try:
        header = bearer_token(request.headers.get("Authorization"))
    except MalformedCredential:
        found.append(("header", None))
    else:
        if header is not None:
            found.append(("header", header))
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        found.append(("cookie", cookie))
    query = request.query.get(QUERY_PARAMETER)
    if query:
        found.append(("query", query))
    return found


def unauthorized(detail: str, *, invalid: bool = False) -> web.Response:
    """The 401 answer: JSON, with the challenge RFC 6750 asks for (``invalid``: a credential
    was presented and refused)."""
    return web.json_response(
        {"error": "unauthorized", "detail": detail},
        status=HTTPStatus.UNAUTHORIZED,
        headers={"WWW-Authenticate": challenge(REALM, invalid=invalid)},
    )


def token_middleware(token: str) -> Middleware:
    """An aiohttp middleware that lets in only requests carrying ``token``."""
    if not token:
        raise ValueError("the web server needs a non-empty token")

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented = presented_tokens(request)
        if not presented:
            return unauthorized(
                "this server needs a token: send 'Authorization: Bearer TOKEN', "
                f"or open the dashboard once as /?{QUERY_PARAMETER}=TOKEN"
            )
        accepted = [where for where, value in presented if token_matches(value, token)]
        if not accepted:
            log.debug("refused %s %s: wrong token", request.method, request.path)
            return unauthorized("wrong token", invalid=True)
        if (
            "query" in accepted
            and request.method == "GET"
            and request.path in PAGES_THAT_SET_THE_COOKIE
        ):
            return _redirect_setting_cookie(request, token)
        return await handler(request)

    return require_token


def _redirect_setting_cookie(request: web.Request, token: str) -> web.Response:
    """303 to the same URL without the token, with the cookie that replaces it."""
    location = request.rel_url.without_query_params(QUERY_PARAMETER)
    response = web.Response(status=HTTPStatus.SEE_OTHER, headers={"Location": str(location)})
    response.set_cookie(
        COOKIE_NAME, token, httponly=True, samesite="Strict", path="/", secure=request.secure
    )
    return response
