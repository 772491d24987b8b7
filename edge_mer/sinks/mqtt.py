"""MQTT output: decisions, status and health of one device under ``<topic_prefix>/<device_id>/``.

Topics (``outputs.mqtt.topic_prefix``, ``edge-mer`` by default; ``device_id`` is the
run's, the host name by default):

``<prefix>/<device_id>/decision``
    One decision per message at ``qos`` (1 by default): the JSON of a JSON-lines
    decision plus ``device_id`` and ``seq``, which increases by 1 per decision
    and continues after a restart, so a consumer sees any gap.
``<prefix>/<device_id>/status``
    Retained: ``{"state":"online", "device_id", "bundle", "precision", "precisions", "modalities", "t"}``
    on every connect; the last will (and a clean stop) replace it with ``"state":"offline"``.
``<prefix>/<device_id>/health``
    Retained: the /healthz object, when its status or a source's state changes
    and every ``health_interval_s`` seconds.

Nothing is lost while the broker is away: ``emit`` only appends the decision
to a bounded SQLite queue (:mod:`edge_mer.sinks.mqtt_queue`, at ``queue_path``
or ``$XDG_STATE_HOME/edge-mer/mqtt-<device_id>.sqlite``), and a background
thread publishes it in ``seq`` order, deleting each row once the broker
acknowledged it (PUBACK). Beyond ``queue_max`` messages the oldest are dropped
and counted. paho-mqtt reconnects with a delay doubling from
``reconnect_min_s`` to ``reconnect_max_s``; messages in flight when the link
broke are sent again (at least once). MQTT 5 is tried first and, with
``protocol = "auto"``, 3.1.1 when the broker refuses version 5.

At start a broker that refuses the credentials is a one-line error; one that
does not answer is one WARNING line, and the run goes on queueing.
"""
from __future__ import annotations

import collections
import importlib
import logging
import os
import socket
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from edge_mer.config import require
from edge_mer.errors import ConfigError, EdgeMerError
from edge_mer.results import Decision, dumps_json
from edge_mer.sinks.base import DeviceInfo, Sink
from edge_mer.sinks.mqtt_queue import MessageQueue

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_WINDOW = 64  # messages handed to paho and not yet acknowledged
_NOT_AUTHORIZED = (134, 135)  # Bad user name or password, Not authorized (3.1.1 codes 4 and 5 map here)
_UNSUPPORTED_PROTOCOL = 132
_CLOSE_FLUSH_S = 3.0  # a clean stop waits this long for the queue to empty while connected


