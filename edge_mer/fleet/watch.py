"""``edge-mer fleet watch``: subscribe to a broker, keep per-device state, show it live, summarise at the end.

Subscribes (QoS 1) to ``<prefix>/+/decision``, ``<prefix>/+/status`` and
``<prefix>/+/health``; :class:`~edge_mer.fleet.state.Fleet` keeps the state.
On a terminal the table is redrawn every ``interval_s``; when stdout is not a
terminal nothing is printed until the end, so ``... > report.txt`` is one clean
report (``--jsonl`` has the stream). The run ends after ``duration_s`` (0 =
until SIGINT/SIGTERM) with the summary. The broker must accept the connection
at start (else :class:`~edge_mer.sinks.mqtt_url.MqttError`); a later outage is
logged and paho reconnects.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edge_mer.config import require
from edge_mer.errors import ConfigError
from edge_mer.fleet.state import KINDS, Fleet
from edge_mer.fleet.table import render_summary, render_table
from edge_mer.results import dumps_json
from edge_mer.sinks.mqtt_url import MqttError, MqttUrl, parse_mqtt_url

log = logging.getLogger(__name__)

PASSWORD_ENV = "EDGE_MER_MQTT_PASSWORD"
_CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class WatchOptions:
    """What ``edge-mer fleet watch`` does; each field has one flag (``--mqtt`` -> ``mqtt``, ...)."""

    mqtt: str
    mqtt_prefix: str = "edge-mer"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    interval_s: float = 1.0
    duration_s: float = 0.0
    window_s: float = 10.0
    connect_timeout_s: float = 10.0
    jsonl: str | None = None
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        url = parse_mqtt_url(self.mqtt)
        prefix = self.mqtt_prefix
        require(bool(prefix) and not prefix.startswith("/") and not prefix.endswith("/")
                and "+" not in prefix and "#" not in prefix,
                f"--mqtt-prefix: expected a topic prefix without wildcards or a leading/trailing '/', got {prefix!r}")
        require(self.interval_s > 0, f"--interval: expected seconds > 0, got {self.interval_s}")
        require(self.duration_s >= 0, f"--duration: expected seconds >= 0 (0 = until stopped), got {self.duration_s}")
        require(self.window_s > 0, f"--window: expected seconds > 0, got {self.window_s}")
        require(self.connect_timeout_s > 0, f"--connect-timeout: expected seconds > 0, got {self.connect_timeout_s}")
        require(self.metrics_port is None or 1 <= self.metrics_port <= 65535,
                f"--metrics-port: expected a port from 1 to 65535, got {self.metrics_port}")
        require(self.password is None or self.username is not None, "--password needs --username")
        if self.ca_file is not None:
            require(url.tls, f"--ca-file needs an mqtts:// URL, got {self.mqtt!r}")
            require(Path(self.ca_file).is_file(), f"--ca-file: {self.ca_file!r} is not a file")

    @property
    def url(self) -> MqttUrl:
        return parse_mqtt_url(self.mqtt)


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(device_id, kind)`` of ``<prefix>/<device_id>/<kind>``, or None for any other topic."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) != 2 or not parts[0] or parts[1] not in KINDS:
        return None
    return parts[0], parts[1]


def _decode(payload: bytes) -> Any:
    """The payload as JSON, else as text (kept for --jsonl; the state counts it as unreadable)."""
    text = payload.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _open_jsonl(path: str | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return open(Path(path).expanduser(), "a", encoding="utf-8", buffering=1)  # closed by watch()
    except OSError as exc:
        raise ConfigError(f"--jsonl: cannot open {path!r} for appending: {exc.strerror or exc}") from None


class Watcher:
    """The MQTT client, the fleet state and the --jsonl stream, shared by paho's thread and the printer."""

    def __init__(self, options: WatchOptions, jsonl: TextIO | None) -> None:
        self.options = options
        self.fleet = Fleet(options.window_s)
        self.lock = threading.Lock()
        self.jsonl = jsonl  # set to None by _log when writing fails
        self.connected = threading.Event()
        self.refused: str | None = None
        self.closing = False
        self.client = _make_client(options, self)

    def on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self.connected.set()
            return
        prefix = self.options.mqtt_prefix
        client.subscribe([(f"{prefix}/+/{kind}", 1) for kind in KINDS])
        log.info("connected to %s, watching %s/+/{%s}", self.options.url, prefix, ",".join(KINDS))
        self.connected.set()

    def on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if self.connected.is_set() and self.refused is None and not self.closing:
            log.warning("lost the broker %s (%s); reconnecting", self.options.url, reason)

    def on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        where = split_topic(self.options.mqtt_prefix, message.topic)
        if where is None:
            return
        device_id, kind = where
        payload = _decode(message.payload)
        with self.lock:
            self.fleet.observe(device_id, kind, payload, time.monotonic())
            if self.jsonl is not None:
                record = {"topic": message.topic, "device_id": device_id, "kind": kind, "received": time.time(),
                          "retained": bool(message.retain), "payload": payload}
                self._log(record)

    def _log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to --jsonl; a write error stops the log (never paho's thread), once, loudly."""
        try:
            self.jsonl.write(dumps_json(record) + "\n")
        except OSError as exc:
            log.error("--jsonl: writing failed (%s); no more messages are logged", exc.strerror or exc)
            with contextlib.suppress(OSError):
                self.jsonl.close()
            self.jsonl = None

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            return self.fleet.rows(time.monotonic(), time.time())


def _make_client(options: WatchOptions, watcher: Watcher) -> Any:
    import paho.mqtt.client as mqtt  # lazy: only this command needs it

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-mer-fleet-{os.getpid()}")
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.url.tls:
        client.tls_set(ca_certs=options.ca_file)
    client.reconnect_delay_set(1, 30)
    client.on_connect, client.on_disconnect = watcher.on_connect, watcher.on_disconnect
    client.on_message = watcher.on_message
    return client


def _connect(watcher: Watcher) -> None:
    """Connect and wait for the broker's answer; an unreachable or refusing broker is an MqttError."""
    options, url = watcher.options, watcher.options.url
    try:
        watcher.client.connect(url.host, url.port, keepalive=30)
    except (OSError, ValueError) as exc:  # refused, unknown host, TLS handshake (ssl.SSLError is an OSError)
        raise MqttError(f"cannot reach the MQTT broker at {url}: {getattr(exc, 'strerror', None) or exc}") from None
    watcher.client.loop_start()
    if not watcher.connected.wait(options.connect_timeout_s):
        raise MqttError(f"the MQTT broker at {url} did not answer within {options.connect_timeout_s:g} s")
    if watcher.refused is not None:
        raise MqttError(f"the MQTT broker at {url} refused the connection: {watcher.refused}")


def _wait(options: WatchOptions, watcher: Watcher, stop: threading.Event, out: TextIO) -> float:
    """Redraw on a terminal every interval until ``stop`` or the duration; returns the seconds watched."""
    start = time.monotonic()
    deadline = start + options.duration_s if options.duration_s else None
    live = out.isatty()
    while True:
        timeout = options.interval_s if deadline is None else min(options.interval_s, deadline - time.monotonic())
        if timeout <= 0 or stop.wait(timeout) or (deadline is not None and time.monotonic() >= deadline):
            return time.monotonic() - start
        if live:
            out.write(f"{_CLEAR}edge-mer fleet watch {options.url} (prefix {options.mqtt_prefix!r}), "
                      f"{time.strftime('%H:%M:%S')}\n{render_table(watcher.rows())}\n")
            out.flush()


def watch(options: WatchOptions, stop: threading.Event | None = None, out: TextIO | None = None,
          on_ready: Callable[[], None] | None = None) -> dict[str, Any]:
    """Watch until the duration ends or ``stop`` is set; print the summary to ``out``; return it as JSON."""
    from edge_mer.fleet.metrics import serve_metrics

    stop = stop or threading.Event()
    out = out or sys.stdout
    jsonl = _open_jsonl(options.jsonl)
    watcher = Watcher(options, jsonl)
    stop_metrics = None
    try:
        _connect(watcher)
        if options.metrics_port is not None:
            stop_metrics = serve_metrics(options.metrics_port, watcher.rows)
        if on_ready is not None:
            on_ready()
        elapsed = _wait(options, watcher, stop, out)
    finally:
        watcher.closing = True
        watcher.client.disconnect()
        watcher.client.loop_stop()
        if stop_metrics is not None:
            stop_metrics()
        if jsonl is not None and not jsonl.closed:
            jsonl.close()
    rows = watcher.rows()
    out.write(render_summary(rows, url=str(options.url), prefix=options.mqtt_prefix, elapsed_s=elapsed,
                             messages=watcher.fleet.messages) + "\n")
    out.flush()
    return {"elapsed_s": elapsed, "messages": watcher.fleet.messages, "devices": rows}
