"""``edge-mer fleet watch`` against a real mosquitto broker, with fake devices published by a plain paho client."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cli_checks import assert_one_line_error, run_cli, wait_until
from mosquitto_broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[2]


def _publisher(broker: Broker, **auth: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-devices-{os.getpid()}")
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def _send(client: mqtt.Client, topic: str, payload: dict[str, object], retain: bool = False) -> None:
    client.publish(topic, json.dumps(payload), qos=1, retain=retain).wait_for_publish(timeout=10)


def _decision(device: str, seq: int, label: str = "happy", **extra: object) -> dict[str, object]:
    return {"t": seq * 0.1, "label": label, "probs": {label: 1.0}, "valence": 0.4, "arousal": 0.1,
            "modalities": {"face": {"valid": True}}, "latency_ms": 3.0, "faces": [], "device_id": device,
            "seq": seq, **extra}


def _watch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "fleet", "watch", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _publish_fleet(client: mqtt.Client) -> None:
    """cam-1: seq 3 lost, seq 2 redelivered; cam-2: in order, with wall_time; cam-3 only offline."""
    _send(client, "edge-mer/cam-1/health", {"status": "ok"}, retain=True)
    for seq in (1, 2, 2, 4, 5):
        _send(client, "edge-mer/cam-1/decision", _decision("cam-1", seq))
    for seq in (1, 2, 3):
        _send(client, "edge-mer/cam-2/decision", _decision("cam-2", seq, "sad", wall_time=time.time()))
    _send(client, "elsewhere/cam-9/decision", _decision("cam-9", 1))  # another prefix: not watched


def test_watch_summarises_devices_gaps_duplicates_and_logs_every_message(tmp_path: Path) -> None:
    log, port = tmp_path / "fleet.jsonl", free_port()
    with Broker(tmp_path) as broker:
        client = _publisher(broker)
        _send(client, "edge-mer/cam-1/status", {"state": "online", "bundle": "default", "precision": "fp32",
                                                "modalities": ["face"]}, retain=True)
        _send(client, "edge-mer/cam-2/status", {"state": "online"}, retain=True)
        _send(client, "edge-mer/cam-3/status", {"state": "offline"}, retain=True)
        proc = _watch("--mqtt", broker.url, "--duration", "3", "--jsonl", str(log), "--metrics-port", str(port))
        try:
            # The retained statuses arrive once the watcher is subscribed: then the live messages follow.
            wait_until(lambda: len(_lines(log)) >= 3, "the retained statuses in the --jsonl file")
            _publish_fleet(client)
            metrics = wait_until(lambda: (text := _scrape(port)) and
                                'edge_mer_fleet_decisions_total{device="cam-1"} 4.0' in text and
                                'edge_mer_fleet_decisions_total{device="cam-2"} 3.0' in text and text,
                                "every decision in the metrics")
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            client.loop_stop()
    assert proc.returncode == 0, err
    assert 'edge_mer_fleet_seq_gaps{device="cam-1"} 1.0' in metrics
    assert 'edge_mer_fleet_duplicates_total{device="cam-1"} 1.0' in metrics
    assert 'edge_mer_fleet_online{device="cam-3"} 0.0' in metrics
    lines = out.splitlines()
    assert lines[0].startswith("fleet summary: 3 device(s), 2 online")
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["cam-1"][:4] == ["cam-1", "online", "ok", "happy"] and rows["cam-1"][-4:] == ["4", "1", "1", "0"]
    assert rows["cam-2"][:4] == ["cam-2", "online", "-", "sad"] and rows["cam-2"][-4:] == ["3", "0", "0", "0"]
    assert rows["cam-3"][:2] == ["cam-3", "offline"] and rows["cam-3"][-4:] == ["0", "0", "0", "0"]
    assert lines[-1] == ("total: 7 decision(s), 1 missing by seq (gaps), 1 duplicate(s) removed, "
                         "0 renumbering(s), 0 unreadable message(s)")
    logged = _lines(log)
    assert len(logged) == 3 + 1 + 5 + 3  # every message, the duplicate too; not the other prefix
    assert {r["kind"] for r in logged} == {"status", "health", "decision"}
    status = next(r for r in logged if r["topic"] == "edge-mer/cam-1/status")
    assert status["device_id"] == "cam-1" and status["retained"] is True
    assert status["payload"]["bundle"] == "default" and isinstance(status["received"], float)
    assert [r["payload"]["seq"] for r in logged if r["device_id"] == "cam-1" and r["kind"] == "decision"] == \
        [1, 2, 2, 4, 5]


def test_sigterm_ends_the_watch_with_the_summary(tmp_path: Path) -> None:
    log = tmp_path / "fleet.jsonl"
    with Broker(tmp_path) as broker:
        client = _publisher(broker)
        _send(client, "edge-mer/solo/status", {"state": "online"}, retain=True)
        proc = _watch("--mqtt", broker.url, "--jsonl", str(log))
        try:
            wait_until(lambda: _lines(log), "the retained status")
            proc.terminate()
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            client.loop_stop()
    assert proc.returncode == 0, err
    assert out.startswith("fleet summary: 1 device(s), 1 online")


def test_wrong_credentials_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Broker(tmp_path, users={"watcher": "right"}) as broker:
        wrong = run_cli("fleet", "watch", "--mqtt", broker.url, "--username", "watcher", "--password", "wrong",
                        "--duration", "1", cwd=ROOT, timeout=60)
        monkeypatch.setenv("EDGE_MER_MQTT_PASSWORD", "right")
        right = run_cli("fleet", "watch", "--mqtt", broker.url, "--username", "watcher", "--duration", "0.5",
                        cwd=ROOT, timeout=60)
    assert_one_line_error(wrong, "refused the connection")
    assert right.returncode == 0, right.stderr
    assert right.stdout.startswith("fleet summary: 0 device(s)")


def test_bad_url_and_unreachable_broker_are_one_line_errors() -> None:
    assert_one_line_error(run_cli("fleet", "watch", "--mqtt", "http://127.0.0.1:1883", cwd=ROOT, timeout=60),
                          "unknown scheme 'http'")
    port = free_port()  # nothing listens there
    assert_one_line_error(run_cli("fleet", "watch", "--mqtt", f"mqtt://127.0.0.1:{port}", cwd=ROOT, timeout=60),
                          f"cannot reach the MQTT broker at mqtt://127.0.0.1:{port}")


def test_tls_with_the_ca_file_and_an_untrusted_certificate(tmp_path: Path) -> None:
    with Broker(tmp_path, tls=True) as broker:
        trusted = run_cli("fleet", "watch", "--mqtt", broker.url, "--ca-file", str(broker.ca), "--duration", "0.5",
                          cwd=ROOT, timeout=60)
        untrusted = run_cli("fleet", "watch", "--mqtt", broker.url, "--duration", "0.5", cwd=ROOT, timeout=60)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith("fleet summary: 0 device(s)") and "mqtts://127.0.0.1" in trusted.stdout
    assert_one_line_error(untrusted, f"cannot reach the MQTT broker at {broker.url}")
