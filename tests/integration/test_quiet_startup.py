"""Quiet start-up: a live run with sensors this host lacks prints one line per missing sensor, nothing else.

Without the fixes, a headless ``edge-mer run`` here printed about 80 lines
before its first decision: OpenCV's warnings for every capture backend it
tried, PortAudio's ALSA and JACK probing (C code writing to fd 2), then the
daemon's own lines. The runs below use the real CLI in a child process, a
live camera (index 0) and the default microphone, neither of which exists on
this host; the synthetic EEG board keeps the run going.
"""
from __future__ import annotations

import glob
from pathlib import Path

import pytest

from cli_checks import run_cli

pytest.importorskip("pyaudio")
pytest.importorskip("cv2")

#: Lines only the native libraries write (OpenCV's logger, ALSA, JACK).
NATIVE = ("ALSA lib", "jack", "Jack", "VIDEOIO", "[ WARN:", "[ERROR:", "OpenCV(")


def _no_sensors_here() -> bool:
    import pyaudio

    from edge_mer.sources.audio_input import input_devices
    from edge_mer.sources.native_stderr import native_stderr_silenced

    with native_stderr_silenced():
        pa = pyaudio.PyAudio()
        try:
            inputs = input_devices(pa)
        finally:
            pa.terminate()
    return not inputs and not glob.glob("/dev/video*")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    if not _no_sensors_here():
        pytest.skip("this host has a camera or an audio input")
    path = tmp_path / "run.toml"  # a configuration file: no demo replay in place of the sensors
    path.write_text("duration_s = 3.0\nrate_hz = 2.0\n")
    return path


def _native(lines: list[str]) -> list[str]:
    return [line for line in lines if any(mark in line for mark in NATIVE)]


def test_missing_sensors_are_one_line_each_and_the_run_goes_on(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "decisions.jsonl"
    result = run_cli("run", "--config", str(config), "--jsonl", str(out), cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not _native(lines), result.stderr
    assert len(lines) <= 4, result.stderr
    missing = [line for line in lines if ": no sensor (the other modalities go on): " in line]
    assert [line.split(" WARNING ", 1)[1].split(":", 2)[1].strip() for line in missing] == ["face", "speech"]
    assert len([line for line in lines if "camera '0'" in line]) == 1, result.stderr
    assert len([line for line in lines if "microphone" in line]) == 1, result.stderr
    assert "no default input device" in result.stderr and "--no-speech" in result.stderr
    assert out.read_text().count("\n") >= 2  # decisions from the EEG board


def test_named_missing_sensors_fail_without_native_noise(config: Path, tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(config), "--camera", "7", "--microphone", "5", "--no-eeg",
                     "--jsonl", "", cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr and not _native(lines), result.stderr
    assert 1 <= len(lines) <= 3, result.stderr
    assert len([line for line in lines if "camera '7'" in line]) == 1, result.stderr
    assert len([line for line in lines if "microphone '5'" in line or "input device 5" in line]) <= 1


def test_debug_shows_what_the_native_libraries_say(config: Path, tmp_path: Path) -> None:
    result = run_cli("--log-level", "DEBUG", "run", "--config", str(config), "--duration-s", "1", "--jsonl", "",
                     cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert _native(result.stderr.splitlines()), result.stderr[-3000:]  # OpenCV's and PortAudio's own output
