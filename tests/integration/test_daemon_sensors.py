"""Live sources through the daemon: a sensor dies mid-run, recording is opt-in and replays."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.config import from_dict
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.session_run import build_daemon, demo_session_path


@pytest.fixture
def face_video(tmp_path: Path) -> Path:
    """2 s of the demo session's face video (a real face), as a 'camera' file."""
    source = cv2.VideoCapture(str(demo_session_path() / "video.mp4"))
    path = tmp_path / "camera.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (320, 240))
    for _ in range(30):
        ok, frame = source.read()
        assert ok
        writer.write(frame)
    writer.release()
    source.release()
    return path


def _playback_file(path: Path, seconds: float = 30.0) -> Path:
    """A BrainFlow file in SYNTHETIC_BOARD's layout: EEG-like noise, timestamps the playback board paces by."""
    from brainflow.board_shim import BoardIds, BoardShim
    from brainflow.data_filter import DataFilter

    board = BoardIds.SYNTHETIC_BOARD.value
    rate = BoardShim.get_sampling_rate(board)
    n = int(seconds * rate)
    data = np.zeros((BoardShim.get_num_rows(board), n))
    data[BoardShim.get_eeg_channels(board)] = np.random.default_rng(0).normal(0, 20, (len(
        BoardShim.get_eeg_channels(board)), n))
    data[BoardShim.get_timestamp_channel(board)] = 1.0 + np.arange(n) / rate
    DataFilter.write_file(data, str(path), "w")
    return path


def _run_in_thread(config: RunConfig, at_s: float, action) -> tuple[list[dict], dict]:
    stop = threading.Event()
    with build_daemon(config, load_bundle(default_bundle_path())) as run:
        thread = threading.Thread(target=run.run, args=(stop,))
        thread.start()
        time.sleep(at_s)
        action()
        thread.join(timeout=30)
        assert not thread.is_alive()
        health = run.daemon.health(time.monotonic_ns())
    decisions = [json.loads(line) for line in Path(config.outputs.jsonl).read_text().splitlines()]
    return decisions, health


def test_a_dying_sensor_is_reported_while_the_others_go_on(face_video: Path, tmp_path: Path) -> None:
    from brainflow.board_shim import BoardShim

    recording = _playback_file(tmp_path / "eeg.csv")
    config = from_dict(RunConfig, {
        "rate_hz": 4.0, "duration_s": 9.0,
        "face": {"camera": {"device": str(face_video)}},
        "speech": {"enabled": False},
        "eeg": {"window_s": 2.0, "board": {"board": "PLAYBACK_FILE_BOARD", "file": str(recording),
                                           "master_board": "SYNTHETIC_BOARD", "reconnect_min_s": 0.2,
                                           "reconnect_max_s": 0.2, "max_failures": 1}},
        "outputs": {"jsonl": str(tmp_path / "decisions.jsonl")}})

    def pull_the_plug() -> None:
        recording.unlink()  # the board cannot be opened again
        BoardShim.release_all_sessions()

    # Playback needs ~3.5 s to fill a 2 s window; pull the plug once EEG has been valid.
    decisions, health = _run_in_thread(config, 5.5, pull_the_plug)
    assert len(decisions) >= 32  # 9 s at 4 Hz: the daemon stayed up throughout
    face = [d["modalities"]["face"] for d in decisions]
    eeg = [d["modalities"]["eeg"] for d in decisions]
    assert any(f["valid"] for f in face[:8])
    assert face[-1] == {"valid": False, "reason": "source ended", "reason_code": "source_ended", "label": None,
                        "probs": {}, "latency_ms": 0.0}
    assert any(e["valid"] for e in eeg[:22])
    assert not eeg[-1]["valid"] and eeg[-1]["reason"].startswith("sensor failed:")
    assert health["status"] == "degraded"
    assert health["sources"]["face"]["state"] == "ended"
    assert health["sources"]["eeg"]["state"] == "failed" and "gave up" in health["sources"]["eeg"]["error"]


def test_a_released_board_reconnects_and_the_daemon_goes_on(tmp_path: Path) -> None:
    from brainflow.board_shim import BoardShim

    config = from_dict(RunConfig, {
        "rate_hz": 4.0, "duration_s": 8.0, "face": {"enabled": False}, "speech": {"enabled": False},
        "eeg": {"window_s": 2.0, "board": {"reconnect_min_s": 0.2, "reconnect_max_s": 0.2}},
        "outputs": {"jsonl": str(tmp_path / "decisions.jsonl")}})
    decisions, health = _run_in_thread(config, 3.0, BoardShim.release_all_sessions)
    eeg = [d["modalities"]["eeg"] for d in decisions]
    assert len(decisions) >= 28 and eeg[-1]["valid"]
    assert health["sources"]["eeg"]["state"] == "stopped" and health["sources"]["eeg"]["error"] is None


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_recording_is_opt_in_and_replays(face_video: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    plain = _run("--camera", str(face_video), "--no-speech", "--duration-s", "2", "--rate-hz", "4", cwd=work)
    assert plain.returncode == 0, plain.stderr
    assert list(work.iterdir()) == []  # nothing raw is written without --record
    rec = tmp_path / "recording"
    recorded = _run("--camera", str(face_video), "--no-speech", "--duration-s", "3", "--rate-hz", "4",
                    "--record", str(rec), cwd=work)
    assert recorded.returncode == 0, recorded.stderr
    session = json.loads((rec / "session.json").read_text())
    assert session["format"] == "edge-mer-session/1" and session["video"] and session["eeg"]
    frames = cv2.VideoCapture(str(rec / session["video"])).get(cv2.CAP_PROP_FRAME_COUNT)
    assert frames >= 20
    eeg = np.genfromtxt(rec / session["eeg"], delimiter=",", names=True)
    assert len(eeg) >= 2 * 250
    replay = _run("--replay", str(rec), "--fast", "--rate-hz", "2", cwd=work)
    assert replay.returncode == 0, replay.stderr
    decisions = [json.loads(line) for line in replay.stdout.splitlines()]
    assert decisions and set(decisions[-1]["modalities"]) == {"face", "eeg"}
    assert any(d["modalities"]["face"]["valid"] for d in decisions)
