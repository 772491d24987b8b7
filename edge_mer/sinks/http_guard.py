"""Access and limits of the HTTP sink's server (:mod:`edge_mer.sinks.http`).

What :class:`AccessGuard` enforces (fields of :class:`~edge_mer.sinks.http.HttpConfig`):
with a ``token`` (or one generated at ``open`` for a non-loopback bind,
printed once to stderr) every route but /healthz and the dashboard's static
files (``GET /`` for a browser, /dashboard.js, /dashboard.css: no data; see :func:`wants_page`) needs
``Authorization: Bearer <token>`` or ``?token=<token>``, else 401 with
``WWW-Authenticate: Bearer``. A new connection must send a complete request
head within ``header_timeout_s`` (a deadline armed in the protocol factory,
cancelled by a middleware); a kept-alive connection waiting for its next
request is closed after ``idle_timeout_s`` (aiohttp's ``keepalive_timeout``,
which thus also bounds a slow head on a kept-alive connection). Connections
beyond ``max_connections`` are closed on accept. A request head is capped in
line length, field size and header count; malformed requests get aiohttp's
400 and one log line each, no traceback.

aiohttp is passed in by the sink (which imports it in ``open`` only), never imported here.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from edge_mer.sinks.http_metrics import Metrics

# The sink's logger name: operators filter the HTTP output's records by it, whichever module logs them.
log = logging.getLogger("edge_mer.sinks.http")

TOKEN_LENGTHS = (16, 256)
OPEN_ROUTE = "healthz"  # the one route with data that needs no token
#: The dashboard's route names (:mod:`edge_mer.sinks.http_dashboard`): static files without data, served
#: without the token; "index" (``GET /``) only when it serves the page, see :func:`wants_page`.
PAGE_ROUTES = frozenset({"index", "dashboard.js", "dashboard.css"})
# Our URLs are short and clients send few headers; these cap what one request head may hold.
_MAX_LINE_SIZE, _MAX_FIELD_SIZE, _MAX_HEADERS = 4096, 8190, 64
_BAD_REQUEST_WARN_EVERY_S = 10.0  # a port scan must not flood the log: WARNING at most this often, DEBUG between
_UNAUTHORIZED = '{"error":"unauthorized: send Authorization: Bearer <token> or ?token=<token>"}'


def is_loopback(address: str) -> bool:
    """Whether the bound ``address`` (an IP literal, as ``getsockname`` gives it) is loopback only."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def wants_page(request: web.Request) -> bool:
    """Whether ``request`` gets the dashboard's static files: its assets always, ``/`` for a browser.

    ``GET /`` asking for ``text/html`` (a browser) gets the page, public as it holds no data;
    any other ``GET /`` (a script) gets the JSON list of routes, which needs the token.
    """
    name = request.match_info.route.name
    return name in PAGE_ROUTES and (name != "index" or "text/html" in request.headers.get("Accept", ""))


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Stands in for the ``aiohttp.server`` logger of this sink's connections (aiohttp's ``logger``).

    aiohttp logs each malformed request (garbage, an over-long line or header,
    bad header bytes) with a traceback; clients control that, so each becomes
    one line naming the error class only (the request line may hold the token):
    WARNING at most every ``_BAD_REQUEST_WARN_EVERY_S``, DEBUG in between, and
    a count. Anything else is a fault of the sink's own handlers and keeps its traceback.
    """

    def __init__(self, protocol_error: type[BaseException], count: Callable[[], None]) -> None:
        super().__init__(log, {})
        self._protocol_error = protocol_error
        self._count = count
        self._last_warning = -math.inf

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        """Every level goes through here (``debug``, ``exception``, ... of LoggerAdapter call it)."""
        exc = sys.exc_info()[1] if exc_info is True else exc_info
        if not isinstance(exc, self._protocol_error):
            super().log(level, f"HTTP: {msg}", *args, exc_info=exc_info, **kwargs)
            return
        self._count()
        now = time.monotonic()
        loud = now - self._last_warning >= _BAD_REQUEST_WARN_EVERY_S
        if loud:
            self._last_warning = now
        where = str(msg) % args if args else str(msg)
        log.log(logging.WARNING if loud else logging.DEBUG, "HTTP: answered %s to a malformed request (%s); %s",
                getattr(exc, "code", 400), type(exc).__name__, where)


class _Refuse(asyncio.Protocol):
    """A connection over ``max_connections``: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class AccessGuard:
    """The token, the request-head limits and the connection limit of one sink's server.

    ``ensure_token`` runs in the sink's ``open``; everything else on the sink's
    loop thread. ``metrics`` is set by the sink before its server starts.
    """

    def __init__(self, token: str, *, idle_timeout_s: float, header_timeout_s: float,
                 max_connections: int) -> None:
        #: The token the protected routes need ("" when none): configured, or generated by ``ensure_token``.
        self.token = token
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.metrics: Metrics | None = None
        self._web: Any = None  # aiohttp.web, once the middleware is made
        self._head_deadlines: dict[Any, asyncio.TimerHandle] = {}  # RequestHandler -> its header timeout
        self._fresh: set[Any] = set()  # handlers accepted but not yet in aiohttp's server.connections

    def ensure_token(self, host: str, port: int, bound_address: str) -> None:
        """Generate a token (printed once to stderr) when none is set and ``bound_address`` is not loopback."""
        if self.token or is_loopback(bound_address):
            return
        self.token = secrets.token_urlsafe(32)
        shown = f"[{host}]" if ":" in host else host
        # Printed once, for the operator: never logged (log files travel further than a terminal).
        print(f"edge-mer: HTTP token for http://{shown}:{port}: {self.token}", file=sys.stderr, flush=True)

    def handler_options(self, protocol_error: type[BaseException]) -> dict[str, Any]:
        """Keyword arguments for ``web.AppRunner`` that reach aiohttp's per-connection RequestHandler.

        ``keepalive_timeout`` closes a kept-alive connection idle that long;
        ``logger`` replaces aiohttp.server's tracebacks for bad requests (``protocol_error``:
        aiohttp's ``HttpProcessingError``); the rest cap a request head.
        """
        metrics = self.metrics
        count = metrics.bad_requests.inc if metrics is not None else (lambda: None)
        return {"keepalive_timeout": self.idle_timeout_s, "logger": _ServerLog(protocol_error, count),
                "max_line_size": _MAX_LINE_SIZE, "max_field_size": _MAX_FIELD_SIZE, "max_headers": _MAX_HEADERS}

    def middleware(self, aiohttp_web: ModuleType) -> Any:
        """The aiohttp middleware that cancels a connection's header deadline and checks the token."""
        self._web = aiohttp_web

        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._check(request, handler)  # a function: web.middleware sets an attribute on it

        return aiohttp_web.middleware(guard)

    def accept(self, server: Any) -> asyncio.BaseProtocol:
        """The protocol of a new connection for aiohttp's ``server`` (None once stopped).

        aiohttp's handler with a header deadline, or a refusal.
        """
        if server is None or self._open_connections(server) >= self.max_connections:
            if self.metrics is not None:
                self.metrics.refused.labels(what="connection").inc()
            return _Refuse()
        handler = server()
        loop = asyncio.get_running_loop()
        self._head_deadlines[handler] = loop.call_later(self.header_timeout_s, self._head_timeout, handler)
        # Uncounted until connection_made, which the transport schedules with call_soon after this returns:
        # two call_soon hops later aiohttp counts it itself.
        self._fresh.add(handler)
        loop.call_soon(loop.call_soon, self._fresh.discard, handler)
        return handler

    def _open_connections(self, server: Any) -> int:
        """Connections aiohttp counts, plus those accepted in this burst that it has not counted yet.

        A handler joins ``server.connections`` only in ``connection_made``, which asyncio schedules after
        the accept loop has taken up to a backlog of sockets, so counting that list alone overshoots.
        """
        return len(server.connections) + len(self._fresh)

    def cancel_deadlines(self) -> None:
        """Disarm every pending header deadline (the server is stopping)."""
        for deadline in self._head_deadlines.values():
            deadline.cancel()
        self._head_deadlines.clear()

    def _head_timeout(self, handler: Any) -> None:
        if self._head_deadlines.pop(handler, None) is not None and handler.transport is not None:
            if self.metrics is not None:
                self.metrics.header_timeouts.inc()
            log.debug("HTTP: closing a connection that sent no complete request head in %.1f s",
                      self.header_timeout_s)
            handler.force_close()

    async def _check(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Middleware: the first request head arrived in time (cancel its deadline); then the token check."""
        deadline = self._head_deadlines.pop(request.protocol, None)
        if deadline is not None:
            deadline.cancel()
        route = request.match_info.route.name
        if self.token and route != OPEN_ROUTE and not wants_page(request) and not self._authorized(request):
            if self.metrics is not None:
                self.metrics.unauthorized.inc()
            return self._web.Response(text=_UNAUTHORIZED, status=401, content_type="application/json",
                                      headers={"WWW-Authenticate": 'Bearer realm="edge-mer"'})
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        offered = credentials.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
        # Compared as bytes (compare_digest refuses non-ASCII str); surrogateescape keeps any header byte.
        return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), self.token.encode())
