"""HttpSink against real clients on loopback: urllib for HTTP, aiohttp and a raw socket for the WebSocket."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the HTTP sink needs aiohttp (pip install aiohttp)")
pytest.importorskip("prometheus_client", reason="the HTTP sink needs prometheus-client")

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from edge_mer.errors import ConfigError  # noqa: E402
from edge_mer.results import Decision  # noqa: E402
from edge_mer.sinks.http import HttpConfig, HttpSink  # noqa: E402


def decision(i: int, latency_ms: float = 20.0, pad: str = "") -> dict[str, Any]:
    """A decision's JSON object; ``pad`` lengthens the speech reason (a large message)."""
    return {"t": 100.0 + i, "label": "happy", "probs": {"happy": 0.6, "sad": 0.3, "neutral": 0.1},
            "valence": 0.5 + i / 100, "arousal": -0.25,
            "modalities": {
                "face": {"valid": True, "reason": None, "reason_code": None, "label": "happy", "probs": {"happy": 1.0},
                         "latency_ms": 7.0},
                "speech": {"valid": False, "reason": "silence" + pad, "reason_code": "silence", "label": None,
                           "probs": {}, "latency_ms": 2.0},
                "eeg": {"valid": False, "reason": "bad channels Fp1, F3", "reason_code": "bad_channels", "label": None,
                        "probs": {}, "latency_ms": 0.0}},
            "latency_ms": latency_ms, "faces": []}


def typed(i: int, latency_ms: float = 20.0, pad: str = "") -> Decision:
    return Decision.from_json(decision(i, latency_ms, pad))


def health(status: str) -> dict[str, Any]:
    return {"status": status, "decisions": 3, "uptime_s": 12.5,
            "sources": {"face": {"state": "running", "error": None, "chunks": 40, "last_chunk_age_s": 0.05},
                        "eeg": {"state": "failed", "error": "board gone", "chunks": 7, "last_chunk_age_s": None}}}


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def metric_samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, ctype, body = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink(HttpConfig(enabled=True, port=0)) as s:
        assert s.port and s.port > 0
        yield s


def test_healthz_follows_the_reported_status(sink: HttpSink) -> None:
    status, ctype, body = get(sink.port, "/healthz")
    assert status == 503 and ctype.startswith("application/json") and json.loads(body)["status"] == "unknown"
    sink.health(health("ok"))
    status, _, body = get(sink.port, "/healthz")
    assert status == 200 and json.loads(body) == health("ok")
    sink.health(health("degraded"))
    status, _, body = get(sink.port, "/healthz")
    assert status == 503 and json.loads(body)["status"] == "degraded"


def test_state_is_404_then_the_latest_decision(sink: HttpSink) -> None:
    status, ctype, body = get(sink.port, "/state")
    assert status == 404 and ctype.startswith("application/json") and "error" in json.loads(body)
    sink.emit(typed(1))
    sink.emit(typed(2))
    status, _, body = get(sink.port, "/state")
    assert status == 200 and json.loads(body) == decision(2)


def test_metrics_count_decisions_modalities_latency_and_sources(sink: HttpSink) -> None:
    for i, latency in enumerate((3.0, 20.0, 400.0)):
        sink.emit(typed(i, latency_ms=latency))
    sink.health(health("ok"))
    m = metric_samples(sink.port)
    assert m[("edge_mer_decisions_total", frozenset())] == 3
    assert m[("edge_mer_modality_valid_total", frozenset({("modality", "face")}))] == 3
    assert m[("edge_mer_modality_invalid_total", frozenset({("modality", "speech"), ("reason", "silence")}))] == 3
    assert m[("edge_mer_modality_invalid_total", frozenset({("modality", "eeg"), ("reason", "bad_channels")}))] == 3
    assert m[("edge_mer_decision_latency_seconds_count", frozenset())] == 3
    assert m[("edge_mer_decision_latency_seconds_sum", frozenset())] == pytest.approx(0.423)
    assert m[("edge_mer_decision_latency_seconds_bucket", frozenset({("le", "0.025")}))] == 2
    assert m[("edge_mer_modality_latency_seconds_count", frozenset({("modality", "face")}))] == 3
    assert m[("edge_mer_modality_latency_seconds_sum", frozenset({("modality", "speech")}))] == pytest.approx(0.006)
    assert ("edge_mer_modality_latency_seconds_count", frozenset({("modality", "eeg")})) not in m  # no work done
    assert m[("edge_mer_probability", frozenset({("label", "happy")}))] == pytest.approx(0.6)
    assert m[("edge_mer_valence", frozenset())] == pytest.approx(0.52)
    assert m[("edge_mer_arousal", frozenset())] == pytest.approx(-0.25)
    state = {("source", "eeg"), ("edge_mer_source_state", "failed")}
    assert m[("edge_mer_source_state", frozenset(state))] == 1
    assert m[("edge_mer_source_state", frozenset({("source", "eeg"), ("edge_mer_source_state", "running")}))] == 0
    assert m[("edge_mer_source_chunks", frozenset({("source", "face")}))] == 40
    assert m[("edge_mer_healthy", frozenset())] == 1 and m[("edge_mer_uptime_seconds", frozenset())] == 12.5


