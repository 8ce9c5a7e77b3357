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


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, follow_symlinks=False)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer: no caching (the figures change, the token must not linger) and a
    strict content security policy; no referrer leaves the page."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