def parse_url(url: str) -> tuple[bool, str, int]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (TLS, host, port), or a one-line :class:`ConfigError`."""
    where = "outputs.mqtt.url"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where}: {url!r} is not a valid URL ({exc}); expected mqtt://host:port") from exc
    require(parts.scheme in DEFAULT_PORTS, f"{where}: expected mqtt://host[:port] or mqtts://host[:port], got {url!r}")
    require(bool(parts.hostname), f"{where}: {url!r} has no host; expected mqtt://host[:port]")
    require(parts.username is None and parts.password is None,
            f"{where}: put credentials in outputs.mqtt.username/password, not in the URL")
    require(parts.path in ("", "/") and not parts.query and not parts.fragment,
            f"{where}: expected no path or query after host:port, got {url!r}")
    return parts.scheme == "mqtts", str(parts.hostname), port or DEFAULT_PORTS[parts.scheme]


def _valid_level(text: str) -> bool:
    return bool(text) and not any(c in text for c in "+#\0") and text.isprintable()


@dataclass(frozen=True)
class MqttConfig:
    """MQTT output: ``url`` "" is off. ``password`` is a secret, kept out of ``repr``.

    TLS (``mqtts://``): ``ca_file`` to trust (default: the system's CAs), ``cert_file`` and
    ``key_file`` for a client certificate. ``client_id`` "" is ``edge-mer-<device_id>``.
    """

    url: str = ""
    topic_prefix: str = "edge-mer"
    qos: int = 1
    client_id: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 60
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    health_interval_s: float = 10.0
    queue_path: str = ""
    queue_max: int = 100_000
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 10.0  # a fleet back from an outage drains within seconds, not half a minute
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        tls = parse_url(self.url)[0] if self.url else False
        require(all(_valid_level(p) for p in self.topic_prefix.split("/")),
                f"topic_prefix must be topic levels without '+', '#' or empty levels, got {self.topic_prefix!r}")
        require(self.qos in (0, 1, 2), f"qos must be 0, 1 or 2, got {self.qos}")
        require(len(self.client_id) <= 128, f"client_id must be at most 128 characters, got {len(self.client_id)}")
        require(not self.password or bool(self.username), "password needs a username")
        require(bool(self.cert_file) == bool(self.key_file), "cert_file and key_file go together")
        require(tls or not (self.ca_file or self.cert_file), "ca_file, cert_file and key_file need an mqtts:// url")
        require(5 <= self.keepalive_s <= 65535, f"keepalive_s must be in 5..65535, got {self.keepalive_s}")
        require(0 < self.health_interval_s <= 86400, f"health_interval_s must be in (0, 86400], got "
                                                     f"{self.health_interval_s}")
        require(1 <= self.queue_max <= 100_000_000, f"queue_max must be in 1..1e8, got {self.queue_max}")
        require(0 < self.reconnect_min_s <= self.reconnect_max_s <= 3600,
                f"need 0 < reconnect_min_s <= reconnect_max_s <= 3600, got {self.reconnect_min_s} and "
                f"{self.reconnect_max_s}")
        require(0 < self.connect_timeout_s <= 60, f"connect_timeout_s must be in (0, 60], got {self.connect_timeout_s}")


def default_queue_path(device_id: str) -> Path:
    """``$XDG_STATE_HOME/edge-mer/mqtt-<device_id>.sqlite`` (``~/.local/state`` when unset)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edge-mer" / f"mqtt-{device_id}.sqlite"


def _tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS context of ``config``'s CA and client certificate, or a one-line :class:`ConfigError`."""
    try:
        context = ssl.create_default_context(cafile=config.ca_file or None)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"outputs.mqtt: cannot load the TLS files (ca_file, cert_file, key_file): "
                          f"{getattr(exc, 'strerror', None) or exc}") from exc
    return context


def _load_paho() -> ModuleType:
    try:
        return importlib.import_module("paho.mqtt.client")
    except ImportError as exc:
        raise ConfigError("outputs.mqtt.url needs the paho-mqtt package: pip install 'paho-mqtt>=2'") from exc


