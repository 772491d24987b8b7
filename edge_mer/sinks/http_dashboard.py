"""The live dashboard of the HTTP sink: ``GET /`` (a page), ``/dashboard.js`` and ``/dashboard.css``.

The page is static package data (``edge_mer/assets/dashboard``): plain HTML,
JS and CSS, no CDN, no library. It holds no data: its script reads the
decisions from ``/ws`` and the health from ``/healthz``. So the page and its
two assets are served without the token (see :func:`edge_mer.sinks.http_guard.wants_page`);
everything with data still needs it, and the page asks for it (kept in the
tab's ``sessionStorage``, sent as ``Authorization: Bearer`` to /state and as
``?token=`` to /ws, which a browser WebSocket cannot give a header).

``GET /`` without ``text/html`` in ``Accept`` (a script, curl) keeps its old
answer, the JSON list of routes, and needs the token as before.

Every asset goes out with a Content-Security-Policy that allows only this
origin (scripts, styles, fetch and WebSocket), no inline script, no framing.

aiohttp is passed in by the sink (which imports it in ``open`` only), never imported here.
"""
from __future__ import annotations

import functools
import importlib.resources
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edge_mer.sinks.http_guard import PAGE_ROUTES, wants_page

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

INDEX_JSON = '{"routes":["/","/healthz","/metrics","/state","/ws","/dashboard.js","/dashboard.css"]}'
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_ASSETS = {  # route name -> (file under assets/dashboard, content type)
    "index": ("index.html", "text/html"),
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
}
assert set(_ASSETS) == PAGE_ROUTES


@functools.lru_cache(maxsize=None)
def asset(name: str) -> bytes:
    """The bytes of one dashboard file (read from the package once)."""
    return importlib.resources.files("edge_mer").joinpath("assets").joinpath("dashboard").joinpath(name).read_bytes()


def _headers(content_type: str) -> dict[str, str]:
    return {"Content-Type": f"{content_type}; charset=utf-8", "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def add_routes(app: Any, aiohttp_web: ModuleType) -> None:
    """Add ``/``, ``/dashboard.js`` and ``/dashboard.css`` to ``app`` (an ``aiohttp.web.Application``)."""

    def static(route: str) -> Any:
        filename, content_type = _ASSETS[route]

        async def handler(request: web.Request) -> web.StreamResponse:
            if route == "index" and not wants_page(request):
                return aiohttp_web.Response(text=INDEX_JSON, content_type="application/json")
            return aiohttp_web.Response(body=asset(filename), headers=_headers(content_type))

        return handler

    app.router.add_get("/", static("index"), name="index")
    app.router.add_get("/dashboard.js", static("dashboard.js"), name="dashboard.js")
    app.router.add_get("/dashboard.css", static("dashboard.css"), name="dashboard.css")
