"""HttpSink against hostile or careless clients, on loopback: tokens, malformed requests, slow and idle
connections, client limits. Real server, real clients (urllib, raw sockets, aiohttp); every wait is bounded."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import re
import select
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

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from edge_mer.cli import run as run_cli
from edge_mer.config import from_dict
from edge_mer.errors import ConfigError
from edge_mer.pipeline.config import RunConfig
from edge_mer.results import Decision
from edge_mer.sinks.http import HttpConfig, HttpSink, is_loopback

TOKEN = "s3cret-Token_0123456789"
PROTECTED = ("/", "/state", "/metrics", "/ws")
LOGGER = "edge_mer.sinks.http"


def a_decision(i: int = 0) -> Decision:
    return Decision.from_json({"t": 1.0 + i, "label": "happy", "probs": {"happy": 0.7, "sad": 0.3},
                               "valence": 0.5, "arousal": 0.1, "modalities": {}, "latency_ms": 5.0})


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """(status, headers, body) of a GET to loopback, 4xx/5xx included."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def metrics(port: int, token: str = TOKEN) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, body = get(port, "/metrics", bearer(token))
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closes ``sock`` (reading and dropping what arrives), or None if it stays open."""
    start = time.monotonic()
    while (left := start + seconds - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if not sock.recv(65536):
                    return time.monotonic() - start
            except ConnectionError:
                return time.monotonic() - start
    return None


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length body, read from a keep-alive connection (5 s at most)."""
    sock.settimeout(5)
    data = b""
    for _ in range(1000):
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            if len(body) >= length:
                return data
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    raise AssertionError("no complete response")


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink(HttpConfig(port=0, token=TOKEN)) as s:
        yield s


# -- configuration ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["short", "x" * 257, "has a space inside it", "tab\tinside-the-token",
                                   "nön-ascii-token-value"])
def test_a_bad_token_is_a_one_line_error_that_does_not_echo_it(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"outputs": {"http": {"token": token}}})
    message = str(info.value)
    assert message.startswith("outputs.http: token must be 16..256 printable ASCII characters")
    assert "\n" not in message and token not in message


@pytest.mark.parametrize("fields", [{"idle_timeout_s": 0}, {"header_timeout_s": -1.0},
                                    {"header_timeout_s": math.nan}, {"idle_timeout_s": math.inf},
                                    {"max_clients": 0}, {"max_clients": 10, "max_connections": 5}])
def test_limits_are_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"outputs": {"http": fields}})
    assert str(info.value).startswith("outputs.http: ") and "\n" not in str(info.value)


def test_the_token_comes_from_toml_or_the_flag_and_stays_out_of_repr(tmp_path: Any) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f'[outputs.http]\ntoken = "{TOKEN}"\nidle_timeout_s = 3\n')
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    config = run_cli.load_config(parser.parse_args(["--config", str(toml)]))
    assert config.outputs.http.token == TOKEN and config.outputs.http.idle_timeout_s == 3.0
    other = "another-token-0123456789"
    config = run_cli.load_config(parser.parse_args(["--config", str(toml), "--http-token", other]))
    assert config.outputs.http.token == other
    assert other not in repr(config) and other not in repr(config.outputs.http)


def test_loopback_addresses() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "192.168.1.5", "fe80::1%eth0", "10.0.0.1"))


# -- the token -------------------------------------------------------------------------------------------------
def _assert_unauthorized(status: int, headers: Any, body: str) -> None:
    assert status == 401, (status, body)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert headers["Content-Type"].startswith("application/json") and "error" in json.loads(body)


@pytest.mark.parametrize("path", PROTECTED)
def test_protected_routes_need_the_token(sink: HttpSink, path: str) -> None:
    sink.emit(a_decision())
    _assert_unauthorized(*get(sink.port, path))
    _assert_unauthorized(*get(sink.port, path, bearer("wrong-token-0123456789")))
    _assert_unauthorized(*get(sink.port, path, {"Authorization": f"Basic {TOKEN}"}))
    _assert_unauthorized(*get(sink.port, f"{path}?token=wrong-token-0123456789"))
    _assert_unauthorized(*get(sink.port, f"{path}?token={TOKEN[:-1]}"))
    expected = 400 if path == "/ws" else 200  # /ws: authorized, but a plain GET is no WebSocket handshake
    assert get(sink.port, path, bearer())[0] == expected
    assert get(sink.port, path, {"Authorization": f"bearer {TOKEN}"})[0] == expected
    assert get(sink.port, f"{path}?token={TOKEN}")[0] == expected
    assert metrics(sink.port)[("edge_mer_http_unauthorized_total", frozenset())] == 5