def _probe(host: str, port: int) -> str:
    """Why a connection failed, in a few words (whether the TCP port answers at all)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return "the port answers but the MQTT handshake failed (TLS settings or protocol?)"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


class MqttSink(Sink):
    """Queues every decision on disk and publishes it from a background thread; see the module docstring."""

    kind: ClassVar[str] = "mqtt"

    def __init__(self, config: MqttConfig, device: DeviceInfo | None = None) -> None:
        if not config.url:
            raise ConfigError("outputs.mqtt.url: expected mqtt://host[:port] or mqtts://host[:port]")
        self.config = config
        self.device = device or DeviceInfo.local()
        self.tls, self.host, self.port = parse_url(config.url)
        base = f"{config.topic_prefix}/{self.device.device_id}"
        self.topics = {name: f"{base}/{name}" for name in ("decision", "status", "health")}
        self.queue: MessageQueue | None = None
        self.sent = 0
        self._paho: ModuleType | None = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._outcome = ""  # the first connection attempt: "" connected, else why not
        self._started = False  # open() has returned: refusals are logged from then on, not raised
        self._acks: collections.deque[int] = collections.deque()  # mids from on_publish (network thread)
        self._inflight: dict[int, int] = {}  # mid -> seq, publisher thread only
        self._handed = -1  # highest seq handed to paho
        self._health: dict[str, Any] | None = None
        self._lost_logged = False

    # -- Sink API ----------------------------------------------------------------------------
    def open(self) -> None:
        """Open the queue, connect (waiting up to ``connect_timeout_s``) and start the publisher thread."""
        if self._thread is not None:
            return
        self._paho = _load_paho()
        context = _tls_context(self.config) if self.tls else None
        path = Path(self.config.queue_path).expanduser() if self.config.queue_path else \
            default_queue_path(self.device.device_id)
        self.queue = MessageQueue(path, self.config.queue_max)
        try:
            self._connect_first(context)
        except ConfigError:
            self.close()
            raise
        self._started = True
        self._thread = threading.Thread(target=self._publish_loop, daemon=True, name="edge-mer-mqtt")
        self._thread.start()
        stats = self.queue.stats()
        log.info("MQTT output to %s under %s/ (queue %s: %d waiting, next seq %d)", self.config.url,
                 self.topics["decision"].rsplit("/", 1)[0], path, stats.size, stats.next_seq)

    def emit(self, decision: Decision) -> None:
        """Append ``decision`` (with ``device_id`` and the next ``seq``) to the on-disk queue; never waits on the network."""
        if self.queue is None:
            raise RuntimeError("MqttSink.emit() called before open() or after close()")
        device_id = self.device.device_id
        try:
            self.queue.push(lambda seq: dumps_json({**decision.to_json(), "device_id": device_id, "seq": seq}))
        except sqlite3.Error as exc:  # a full disk, a removed file: the daemon drops this output, says why
            raise EdgeMerError(f"outputs.mqtt: cannot queue the decision in {self.queue.path}: {exc}") from exc
        self._wake.set()

    def health(self, status: dict[str, Any]) -> None:
        """Keep the latest health; the publisher thread sends it on change and every ``health_interval_s``."""
        self._health = status

    def report(self) -> dict[str, Any] | None:
        """The output's figures for /healthz: connection, queue size, oldest age, dropped and sent counts."""
        if self.queue is None:
            return None
        try:
            stats = self.queue.stats()
        except sqlite3.Error as exc:  # health must not fail with the queue; emit() reports it
            return {"connected": self._connected.is_set(), "error": f"queue unreadable: {exc}"}
        return {"connected": self._connected.is_set(), "queued": stats.size, "oldest_age_s": stats.oldest_age_s,
                "dropped": stats.dropped, "sent": self.sent, "next_seq": stats.next_seq}

    def close(self) -> None:
        """Flush what the broker takes within a few seconds, publish ``offline``, disconnect. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            deadline = time.monotonic() + _CLOSE_FLUSH_S
            while (self._connected.is_set() and time.monotonic() < deadline and self.queue is not None
                   and self.queue.stats().size > 0):
                self._wake.set()
                time.sleep(0.02)
            self._stop.set()
            self._wake.set()
            thread.join(timeout=2.0)
        client, self._client = self._client, None
        if client is not None:
            if self._connected.is_set():
                info = client.publish(self.topics["status"], self._status("offline"), qos=1, retain=True)
                if info.rc == self._paho.MQTT_ERR_SUCCESS:  # else the link just broke: the will says offline
                    info.wait_for_publish(1.0)
            client.disconnect()
            client.loop_stop()
        queue, self.queue = self.queue, None
        if queue is not None:
            left = queue.stats().size
            if left:
                log.warning("MQTT: %d decision(s) not yet delivered stay queued in %s for the next run",
                            left, queue.path)
            queue.close()

    # -- connection --------------------------------------------------------------------------
    def _make_client(self, protocol: int, context: ssl.SSLContext | None) -> Any:
        mqtt = self._paho
        assert mqtt is not None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.config.client_id or
                             f"edge-mer-{self.device.device_id}", protocol=protocol)
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password or None)
        if context is not None:
            client.tls_set_context(context)
        client.will_set(self.topics["status"], self._status("offline"), qos=1, retain=True)
        client.max_inflight_messages_set(_WINDOW)
        client.reconnect_delay_set(self.config.reconnect_min_s, self.config.reconnect_max_s)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect_first(self, context: ssl.SSLContext | None) -> None:
        """Connect once, waiting for the answer: refused credentials raise, silence is one warning."""
        mqtt = self._paho
        assert mqtt is not None
        protocols = {"auto": [mqtt.MQTTv5, mqtt.MQTTv311], "5": [mqtt.MQTTv5], "3.1.1": [mqtt.MQTTv311]}
        for protocol in protocols[self.config.protocol]:
            self._answered.clear()
            self._outcome = ""
            self._client = self._make_client(protocol, context)
            self._client.connect_async(self.host, self.port, self.config.keepalive_s)
            self._client.loop_start()
            answered = self._answered.wait(self.config.connect_timeout_s)
            if not (answered and self._outcome.startswith("refused")):
                break
            code = self._outcome.split(":", 1)[0]
            if code == f"refused {_UNSUPPORTED_PROTOCOL}" and protocol == mqtt.MQTTv5 and self.config.protocol == "auto":
                log.info("MQTT broker %s refuses MQTT 5: trying 3.1.1", self.config.url)
                self._stop_client()
                continue
            self._stop_client()
            hint = " (check outputs.mqtt.username/password)" if code in {f"refused {c}" for c in _NOT_AUTHORIZED} else ""
            raise ConfigError(f"outputs.mqtt: broker {self.config.url} refused the connection: "
                              f"{self._outcome.split(': ', 1)[1]}{hint}")
        if not self._connected.is_set():
            why = self._outcome or f"no answer within {self.config.connect_timeout_s:g} s"
            log.warning("MQTT broker %s unreachable (%s): decisions are queued and sent when it answers; "
                        "retrying every %g..%g s", self.config.url, why, self.config.reconnect_min_s,
                        self.config.reconnect_max_s)
            self._lost_logged = True

    def _stop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            outcome, self._outcome = self._outcome, f"refused {reason.value}: {reason}"
            if self._started and outcome != self._outcome:  # once per reason, not once per retry
                log.error("MQTT broker %s refused the connection: %s; retrying", self.config.url, reason)
            self._answered.set()
            return
        client.publish(self.topics["status"], self._status("online"), qos=1, retain=True)
        self._outcome = ""
        self._connected.set()
        if self._lost_logged:
            log.warning("MQTT broker %s reachable again: sending the queued decisions", self.config.url)
        self._lost_logged = False
        self._answered.set()
        self._wake.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if not self._answered.is_set():
            self._outcome = _probe(self.host, self.port)
            self._answered.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set() and not self._lost_logged:
            log.warning("MQTT connection to %s lost (%s): decisions are queued, reconnecting", self.config.url, reason)
            self._lost_logged = True

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acks.append(mid)  # the publisher thread maps it to a seq: no lock shared with paho's
        self._wake.set()

    def _status(self, state: str) -> str:
        return dumps_json({"state": state, **self.device.to_json(), "t": round(time.time(), 3)})

    # -- publisher thread --------------------------------------------------------------------
    def _publish_loop(self) -> None:
        health_key, health_sent = None, 0.0
        while not self._stop.is_set():
            try:
                self._drain_acks()
                busy = self._connected.is_set() and self._hand_over()
            except sqlite3.Error as exc:  # the queue broke under us: say so, and try again in a second
                log.error("MQTT: reading the queue %s failed: %s", self.queue.path if self.queue else "", exc)
                self._stop.wait(1.0)
                continue
            status = self._health
            if not self._connected.is_set():
                health_key = None  # sent again as soon as the broker is back
            elif status is not None:
                key = dumps_json({"status": status.get("status"),
                                  "sources": {m: s.get("state") for m, s in status.get("sources", {}).items()}})
                now = time.monotonic()
                if key != health_key or now - health_sent >= self.config.health_interval_s:
                    self._client.publish(self.topics["health"], dumps_json(status), qos=0, retain=True)
                    health_key, health_sent = key, now
            if not busy:
                self._wake.wait(0.5)
                self._wake.clear()

    def _hand_over(self) -> bool:
        """Give paho the next queued decisions, up to the in-flight window; True if any was given."""
        room = _WINDOW - len(self._inflight)
        if room <= 0 or self.queue is None or self._client is None:
            return False
        rows = self.queue.peek(self._handed, room)
        for seq, payload in rows:
            info = self._client.publish(self.topics["decision"], payload, qos=self.config.qos)
            self._inflight[info.mid] = seq
            self._handed = seq
        return bool(rows)

    def _drain_acks(self) -> None:
        while self._acks:
            seq = self._inflight.pop(self._acks.popleft(), None)
            if seq is not None and self.queue is not None:  # None: a status or health message
                self.queue.delete(seq)
                self.sent += 1
