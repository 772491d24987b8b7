"""HTTP + WebSocket output: an aiohttp server on its own event loop in a daemon thread.

Routes (``HttpConfig.host``:``port``, 127.0.0.1:8765 by default; port 0 picks
a free port, exposed as :attr:`HttpSink.port` after ``open``):

``GET /healthz``
    The latest health status exactly as the daemon reported it (the sink adds
    nothing, so it holds no paths or secrets unless the daemon put them there):
    HTTP 200 when its ``status`` is ``ok``, 503 when ``degraded`` or before the
    daemon reported any health. Never needs the token (load balancers probe it).
``GET /metrics``
    Prometheus text exposition from a :class:`prometheus_client.CollectorRegistry`
    owned by the sink (never the global registry, so several sinks coexist).
``GET /state``
    The latest decision as JSON; 404 with ``{"error": ...}`` before the first.
``/ws``
    A WebSocket pushing every decision as one text message (JSON) to every
    client. ``emit`` runs on the scheduler thread and only hands the message
    to the loop (``call_soon_threadsafe``); each client has a bounded queue and
    a slow client loses its *oldest* queued messages, counted in
    :attr:`HttpSink.dropped` and ``edge_mer_ws_dropped_messages_total``.
``GET /``
    The live dashboard for a browser (``Accept: text/html``; with /dashboard.js
    and /dashboard.css, static and without the token as they hold no data),
    the JSON list of routes for anything else: see :mod:`edge_mer.sinks.http_dashboard`.

Access and limits (fields of :class:`HttpConfig`): a ``token`` for every
route but /healthz and the dashboard's static files, a header deadline for a new connection, an idle timeout
for a kept-alive one, at most ``max_connections`` connections and one log
line per malformed request: see :mod:`edge_mer.sinks.http_guard`. WebSocket
clients beyond ``max_clients`` get 503.

Metric names: see :mod:`edge_mer.sinks.http_metrics`.

aiohttp and prometheus_client are imported in ``open`` only.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import importlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from edge_mer.config import require
from edge_mer.errors import ConfigError
from edge_mer.results import Decision, dumps_json
from edge_mer.sinks import http_dashboard
from edge_mer.sinks.base import Sink
from edge_mer.sinks.http_guard import (
    OPEN_ROUTE,
    TOKEN_LENGTHS,
    AccessGuard,
    is_loopback,
)
from edge_mer.sinks.http_metrics import METRICS_CONTENT_TYPE, Metrics

__all__ = ["HttpConfig", "HttpSink", "is_loopback"]  # is_loopback: re-exported, callers import it from here

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 0.7  # of the 1 s that close() may take; the rest is for the loop thread to finish
_CLOSE_BUDGET_S = 1.0
_GOING_AWAY = 1001  # WebSocket close code (RFC 6455): the server is shutting down


@dataclass(frozen=True)
class HttpConfig:
    """HTTP + WebSocket output: /healthz, /metrics (Prometheus), /state, /ws.

    ``token``: "" for none (a non-loopback bind then gets a generated one); a
    secret, so kept out of ``repr``. The timeouts and limits: see :mod:`edge_mer.sinks.http_guard`.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = field(default="", repr=False)
    idle_timeout_s: float = 15.0
    header_timeout_s: float = 10.0
    max_clients: int = 64
    max_connections: int = 256

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, f"port must be in 0..65535, got {self.port}")
        low, high = TOKEN_LENGTHS
        # The message gives the length only: the token is a secret.
        require(self.token == "" or (low <= len(self.token) <= high and all("!" <= c <= "~" for c in self.token)),
                f"token must be {low}..{high} printable ASCII characters without spaces "
                f"(got {len(self.token)} characters)")
        for name in ("idle_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            require(0 < value <= 3600, f"{name} must be in (0, 3600] seconds, got {value}")
        require(self.max_clients >= 1, f"max_clients must be >= 1, got {self.max_clients}")
        require(self.max_connections >= self.max_clients,
                f"max_connections must be >= max_clients ({self.max_clients}), got {self.max_connections}")


def _require(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"outputs.http.enabled needs the {package} package: pip install {package}") from exc


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or a one-line :class:`ConfigError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"outputs.http.host: cannot resolve {host!r} ({exc.strerror}), "
                          f"expected an IP address or host name") from exc
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=128)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"outputs.http.port: port {port} on {host} is in use "
                              f"(expected a free port, or 0 for any free port)") from exc
        raise ConfigError(f"outputs.http: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@dataclass(eq=False)
class _Client:
    """One WebSocket client: its response and its bounded queue of pending messages."""

    ws: web.WebSocketResponse
    queue: asyncio.Queue[str]
    transport: asyncio.Transport | None
    sender: asyncio.Task[None] | None = field(default=None)


class HttpSink(Sink):
    """Serves /healthz, /metrics, /state and a /ws push channel from a background thread."""

    kind: ClassVar[str] = "http"

    def __init__(self, config: HttpConfig, *, client_queue: int = 32) -> None:
        if client_queue < 1:
            raise ConfigError(f"client_queue must be >= 1, got {client_queue}")
        self.config = config
        #: The bound TCP port (the ephemeral one when ``config.port`` is 0); None until open.
        self.port: int | None = None
        #: WebSocket messages dropped because a client's queue was full.
        self.dropped = 0
        self._guard = AccessGuard(config.token, idle_timeout_s=config.idle_timeout_s,
                                  header_timeout_s=config.header_timeout_s, max_connections=config.max_connections)
        self._client_queue = client_queue
        self._lock = threading.Lock()
        self._decision: str | None = None
        self._health: tuple[str, bool] | None = None  # (JSON text, status is ok)
        self._web: Any = None  # aiohttp.web, once open
        self._metrics: Metrics | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        # Touched on the loop thread only:
        self._clients: set[_Client] = set()
        self._ws_opening = 0  # handshakes in progress, counted against max_clients

    @property
    def token(self) -> str:
        """The token the protected routes need ("" when none): configured, or generated by ``open``."""
        return self._guard.token

    # -- Sink API (any thread) -------------------------------------------------------------
    def open(self) -> None:
        """Bind, start the loop thread and return once the server accepts connections."""
        if self._thread is not None:
            return
        self._web = web = _require("aiohttp.web", "aiohttp")
        protocol_error = _require("aiohttp.http", "aiohttp").HttpProcessingError
        prom = _require("prometheus_client", "prometheus-client")
        sock = _bind(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        self._guard.ensure_token(self.config.host, self.port, sock.getsockname()[0])
        self._metrics = self._guard.metrics = self._metrics or Metrics(prom)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), daemon=True,
                                        name=f"edge-mer-http:{self.port}")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(web, protocol_error, sock), loop).result(_START_TIMEOUT_S)
        except (OSError, RuntimeError, concurrent.futures.TimeoutError) as exc:
            sock.close()
            self.close()
            raise ConfigError(f"outputs.http: cannot serve on {self.config.host}:{self.port}: {exc}") from exc
        log.info("HTTP sink listening on http://%s:%d (dashboard at /; /healthz /metrics /state /ws)%s",
                 self.config.host, self.port,
                 ", token required but for /healthz and the dashboard page" if self._guard.token else "")

    def emit(self, decision: Decision) -> None:
        """Keep ``decision`` as the latest state, update the metrics and queue it for WebSocket clients."""
        if self._metrics is None:
            raise RuntimeError("HttpSink.emit() called before open()")
        text = decision.json_text
        with self._lock:
            self._decision = text
        self._metrics.observe_decision(decision)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: close() is running
                loop.call_soon_threadsafe(self._broadcast, text)

    def health(self, status: dict[str, Any]) -> None:
        """Keep the latest health status for /healthz (served as given) and the source metrics."""
        with self._lock:
            self._health = (dumps_json(status), status.get("status") == "ok")
        if self._metrics is not None:
            self._metrics.observe_health(status)

    def close(self) -> None:
        """Close WebSockets, stop the server and the loop, join the thread (about 1 s at most). Idempotent."""
        deadline = time.monotonic() + _CLOSE_BUDGET_S
        loop, thread = self._loop, self._thread
        self._loop = None
        if loop is not None and not loop.is_closed():
            if self._runner is not None:
                future = asyncio.run_coroutine_threadsafe(self._stop(), loop)
                try:
                    future.result(_STOP_TIMEOUT_S)
                except concurrent.futures.TimeoutError:
                    log.warning("HTTP sink: server shutdown took over %.1f s, stopping the loop", _STOP_TIMEOUT_S)
                except (OSError, RuntimeError) as exc:
                    log.warning("HTTP sink: error while stopping the server: %s", exc)
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=max(0.05, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("HTTP sink: loop thread %s did not stop", thread.name)
        self._thread = None

    # -- loop thread -------------------------------------------------------------------------
    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start(self, web: ModuleType, protocol_error: type[BaseException], sock: socket.socket) -> None:
        app = web.Application(middlewares=[self._guard.middleware(web)])
        http_dashboard.add_routes(app, web)
        app.router.add_get("/healthz", self._get_healthz, name=OPEN_ROUTE)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/state", self._get_state)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.25, access_log=None,
                                     **self._guard.handler_options(protocol_error))
        await self._runner.setup()
        # Our own listener instead of web.SockSite: its protocol factory is where a connection is accepted,
        # which aiohttp has no hook for, and the header timeout starts there.
        self._server = await asyncio.get_running_loop().create_server(self._accept, sock=sock, backlog=128)

    def _accept(self) -> asyncio.BaseProtocol:
        """The protocol of a new connection: see :meth:`AccessGuard.accept`."""
        return self._guard.accept(self._runner.server if self._runner is not None else None)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()  # accept no more connections
        self._guard.cancel_deadlines()
        clients = list(self._clients)
        for client in clients:
            if client.sender is not None:
                client.sender.cancel()
        closing = [asyncio.wait_for(c.ws.close(code=_GOING_AWAY, message=b"server shutdown"), 0.2) for c in clients]
        await asyncio.gather(*closing, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for client in clients:  # a client that stopped reading keeps unsent data: drop it, do not wait
            if client.transport is not None:
                client.transport.abort()
        await asyncio.sleep(0)  # let the aborted transports report connection_lost

    def _broadcast(self, text: str) -> None:
        for client in self._clients:
            if client.queue.full():
                client.queue.get_nowait()
                self.dropped += 1
                if self._metrics is not None:
                    self._metrics.ws_dropped.inc()
            client.queue.put_nowait(text)

    def _json(self, text: str, status: int = 200) -> web.Response:
        return self._web.Response(text=text, status=status, content_type="application/json")

    async def _get_healthz(self, request: web.Request) -> web.Response:
        with self._lock:
            health = self._health
        if health is None:
            return self._json('{"status":"unknown","error":"no health status received yet"}', 503)
        text, ok = health
        return self._json(text, 200 if ok else 503)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        return self._web.Response(body=self._metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _get_state(self, request: web.Request) -> web.Response:
        with self._lock:
            text = self._decision
        if text is None:
            return self._json('{"error":"no decision yet"}', 404)
        return self._json(text)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) + self._ws_opening >= self.config.max_clients:
            if self._metrics is not None:
                self._metrics.refused.labels(what="ws_client").inc()
            return self._json('{"error":"too many WebSocket clients"}', 503)
        ws = self._web.WebSocketResponse(heartbeat=20.0, timeout=0.5)
        self._ws_opening += 1  # a slot is held during the handshake, so concurrent ones cannot overshoot
        try:
            await ws.prepare(request)
        finally:
            self._ws_opening -= 1
        transport = request.transport if isinstance(request.transport, asyncio.Transport) else None
        client = _Client(ws, asyncio.Queue(maxsize=self._client_queue), transport)
        client.sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        self._clients.add(client)
        self._count_clients()
        try:
            async for _ in ws:  # incoming messages are ignored; this loop ends when the client leaves
                pass
        finally:
            self._clients.discard(client)
            client.sender.cancel()
            self._count_clients()
        return ws

    @staticmethod
    async def _send_loop(client: _Client) -> None:
        while True:
            text = await client.queue.get()
            try:
                await client.ws.send_str(text)
            except ConnectionError:
                return

    def _count_clients(self) -> None:
        if self._metrics is not None:
            self._metrics.ws_clients.set(len(self._clients))
