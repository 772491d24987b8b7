"""The daemon as a user runs it: real subprocesses, real clients on loopback, signals, failing sensors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edge_mer.pipeline.session_run import demo_session_path

DEMO = demo_session_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_http(url: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            _get(url)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_sigterm_stops_cleanly_within_two_seconds(tmp_path: Path) -> None:
    proc = _start("--replay", str(DEMO), cwd=tmp_path)
    first = proc.stdout.readline()
    assert json.loads(first)["modalities"]
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=5)
    assert time.monotonic() - sent < 2.0
    assert proc.returncode == 0


def test_http_websocket_and_lsl_clients_receive_decisions(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start("--replay", str(DEMO), "--http", "--http-port", str(port), "--lsl", "--jsonl", "", cwd=tmp_path)
    inlet_script = (
        "import json, pylsl\n"
        "streams = pylsl.resolve_byprop('name', 'edge-mer', timeout=15)\n"
        "inlet = pylsl.StreamInlet(streams[0])\n"
        "for _ in range(2):\n"
        "    sample, ts = inlet.pull_sample(timeout=15)\n"
        "    print(json.dumps(json.loads(sample[0])['t']))\n")
    inlet = subprocess.Popen([sys.executable, "-c", inlet_script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/healthz")
        ws_times = _websocket_times(f"ws://127.0.0.1:{port}/ws", 2)
        assert len(ws_times) == 2 and ws_times[0] < ws_times[1]
        status, body = _get(base + "/state")
        assert status == 200 and set(json.loads(body)["modalities"]) == {"face", "speech", "eeg"}
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body)["sources"]["face"]["state"] == "running"
        status, body = _get(base + "/metrics")
        assert status == 200 and b"edge_mer_decisions_total" in body
        out, err = inlet.communicate(timeout=30)
        lsl_times = [float(line) for line in out.split()]
        assert len(lsl_times) == 2 and lsl_times[0] < lsl_times[1], err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        inlet.kill()
    assert proc.returncode == 0


def _websocket_times(url: str, n: int) -> list[float]:
    import asyncio

    import aiohttp

    async def receive() -> list[float]:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            return [json.loads((await ws.receive(timeout=10)).data)["t"] for _ in range(n)]

    return asyncio.run(receive())


@pytest.mark.parametrize("toml, message", [
    ("rate_hz = 2\n[face]\nwindow = 1.0\n", "unknown key face.window"),
    ("rate_hz = 'fast'\n", "rate_hz: expected a number, got 'fast'"),
    ("[eeg]\nnotch_hz = 55\n", "notch_hz must be 0, 50 or 60, got 55.0"),
    ("precision = 'int8'\n[replay]\n", "replay: expected a path string"),
])
def test_configuration_errors_are_one_line_and_exit_2(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_the_default_bundle_runs_at_int8_and_fp16_out_of_the_box(precision: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "--log-level", "INFO", "run", "--replay",
                             str(DEMO), "--fast", "--precision", precision], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert decisions and any(m["valid"] for d in decisions for m in d["modalities"].values())
    for modality in ("face", "speech", "eeg"):
        assert f"{modality}: encoder" in result.stderr and f"({precision}) on onnxruntime" in result.stderr


def test_no_hardware_replays_the_demo_and_says_so(tmp_path: Path) -> None:
    if Path("/dev/video0").exists():
        pytest.skip("this host has a camera; the fallback is not exercised")
    env = dict(os.environ, HOME=str(tmp_path))  # no ~/.asoundrc: PortAudio finds no input device
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--rate-hz", "4"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "replaying the demo session" in lines[0]
    decisions = [json.loads(line) for line in lines[1:]]
    assert len(decisions) >= 20 and any(d["modalities"]["face"]["valid"] for d in decisions)


@pytest.mark.parametrize("args, message", [
    (["--config", "/"], "config file / cannot be read"),
    (["--bundle", "/etc/hostname", "--replay", str(DEMO), "--fast"], "bundle directory /etc/hostname is not a directory"),
    (["--replay", "/nonexistent-session", "--fast"], "/nonexistent-session"),
    (["--camera", str(DEMO / "video.mp4"), "--no-speech", "--no-eeg", "--record", "/etc/hostname/rec"],
     "cannot create the recording directory /etc/hostname/rec"),
])
def test_user_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", *args], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and message in lines[-1], result.stderr


def test_a_failing_output_is_dropped_while_the_others_go_on(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start("--replay", str(DEMO), "--jsonl", "/dev/full", "--http", "--http-port", str(port), cwd=tmp_path)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(1.5)
        status, body = _get(f"http://127.0.0.1:{port}/state")
        assert status == 200 and json.loads(body)["t"] > 0
        assert proc.poll() is None  # still running without its JSONL output
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "jsonl output failed and is dropped" in err


def test_sigterm_during_startup_exits_promptly(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "--log-level", "INFO", "run", "--replay",
                             str(DEMO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    # Sources open first (one INFO line each); the first encoder line means it is loading models.
    lines = [proc.stderr.readline() for _ in range(4)]
    assert any("onnxruntime" in line for line in lines), lines
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert time.monotonic() - sent < 2.0
    assert proc.returncode == 0
