"""The dashboard page: one HTML file, a script that polls the JSON API, a style sheet.

Everything is served by the daemon from ``gateway/web/static`` (no CDN, nothing fetched from
elsewhere); the page's script reads ``/api/v1/overview`` (``gateway.web.api``).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE = STATIC_DIR / "index.html"
STATIC_PREFIX = "/static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page may load its own script, style and data and nothing else."""


MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
"""The media type of each kind of static file, fixed here rather than guessed from the host's
``mime.types`` (which says ``application/javascript`` on some systems; RFC 9239 §6 names
``text/javascript``)."""
STATIC_FILES: dict[str, str] = {
    path.name: MEDIA_TYPES[path.suffix]
    for path in sorted(STATIC_DIR.iterdir())
    if path.is_file() and path.suffix in MEDIA_TYPES
}
"""The names served under ``/static/`` and their media types: the files the package ships,
nothing else (a name is looked up here, never joined to a directory before it is found, so
no path of a request reaches the file system)."""


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})


async def static_file(request: web.Request) -> web.FileResponse:
    """``/static/{name}``: one of :data:`STATIC_FILES`, else 404."""
    name = request.match_info["name"]
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise web.HTTPNotFound(text=f"no static file {name[:60]!r}")
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": media_type})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get(STATIC_PREFIX + "/{name}", static_file)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer: no caching (the figures change, the token must not linger) and a
    strict content security policy; no referrer leaves the page."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
