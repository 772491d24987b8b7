"""HTTP + WebSocket output: an aiohttp server on its own event loop in a daemon thread.

Routes (``HttpConfig.host``:``port``, 127.0.0.1:8765 by default; port 0 picks
a free port, exposed as :attr:`HttpSink.port` after ``open``):

``GET /healthz``
    The latest health status as JSON: HTTP 200 when its ``status`` is ``ok``,
    503 when ``degraded`` or before the daemon reported any health.
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

Metric names: ``edge_mer_decisions_total``; ``edge_mer_modality_valid_total``
and ``edge_mer_modality_invalid_total{reason}`` (the result's
:class:`~edge_mer.names.ReasonCode`, so label cardinality stays bounded and
no free text is parsed);
``edge_mer_decision_latency_seconds`` and ``edge_mer_modality_latency_seconds``
histograms (modality results with zero latency did no work and are not
observed); ``edge_mer_probability{label}``, ``edge_mer_valence``,
``edge_mer_arousal`` (latest decision); ``edge_mer_source_state{source,
edge_mer_source_state=...}`` (an enum: 1 for the current state),
``edge_mer_source_chunks``, ``edge_mer_source_last_chunk_age_seconds``,
``edge_mer_healthy``, ``edge_mer_uptime_seconds``, ``edge_mer_ws_clients``.

aiohttp and prometheus_client are imported in ``open`` only.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import importlib
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from edge_mer.config import require
from edge_mer.errors import ConfigError
from edge_mer.names import SOURCE_STATES
from edge_mer.results import Decision, dumps_json
from edge_mer.sinks.base import Sink

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 0.7  # of the 1 s that close() may take; the rest is for the loop thread to finish
_CLOSE_BUDGET_S = 1.0
_GOING_AWAY = 1001  # WebSocket close code (RFC 6455): the server is shutting down


@dataclass(frozen=True)
class HttpConfig:
    """HTTP + WebSocket output: /healthz, /metrics (Prometheus), /state, /ws."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, f"port must be in 0..65535, got {self.port}")


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


class _Metrics:
    """The Prometheus metrics of one sink, in their own registry."""

    def __init__(self, prom: ModuleType) -> None:
        self.registry = reg = prom.CollectorRegistry()
        self.decisions = prom.Counter("edge_mer_decisions", "Decisions emitted.", registry=reg)
        self.valid = prom.Counter("edge_mer_modality_valid", "Valid modality results.", ["modality"], registry=reg)
        self.invalid = prom.Counter("edge_mer_modality_invalid", "Invalid modality results by reason.",
                                    ["modality", "reason"], registry=reg)
        self.latency = prom.Histogram("edge_mer_decision_latency_seconds", "Decision latency.",
                                      buckets=LATENCY_BUCKETS_S, registry=reg)
        self.modality_latency = prom.Histogram("edge_mer_modality_latency_seconds", "Per-modality latency.",
                                               ["modality"], buckets=LATENCY_BUCKETS_S, registry=reg)
        self.probability = prom.Gauge("edge_mer_probability", "Latest fused probability per label.", ["label"],
                                      registry=reg)
        self.valence = prom.Gauge("edge_mer_valence", "Latest valence.", registry=reg)
        self.arousal = prom.Gauge("edge_mer_arousal", "Latest arousal.", registry=reg)
        self.source_state = prom.Enum("edge_mer_source_state", "Source state.", ["source"],
                                      states=list(SOURCE_STATES), registry=reg)
        self.source_chunks = prom.Gauge("edge_mer_source_chunks", "Chunks delivered by a source.", ["source"],
                                        registry=reg)
        self.source_age = prom.Gauge("edge_mer_source_last_chunk_age_seconds", "Age of a source's last chunk.",
                                     ["source"], registry=reg)
        self.healthy = prom.Gauge("edge_mer_healthy", "1 when the daemon reports status ok.", registry=reg)
        self.uptime = prom.Gauge("edge_mer_uptime_seconds", "Daemon uptime.", registry=reg)
        self.ws_clients = prom.Gauge("edge_mer_ws_clients", "Connected WebSocket clients.", registry=reg)
        self.ws_dropped = prom.Counter("edge_mer_ws_dropped_messages", "Messages dropped for slow WebSocket clients.",
                                       registry=reg)
        self._generate = prom.generate_latest

    def observe_decision(self, decision: Decision) -> None:
        self.decisions.inc()
        self.latency.observe(decision.latency_ms / 1000.0)
        for label, p in decision.probs.items():
            self.probability.labels(label=label).set(p)
        self.valence.set(decision.valence)
        self.arousal.set(decision.arousal)
        for result in decision.modalities:
            if result.valid:
                self.valid.labels(modality=result.modality).inc()
            else:
                code = result.code.value if result.code is not None else "unknown"
                self.invalid.labels(modality=result.modality, reason=code).inc()
            if result.latency_ms > 0:
                self.modality_latency.labels(modality=result.modality).observe(result.latency_ms / 1000.0)

    def observe_health(self, status: dict[str, Any]) -> None:
        self.healthy.set(1.0 if status.get("status") == "ok" else 0.0)
        self.uptime.set(float(status.get("uptime_s", 0.0)))
        for source, info in status.get("sources", {}).items():
            state = info.get("state")
            if state in SOURCE_STATES:
                self.source_state.labels(source=source).state(state)
            else:
                log.warning("health: source %s has unknown state %r (expected one of %s)",
                            source, state, ", ".join(SOURCE_STATES))
            self.source_chunks.labels(source=source).set(float(info.get("chunks", 0)))
            age = info.get("last_chunk_age_s")
            self.source_age.labels(source=source).set(math.nan if age is None else float(age))

    def exposition(self) -> bytes:
        return self._generate(self.registry)


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
        self._client_queue = client_queue
        self._lock = threading.Lock()
        self._decision: str | None = None
        self._health: tuple[str, bool] | None = None  # (JSON text, status is ok)
        self._web: Any = None  # aiohttp.web, once open
        self._metrics: _Metrics | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._clients: set[_Client] = set()  # touched on the loop thread only

    # -- Sink API (any thread) -------------------------------------------------------------
    def open(self) -> None:
        """Bind, start the loop thread and return once the server accepts connections."""
        if self._thread is not None:
            return
        self._web = web = _require("aiohttp.web", "aiohttp")
        prom = _require("prometheus_client", "prometheus-client")
        sock = _bind(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        self._metrics = self._metrics or _Metrics(prom)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), daemon=True,
                                        name=f"edge-mer-http:{self.port}")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(web, sock), loop).result(_START_TIMEOUT_S)
        except (OSError, RuntimeError, concurrent.futures.TimeoutError) as exc:
            sock.close()
            self.close()
            raise ConfigError(f"outputs.http: cannot serve on {self.config.host}:{self.port}: {exc}") from exc
        log.info("HTTP sink listening on http://%s:%d (/healthz /metrics /state /ws)", self.config.host, self.port)

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
        """Keep the latest health status for /healthz and the source metrics."""
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

    async def _start(self, web: ModuleType, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/state", self._get_state)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.25, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _stop(self) -> None:
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
        return self._web.Response(body=self._metrics.exposition(), headers={"Content-Type": _METRICS_CONTENT_TYPE})

    async def _get_state(self, request: web.Request) -> web.Response:
        with self._lock:
            text = self._decision
        if text is None:
            return self._json('{"error":"no decision yet"}', 404)
        return self._json(text)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = self._web.WebSocketResponse(heartbeat=20.0, timeout=0.5)
        await ws.prepare(request)
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