def test_each_sink_has_its_own_registry() -> None:
    with HttpSink(HttpConfig(port=0)) as a, HttpSink(HttpConfig(port=0)) as b:
        a.emit(typed(0))
        assert metric_samples(a.port)[("edge_mer_decisions_total", frozenset())] == 1
        assert metric_samples(b.port)[("edge_mer_decisions_total", frozenset())] == 0


async def _receive(port: int, emit: Any, count: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
        for _ in range(100):  # the server registers the client just after the handshake
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                if "edge_mer_ws_clients 1.0" in await resp.text():
                    break
            await asyncio.sleep(0.01)
        threading.Thread(target=emit).start()  # emit() runs on another thread, as in the daemon
        return [json.loads(await ws.receive_str(timeout=5)) for _ in range(count)]


def test_websocket_client_receives_every_decision_in_order(sink: HttpSink) -> None:
    got = asyncio.run(_receive(sink.port, lambda: [sink.emit(typed(i)) for i in range(3)], 3))
    assert got == [decision(i) for i in range(3)]


def _stuck_ws_client(port: int) -> socket.socket:
    """A real WebSocket client (handshake by hand) that never reads again, with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def test_a_stuck_client_never_blocks_emit_and_its_messages_are_dropped() -> None:
    sink = HttpSink(HttpConfig(port=0), client_queue=4)
    sink.open()
    stuck = _stuck_ws_client(sink.port)
    try:
        wait_for(lambda: metric_samples(sink.port)[("edge_mer_ws_clients", frozenset())] == 1)
        pad = "x" * 100_000
        slowest = 0.0
        for i in range(300):  # 30 MB: far beyond the socket buffers
            start = time.perf_counter()
            sink.emit(typed(i, pad=pad))
            slowest = max(slowest, time.perf_counter() - start)
        assert slowest < 0.1
        wait_for(lambda: sink.dropped > 0)
        assert metric_samples(sink.port)[("edge_mer_ws_dropped_messages_total", frozenset())] == sink.dropped
        start = time.perf_counter()
        sink.close()
        assert time.perf_counter() - start < 1.0
    finally:
        sink.close()
        stuck.close()


def test_port_in_use_is_a_one_line_config_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            HttpSink(HttpConfig(port=port)).open()
    assert f"port {port} on 127.0.0.1 is in use" in str(info.value)
    assert "\n" not in str(info.value)


def test_close_is_quick_and_frees_the_port() -> None:
    sink = HttpSink(HttpConfig(port=0))
    sink.open()
    port = sink.port
    sink.emit(typed(0))
    assert get(port, "/state")[0] == 200

    async def connected_then_closed() -> aiohttp.WSMessage:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            await asyncio.sleep(0.05)
            start = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(None, sink.close)
            assert time.perf_counter() - start < 1.0
            return await ws.receive(timeout=2)

    msg = asyncio.run(connected_then_closed())
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert not [t for t in threading.enumerate() if t.name == f"edge-mer-http:{port}"]
    sink.close()  # idempotent
    with HttpSink(HttpConfig(port=port)) as again:  # the port is free again
        assert again.port == port
        assert get(port, "/state")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/state", timeout=2)
