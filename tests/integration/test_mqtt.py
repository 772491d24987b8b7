"""The MQTT output against a real mosquitto: two devices in one broker, an outage mid-run, TLS.

Each daemon is the real CLI in its own process; a paho subscriber collects what the broker delivers.
"""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mosquitto_broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "edge_mer" / "assets" / "demo_session"

mqtt = pytest.importorskip("paho.mqtt.client")


class Subscriber:
    """Collects every message under ``edge-mer/#`` (QoS 1, a persistent session that outlives an outage)."""

    def __init__(self, broker: Broker, *, ca: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{broker.port}",
                                  protocol=mqtt.MQTTv311, clean_session=False)
        if ca is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        self.client.reconnect_delay_set(0.1, 0.2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("edge-mer/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def decisions(self, device: str) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == f"edge-mer/{device}/decision"]

    def last(self, device: str, what: str) -> dict | None:
        with self.lock:
            found = [json.loads(p) for t, p, _ in self.messages if t == f"edge-mer/{device}/{what}"]
        return found[-1] if found else None

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _daemon(tmp_path: Path, device: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "run", "--device-id", device,
                             "--jsonl", str(tmp_path / f"{device}.jsonl"), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def _lines(tmp_path: Path, device: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / f"{device}.jsonl").read_text().splitlines()]


def _check_same_as_jsonl(received: list[dict], expected: list[dict], device: str, first_seq: int = 0) -> None:
    assert [d["seq"] for d in received] == list(range(first_seq, first_seq + len(expected)))
    assert all(d.pop("device_id") == device for d in received)
    for d in received:
        d.pop("seq")
    assert received == expected  # the JSON lines decision, plus device_id and seq


def test_two_devices_in_one_broker_with_gapless_seq_that_continues_after_restart(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        sub = Subscriber(broker)
        try:
            fast = ("--replay", str(DEMO), "--fast", "--mqtt", broker.url)
            procs = {d: _daemon(tmp_path, d, *fast) for d in ("A", "B")}
            for proc in procs.values():
                _finish(proc)
            for device in ("A", "B"):
                expected = _lines(tmp_path, device)
                count = len(expected)
                assert count >= 10
                assert sub.wait_for(lambda d=device, n=count: len(sub.decisions(d)) >= n, 5)
                _check_same_as_jsonl(sub.decisions(device), expected, device)
                status = sub.last(device, "status")
                assert status is not None and status["state"] == "offline" and status["device_id"] == device
                assert status["modalities"] == ["face", "speech", "eeg"] and status["bundle"]
                assert status["precision"] == "auto" and set(status["precisions"]) == {"face", "speech", "eeg"}
                assert sub.last(device, "health")["status"] in ("ok", "degraded")
            # A restart of A goes on numbering where it stopped.
            count = len(_lines(tmp_path, "A"))
            (tmp_path / "A.jsonl").unlink()
            _finish(_daemon(tmp_path, "A", *fast))
            again = _lines(tmp_path, "A")
            assert sub.wait_for(lambda: len(sub.decisions("A")) >= count + len(again), 5)
            _check_same_as_jsonl(sub.decisions("A")[count:], again, "A", first_seq=count)
        finally:
            sub.close()
        # Retained for a late consumer: the last status (offline) and health of each device.
        late = Subscriber(broker)
        try:
            assert late.wait_for(lambda: late.last("B", "status") is not None, 5)
            assert late.last("B", "status")["state"] == "offline" and late.last("A", "health") is not None
            assert late.decisions("A") == []  # decisions are not retained
        finally:
            late.close()


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:  # 503 while degraded still carries the body
        return exc.read().decode()


def test_broker_outage_mid_run_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    # A persistent broker, so the subscriber's session (and what is queued for it) survives the restart.
    broker.config.write_text(broker.config.read_text().replace(
        "persistence false", f"persistence true\npersistence_location {broker.folder}/"))
    broker.start()
    config = tmp_path / "run.toml"
    config.write_text("[outputs.mqtt]\nreconnect_min_s = 0.5\nreconnect_max_s = 1.0\n")
    port = free_port()
    sub = Subscriber(broker)
    proc = None
    try:
        proc = _daemon(tmp_path, "L", "--config", str(config), "--no-face", "--no-speech", "--board",
                       "SYNTHETIC_BOARD", "--duration-s", "20", "--mqtt", broker.url, "--http", "--http-port",
                       str(port))
        assert sub.wait_for(lambda: len(sub.decisions("L")) >= 3, 30), proc.poll()
        broker.stop()
        time.sleep(8)
        health = json.loads(_get(f"http://127.0.0.1:{port}/healthz"))["outputs"]["mqtt"]
        metrics = _get(f"http://127.0.0.1:{port}/metrics")
        time.sleep(2)  # a 10 s outage
        broker.start()
        err = _finish(proc)
        proc = None
        expected = _lines(tmp_path, "L")
        assert sub.wait_for(lambda: len(sub.decisions("L")) >= len(expected), 5)
        received = sub.decisions("L")
        print(f"outage: {len(received)}/{len(expected)} decisions delivered; healthz during it: {health}")
        assert health["connected"] is False and health["queued"] >= 10 and health["dropped"] == 0
        assert health["oldest_age_s"] >= 5
        assert "edge_mer_mqtt_connected 0.0" in metrics
        queued = [line for line in metrics.splitlines() if line.startswith("edge_mer_mqtt_queue_messages ")]
        assert queued and float(queued[0].split()[1]) >= 10
        assert len(received) == len(expected) >= 30
        _check_same_as_jsonl(received, expected, "L")
        warnings = [line for line in err.splitlines() if "edge_mer.sinks.mqtt" in line and "WARNING" in line]
        assert len(warnings) == 2 and "lost" in warnings[0] and "reachable again" in warnings[1], err[-3000:]
        assert "not yet delivered" not in err
    finally:
        if proc is not None:
            proc.kill()
            proc.communicate()
        sub.close()
        broker.stop()


def test_tls_with_the_test_ca(tmp_path: Path) -> None:
    with Broker(tmp_path, tls=True) as broker:
        assert broker.ca is not None and broker.url.startswith("mqtts://")
        config = tmp_path / "run.toml"
        config.write_text(f'[outputs.mqtt]\nurl = "{broker.url}"\nca_file = "{broker.ca}"\n')
        sub = Subscriber(broker, ca=broker.ca)
        try:
            _finish(_daemon(tmp_path, "T", "--config", str(config), "--replay", str(DEMO), "--fast"))
            expected = _lines(tmp_path, "T")
            assert sub.wait_for(lambda: len(sub.decisions("T")) >= len(expected), 5)
            _check_same_as_jsonl(sub.decisions("T"), expected, "T")
        finally:
            sub.close()


class _Mqtt311OnlyBroker(threading.Thread):
    """Answers CONNECT like a 3.1.1-only broker: MQTT 5 refused (CONNACK return code 1), 3.1.1 accepted."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import socket

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.levels: list[int] = []
        self.sockets: list = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(conn)
            head = conn.recv(4096)  # CONNECT: type, remaining length (a varint), "\0\4MQTT", protocol level
            start = 1
            while start < len(head) and head[start] & 0x80:
                start += 1
            level = head[start + 7] if len(head) > start + 7 else 0
            self.levels.append(level)
            conn.sendall(bytes([0x20, 0x02, 0x00, 0x00 if level == 4 else 0x01]))
            if level != 4:
                conn.close()

    def close(self) -> None:
        self.server.close()
        for conn in self.sockets:
            conn.close()


def test_mqtt5_falls_back_to_311(tmp_path: Path) -> None:
    from edge_mer.sinks.base import DeviceInfo
    from edge_mer.sinks.mqtt import MqttConfig, MqttSink

    fake = _Mqtt311OnlyBroker()
    fake.start()
    sink = MqttSink(MqttConfig(url=f"mqtt://127.0.0.1:{fake.port}", queue_path=str(tmp_path / "q.sqlite")),
                    DeviceInfo("old"))
    try:
        sink.open()
        assert fake.levels == [5, 4]  # MQTT 5 first, then 3.1.1
        assert sink.report()["connected"] is True
    finally:
        fake.close()
        sink.close()
