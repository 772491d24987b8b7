"""A corrupt stretch of video: the replay source and the camera playing a file skip the bad frames and go on.

Real videos written by cv2.VideoWriter (mp4v in MP4, MJPEG in AVI) with 20 KB
overwritten by random bytes; "decodable" is how many frames OpenCV itself
returns when asked to read past every failure.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mer.errors import SensorError
from edge_mer.sessions import FORMAT, VideoReplaySource
from edge_mer.sources.camera import CameraConfig, CameraSource

W, H, FPS, N = 320, 240, 15.0, 120
LEVEL = 2  # the top-left block of frame i has grey level i * LEVEL


def _write(path: Path, fourcc: str) -> Path:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened()
    for i in range(N):
        frame = np.roll(texture, 3 * i, axis=1)
        frame[:40, :40] = LEVEL * i
        writer.write(frame)
    writer.release()
    return path


def _corrupt(path: Path, at: float = 0.3, size: int = 20_000) -> Path:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + size] = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _decodable(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = sum(bool(cap.read()[0]) for _ in range(count + 300))
    cap.release()
    return decoded


def _level(frame: np.ndarray) -> int:
    return round(float(frame[:40, :40].mean()) / LEVEL)


def _session(root: Path, video: Path) -> Path:
    root.mkdir()
    (root / video.name).write_bytes(video.read_bytes())
    (root / "session.json").write_text(json.dumps({"format": FORMAT, "video": video.name}))
    return root


@pytest.fixture(params=[("mp4v", "mp4"), ("MJPG", "avi")], ids=["mp4v", "mjpeg"])
def corrupt_video(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    fourcc, ext = request.param
    return _corrupt(_write(tmp_path / f"clip.{ext}", fourcc))


def test_replay_skips_the_corrupt_frames_and_plays_to_the_end(corrupt_video: Path, tmp_path: Path) -> None:
    decodable = _decodable(corrupt_video)
    assert 90 <= decodable < N  # the stretch really broke frames, and OpenCV can decode the rest
    with VideoReplaySource(_session(tmp_path / "s", corrupt_video), pace=False) as source:
        chunks = list(source)
    assert len(chunks) == decodable
    indices = [c.meta["frame_index"] for c in chunks]
    assert indices == sorted(set(indices)) and indices[-1] >= N - 1 - (N - decodable)
    assert [c.meta["session_t"] for c in chunks] == [i / FPS for i in indices]
    assert _level(chunks[-1].data) >= N - 5  # the frames after the stretch came through
    if corrupt_video.suffix == ".mp4":  # each failed read is one lost frame: later frames keep their time
        assert indices[-1] == N - 1
        assert all(abs(_level(c.data) - c.meta["frame_index"]) <= 2 for c in chunks[-20:])


def test_camera_playing_the_file_skips_the_corrupt_frames(corrupt_video: Path) -> None:
    decodable = _decodable(corrupt_video)
    with CameraSource(CameraConfig(device=str(corrupt_video)), pace=False) as camera:
        chunks = list(camera)
    assert len(chunks) == decodable
    assert _level(chunks[-1].data) >= N - 5


def test_paced_camera_keeps_real_time_across_the_skipped_frames(tmp_path: Path) -> None:
    clip = _corrupt(_write(tmp_path / "clip.mp4", "mp4v"))
    started = time.monotonic()
    with CameraSource(CameraConfig(device=str(clip))) as camera:
        chunks = list(camera)
    elapsed = time.monotonic() - started
    assert len(chunks) >= 0.9 * _decodable(clip)
    assert N / FPS - 0.5 < elapsed < N / FPS + 1.0  # the skipped frames' time is waited out, not dropped


def test_a_cut_off_file_ends_promptly_after_its_last_frame(tmp_path: Path) -> None:
    clip = _write(tmp_path / "clip.avi", "MJPG")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # header says 120 frames; half are there
    started = time.monotonic()
    with VideoReplaySource(_session(tmp_path / "s", clip), pace=False) as source:
        chunks = list(source)
    assert 50 <= len(chunks) <= 62 and time.monotonic() - started < 5.0


def test_a_file_with_no_decodable_frame_fails_to_open_as_a_camera(tmp_path: Path) -> None:
    clip = _write(tmp_path / "clip.avi", "MJPG")
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(2)
    at = data.index(b"movi") + 4
    while data[at:at + 4] == b"00dc":  # keep the chunk headers (and the index), replace every JPEG by noise
        size = int.from_bytes(data[at + 4:at + 8], "little")
        data[at + 8:at + 8 + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        at += 8 + size + (size & 1)
    clip.write_bytes(bytes(data))
    assert _decodable(clip) == 0
    with pytest.raises(SensorError, match="opened, but it delivered no frame") as info:
        CameraSource(CameraConfig(device=str(clip))).open()
    assert "\n" not in str(info.value)
