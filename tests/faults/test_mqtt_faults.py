"""The MQTT output as a user misconfigures it: a bad URL, refused credentials, a broker that is not there.

Each case runs the real ``edge-mer run`` in a child process: a user error is one stderr line and exit 2;
an unreachable broker is one WARNING line and the run goes on, keeping its decisions queued on disk.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_checks import assert_one_line_error
from mosquitto_broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "edge_mer" / "assets" / "demo_session"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(DEMO), "--fast",
                           "--jsonl", "", "--device-id", "F", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env, check=False)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:1883", "outputs.mqtt.url: expected mqtt://host[:port] or mqtts://host[:port]"),
    ("mqtt://127.0.0.1:notaport", "outputs.mqtt.url: 'mqtt://127.0.0.1:notaport' is not a valid URL"),
    ("mqtt://user:pw@127.0.0.1", "outputs.mqtt.url: put credentials in outputs.mqtt.username/password"),
])
def test_bad_url_is_one_line_error(tmp_path: Path, url: str, expected: str) -> None:
    assert_one_line_error(_run(tmp_path, "--mqtt", url), expected)


def test_bad_device_id_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(_run(tmp_path, "--mqtt", "mqtt://127.0.0.1", "--device-id", "a/b"), "device_id must be")


@pytest.mark.parametrize("credentials", ["", 'username = "dev"\npassword = "wrong"\n'])
def test_refused_credentials_are_one_line_error_naming_the_broker(tmp_path: Path, credentials: str) -> None:
    with Broker(tmp_path, users={"dev": "secret"}) as broker:
        config = tmp_path / "run.toml"
        config.write_text(f"[outputs.mqtt]\n{credentials}")
        result = _run(tmp_path, "--config", str(config), "--mqtt", broker.url)
    assert_one_line_error(result, f"outputs.mqtt: broker {broker.url} refused the connection: ")
    assert "wrong" not in result.stderr  # the password is never printed
    line = next(line for line in result.stderr.splitlines() if line.startswith("edge-mer: error:"))
    assert "Not authorized" in line or "Bad user name or password" in line, line


def test_right_credentials_are_accepted(tmp_path: Path) -> None:
    with Broker(tmp_path, users={"dev": "secret"}) as broker:
        config = tmp_path / "run.toml"
        config.write_text('[outputs.mqtt]\nusername = "dev"\npassword = "secret"\n')
        result = _run(tmp_path, "--config", str(config), "--mqtt", broker.url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WARNING" not in result.stderr, result.stderr[-2000:]


def test_unreachable_broker_is_one_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[outputs.mqtt]\nconnect_timeout_s = 1.0\n")
    url = f"mqtt://127.0.0.1:{free_port()}"
    result = _run(tmp_path, "--config", str(config), "--mqtt", url)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, result.stderr[-2000:]
    assert f"MQTT broker {url} unreachable (Connection refused)" in warnings[0]
    assert "not yet delivered stay queued" in warnings[1]
    queue = tmp_path / "state" / "edge-mer" / "mqtt-F.sqlite"
    with sqlite3.connect(queue) as db:
        left = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert left >= 10  # kept for the next run
    # The next run, with a broker there, sends them first, then its own: seq 0.. with no gap.
    import json

    import paho.mqtt.client as mqtt

    with Broker(tmp_path) as broker:
        seqs: list[int] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c, u, m: seqs.append(json.loads(m.payload)["seq"])
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("edge-mer/F/decision", qos=1)
        sub.loop_start()
        try:
            time.sleep(0.3)  # subscribed before the daemon publishes
            again = _run(tmp_path, "--mqtt", broker.url)
            assert again.returncode == 0 and "WARNING" not in again.stderr, again.stderr[-2000:]
            deadline = time.monotonic() + 5
            while len(seqs) < 2 * left and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sub.disconnect()
            sub.loop_stop()
    assert seqs == list(range(2 * left))  # the same session twice: as many decisions each run
