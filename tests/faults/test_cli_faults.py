"""Bad configurations, sensors that are not there, signals at any moment, a closed stdout: the CLI as a user meets it.

Each case runs the real ``edge-mer`` in a child process and expects one stderr
line and exit 2 (a user error), or exit 0 (a signal, a closed pipe), and never
a traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_mer.bundle import default_bundle_path
from edge_mer.sessions import demo_session_path
from cli_checks import assert_one_line_error as _one_line_error
from cli_checks import run_cli as _cli

DEMO = demo_session_path()
DEMO_AUDIO = DEMO / "audio.wav"


BAD_CONFIGS = {
    "eeg window 1e12 s": ("[eeg]\nwindow_s = 1e12\n", "eeg window_s must be in (0, 60] s"),
    "speech window 1e9 s": ("[speech]\nwindow_s = 1e9\n", "speech window_s must be in (0, 30] s"),
    "face window inf": ("[face]\nwindow_s = inf\n", "face window_s must be in (0, 10] s"),
    "eeg hop nan": ("[eeg]\nhop_s = nan\n", "hop_s must be in 0..stale_s"),
    "stale 1e300": ("[face]\nstale_s = 1e300\n", "face stale_s must be in (0, 60] s"),
    "numpy threads": ("numpy_threads = 100000\n", "numpy_threads must be in 0..256"),
    "ort threads": ("[backend.onnxruntime]\nintra_op_threads = 100000\n", "intra_op_threads must be in 0..256"),
    "http port": ("[outputs.http]\nport = 70000\n", "port must be in 0..65535"),
    "microphone rate": ("[speech.microphone]\nrate = 1000000000\n", "rate must be in 8000..384000 Hz"),
    "camera device": ("[face.camera]\ndevice = \"99999999999999999999\"\n", "0..9999"),
    "microphone device": ("[speech.microphone]\ndevice = \"99999999999999999999\"\n", "device index must be in"),
    "board buffer": ("[eeg.board]\nbuffer_s = 1e9\n", "buffer_s must be in 5..600 s"),
    "board port": ("[eeg.board]\nip_port = 99999999\n", "ip_port must be in 0..65535"),
    "max frames": ("[face]\nmax_frames = 1000000\n", "max_frames must be in 1..100"),
    "max_abs_uv": ("[eeg]\nmax_abs_uv = -5.0\n", "max_abs_uv must be in (0, 1e6]"),
    "fusion weight inf": ("[fusion.weights]\nface = inf\n", "weights.face must be in 0..1e6"),
    "smoothing half-life": ("[fusion]\nhalf_life_s = 1e300\n", "half_life_s must be in 0..3600 s"),
    "fusion rule": ("[fusion]\nrule = \"median\"\n", "rule must be one of weighted_mean, log_linear, learned"),
    "detector kind": ("[face.detector]\nkind = \"blaze\"\n", "kind: expected one of 'blazeface', 'blazeface_full', 'haar', 'yunet', got 'blaze'"),
    "trt batch": ("[backend.tensorrt]\nmax_batch = 100000000\n", "max_batch <= 4096"),
    "max faces": ("[face]\nmax_faces = 1000\n", "max_faces must be in 1..16, got 1000"),
    "primary face": ("[face]\nprimary = \"left\"\n", "face.primary: expected one of 'largest', 'center', got 'left'"),
    "detector precision": ("[face.detector]\nprecision = \"int4\"\n", "precision: expected auto or one of"),
    "keep lost": ("[face.detector]\nkeep_lost = -1\n", "keep_lost must be 0..3600 frames, got -1"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_numbers_in_a_config_are_one_line_errors(name: str, tmp_path: Path) -> None:
    text, expected = BAD_CONFIGS[name]
    config = tmp_path / "run.toml"
    config.write_text(text)
    _one_line_error(_cli("run", "--config", str(config), "--duration-s", "1", cwd=tmp_path), expected)


def test_a_bad_flag_value_is_a_one_line_error(tmp_path: Path) -> None:
    _one_line_error(_cli("run", "--duration-s", "1e300", cwd=tmp_path), "duration_s must be in 0..")
    _one_line_error(_cli("run", "--rate-hz", "nan", cwd=tmp_path), "rate_hz must be in 0.1..100")


def test_errors_found_when_the_run_is_built_are_one_line(tmp_path: Path) -> None:
    too_short = _cli("run", "--replay", str(DEMO), "--fast", "--no-face", "--no-eeg", "--config",
                     str(_toml(tmp_path / "a.toml", "[speech]\nwindow_s = 0.001\n")), cwd=tmp_path)
    _one_line_error(too_short, "speech.window_s = 0.001 s is shorter than the 1 s encoder 'speech' needs")
    zero = _cli("run", "--replay", str(DEMO), "--fast", "--config",
                str(_toml(tmp_path / "b.toml", "[fusion.weights]\nface = 0.0\nspeech = 0.0\neeg = 0.0\n")),
                cwd=tmp_path)
    _one_line_error(zero, "weight 0, so no decision could use any evidence")


def _toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("args, expected", [
    (["--board", "NOPE_BOARD", "--no-face", "--no-speech"], "eeg sensor cannot open: EEG board 'NOPE_BOARD'"),
    (["--board", "12345", "--no-face", "--no-speech"], "not a BrainFlow BoardIds name or number"),
    (["--board", "CYTON_BOARD", "--serial-port", "/dev/ttyNOPE0", "--no-face", "--no-speech"],
     "eeg sensor cannot open: EEG board CYTON_BOARD: cannot start streaming"),
    (["--camera", "/nonexistent/camera.mp4", "--no-speech", "--no-eeg"], "face sensor cannot open"),
    (["--audio-file", "/nonexistent/speech.wav", "--no-face", "--no-eeg"], "speech sensor cannot open"),
])
def test_a_named_sensor_that_cannot_open_is_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    _one_line_error(_cli("run", *args, "--duration-s", "2", cwd=tmp_path), expected)


def test_an_unnamed_sensor_that_cannot_open_is_reported_and_the_rest_runs(tmp_path: Path) -> None:
    """The default camera is not named: without it the named microphone file still runs (exit 0)."""
    result = _cli("run", "--audio-file", str(DEMO_AUDIO), "--no-eeg", "--duration-s", "3", "--rate-hz", "2",
                  cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert '"speech":{"valid":' in result.stdout and '"reason_code":"sensor_failed"' in result.stdout


DELAYS_S = (0.15, 0.3, 0.5, 0.8, 1.2, 2.0, 3.5)


@pytest.mark.parametrize("delay", DELAYS_S)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_exits_0_quickly_without_a_traceback(sig: signal.Signals, delay: float,
                                                                    tmp_path: Path) -> None:
    """From interpreter start-up (imports, bundle loading) to the running daemon."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(DEMO),
                             "--jsonl", str(tmp_path / "d.jsonl")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    took = time.monotonic() - sent
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert took < 2.0, f"took {took:.2f} s to stop"