def test_websocket_with_header_or_query_token(sink: HttpSink) -> None:
    async def scenario() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as session:
            for url, headers in ((f"http://127.0.0.1:{sink.port}/ws", {}),
                                 (f"http://127.0.0.1:{sink.port}/ws?token=nope-nope-nope-nope", {})):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_receive=5))
                statuses.append(info.value.status)
            for url, headers in ((f"http://127.0.0.1:{sink.port}/ws", bearer()),
                                 (f"http://127.0.0.1:{sink.port}/ws?token={TOKEN}", {})):
                async with session.ws_connect(url, headers=headers) as ws:
                    for _ in range(200):  # registered just after the handshake
                        if metrics(sink.port)[("edge_mer_ws_clients", frozenset())] == 1:
                            break
                        await asyncio.sleep(0.01)
                    threading.Thread(target=sink.emit, args=(a_decision(7),)).start()
                    statuses.append(json.loads(await ws.receive_str(timeout=5))["t"])
        return statuses

    assert asyncio.run(asyncio.wait_for(scenario(), 15)) == [401, 401, 8.0, 8.0]


def test_healthz_is_open_and_carries_only_what_the_daemon_reports(sink: HttpSink) -> None:
    status, _, body = get(sink.port, "/healthz")
    assert status == 503 and json.loads(body)["status"] == "unknown" and "/" not in body
    report = {"status": "ok", "decisions": 2, "uptime_s": 1.5,
              "sources": {"face": {"state": "running", "error": None, "chunks": 4, "last_chunk_age_s": 0.1}}}
    sink.health(report)
    status, _, body = get(sink.port, "/healthz")
    assert status == 200 and json.loads(body) == report and TOKEN not in body


def test_a_non_loopback_bind_gets_a_generated_token_printed_once(capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with HttpSink(HttpConfig(host="0.0.0.0", port=0)) as sink:  # reached through 127.0.0.1 only
        token = sink.token
        assert len(token) >= 32
        _assert_unauthorized(*get(sink.port, "/state"))
        assert get(sink.port, "/state", bearer(token))[0] == 404  # authorized; no decision yet
        assert get(sink.port, "/healthz")[0] == 503
        get(sink.port, f"/state?token={token}")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "token" in line]
    assert lines == [f"edge-mer: HTTP token for http://0.0.0.0:{sink.port}: {token}"]
    assert token not in caplog.text


def test_a_loopback_bind_without_token_stays_open(capsys: pytest.CaptureFixture[str]) -> None:
    with HttpSink(HttpConfig(port=0)) as sink:
        assert sink.token == ""
        assert get(sink.port, "/state")[0] == 404
    assert "token" not in capsys.readouterr().err


# -- malformed requests ----------------------------------------------------------------------------------------
MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "long request line": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "long header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
    "invalid header bytes": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\x01Bad: y\r\n\r\n",
    "NUL in a header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    "TLS hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 32,
}