def test_an_interrupted_tool_exits_128_plus_the_signal(tmp_path: Path) -> None:
    """Only the daemon's stop is a success: an interrupted benchmark must not look finished."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "edge_mer.cli.main", "bench", "--no-pipeline", "--no-face-path",
                                 "--iterations", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path)
        time.sleep(2.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 128 + sig, (proc.returncode, err[-2000:])
        assert "Traceback" not in err, err[-2000:]


def test_a_full_disk_stops_the_recording_not_the_sensors(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes every write past 300 KB fail with EFBIG, as a full disk fails with ENOSPC."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    record = tmp_path / "rec"
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--camera", str(DEMO / "video.mp4"),
                             "--audio-file", str(DEMO_AUDIO), "--no-eeg", "--duration-s", "5", "--rate-hz", "4",
                             "--record", str(record)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            preexec_fn=small_files)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "could not be finished" in result.stderr.splitlines()[-1]
    decisions = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(decisions) >= 16 and '"reason_code":"sensor_failed"' not in result.stdout  # the sensors went on
    assert '"complete": false' in (record / "session.json").read_text().replace('"complete":false', '"complete": false')


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "0"}
    for command in (f"{sys.executable} -m edge_mer.cli.main info --bundle {default_bundle_path()} | head -1",
                    f"{sys.executable} -m edge_mer.cli.main run --replay {DEMO} --fast --rate-hz 20 | head -1"):
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path, env=env)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert result.stderr == "" and len(result.stdout.splitlines()) == 1, (command, result.stderr[-2000:])