def test_malformed_requests_log_one_line_each_and_the_server_keeps_serving(
        sink: HttpSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name, payload in MALFORMED.items():
        caplog.clear()
        with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as sock:
            sock.sendall(payload)
            reply = b""
            for _ in range(100):  # aiohttp answers 400 and closes
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n", 1)[0], (name, reply[:80])
        ours = [r for r in caplog.records if r.name.startswith(("edge_mer", "aiohttp"))]
        assert len(ours) == 1, (name, [r.getMessage() for r in ours])
        record = ours[0]
        assert record.name == LOGGER and "malformed request" in record.getMessage()
        assert record.exc_info is None and "\n" not in record.getMessage()
        assert record.levelno in (logging.WARNING, logging.DEBUG)
        assert get(sink.port, "/healthz")[0] == 503  # still serving
    assert metrics(sink.port)[("edge_mer_http_bad_requests_total", frozenset())] == len(MALFORMED)


def test_the_first_malformed_request_warns_later_ones_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with HttpSink(HttpConfig(port=0)) as sink:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as sock:
                sock.sendall(MALFORMED["garbage"])
                closed_within(sock, 5)
    levels = [r.levelno for r in caplog.records if r.name == LOGGER and "malformed" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]


# -- slow and idle connections ---------------------------------------------------------------------------------
def test_a_slow_header_client_is_disconnected() -> None:
    config = HttpConfig(port=0, token=TOKEN, header_timeout_s=1.0, idle_timeout_s=10.0)
    with HttpSink(config) as sink:
        with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as sock:
            start = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            trickle = b"Host: 127.0.0.1\r\n" + b"X-Slow: " + b"z" * 100
            closed = None
            for byte in trickle:  # one byte every 0.1 s: the head is never complete in time
                try:
                    sock.sendall(bytes([byte]))
                except ConnectionError:
                    closed = time.monotonic() - start
                    break
                if closed_within(sock, 0.1) is not None:
                    closed = time.monotonic() - start
                    break
            assert closed is not None and 0.8 <= closed <= 2.5, closed
        with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as silent:
            assert 0.8 <= (closed_within(silent, 4.0) or math.inf) <= 2.5  # a client that sends nothing at all
        assert metrics(sink.port)[("edge_mer_http_header_timeouts_total", frozenset())] == 2


def test_an_idle_keepalive_client_is_disconnected() -> None:
    with (HttpSink(HttpConfig(port=0, idle_timeout_s=1.0, header_timeout_s=5.0)) as sink,
          socket.create_connection(("127.0.0.1", sink.port), timeout=5) as sock):
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{sink.port}\r\n\r\n".encode()
        sock.sendall(request)
        assert read_response(sock).startswith(b"HTTP/1.1 503")
        time.sleep(0.4)
        sock.sendall(request)  # still open within idle_timeout_s: keep-alive works
        assert read_response(sock).startswith(b"HTTP/1.1 503")
        idle = closed_within(sock, 4.0)
        assert idle is not None and 0.8 <= idle <= 2.5, idle


# -- load and limits -------------------------------------------------------------------------------------------
def test_200_sequential_state_requests(sink: HttpSink) -> None:
    sink.emit(a_decision(3))
    start = time.monotonic()
    statuses = [get(sink.port, "/state", bearer())[0] for _ in range(200)]
    assert statuses == [200] * 200 and time.monotonic() - start < 15


def test_50_websocket_clients_receive_every_decision(sink: HttpSink) -> None:
    async def scenario() -> list[list[float]]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{sink.port}/ws?token={TOKEN}"
            sockets = [await session.ws_connect(url) for _ in range(50)]
            try:
                for _ in range(500):
                    if metrics(sink.port)[("edge_mer_ws_clients", frozenset())] == 50:
                        break
                    await asyncio.sleep(0.01)
                threading.Thread(target=lambda: [sink.emit(a_decision(i)) for i in range(3)]).start()
                return [[json.loads(await ws.receive_str(timeout=5))["t"] for _ in range(3)] for ws in sockets]
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets))

    assert asyncio.run(asyncio.wait_for(scenario(), 18)) == [[1.0, 2.0, 3.0]] * 50


def test_websocket_clients_beyond_max_clients_get_503() -> None:
    with HttpSink(HttpConfig(port=0, max_clients=2, max_connections=8)) as sink:
        async def scenario() -> tuple[int, bool]:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{sink.port}/ws"
                first, second = await session.ws_connect(url), await session.ws_connect(url)
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(url)
                await first.close()
                for _ in range(200):  # the server sees the client leave
                    if metrics(sink.port)[("edge_mer_ws_clients", frozenset())] == 1:
                        break
                    await asyncio.sleep(0.01)
                again = await session.ws_connect(url)
                ok = not again.closed
                await asyncio.gather(second.close(), again.close())
                return info.value.status, ok

        assert asyncio.run(asyncio.wait_for(scenario(), 15)) == (503, True)
        assert metrics(sink.port)[("edge_mer_http_refused_total", frozenset({("what", "ws_client")}))] == 1


def test_connections_beyond_max_connections_are_closed_at_once() -> None:
    with HttpSink(HttpConfig(port=0, max_clients=1, max_connections=2, header_timeout_s=5.0)) as sink:
        held = [socket.create_connection(("127.0.0.1", sink.port), timeout=5) for _ in range(2)]
        try:
            for _ in range(5):  # on a loaded host the server may take a while to register both held ones
                time.sleep(0.3)
                with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as extra:
                    if closed_within(extra, 2.0) is not None:
                        break
            else:
                raise AssertionError("a third connection stayed open with max_connections=2")
        finally:
            for sock in held:
                sock.close()
        for _ in range(100):  # served again once the server saw the held connections close
            try:
                if get(sink.port, "/healthz")[0] == 503:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.02)
        assert metrics(sink.port)[("edge_mer_http_refused_total", frozenset({("what", "connection")}))] >= 1


def test_a_burst_of_connections_never_exceeds_max_connections() -> None:
    """Sockets queued in the backlog are accepted in one pass, before aiohttp counts any of them."""
    with HttpSink(HttpConfig(port=0, max_clients=1, max_connections=3, header_timeout_s=5.0)) as sink:
        burst = [socket.create_connection(("127.0.0.1", sink.port), timeout=5) for _ in range(12)]
        try:
            closed = sum(closed_within(sock, 1.0) is not None for sock in burst)
        finally:
            for sock in burst:
                sock.close()
    assert closed >= 9, f"{12 - closed} of 12 connections stayed open with max_connections=3"
