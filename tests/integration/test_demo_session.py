"""The demo session shipped in the package loads and replays all three streams."""
from __future__ import annotations

import heapq

import cv2
import numpy as np
import pytest

from edge_mer.sessions import demo_session_path, load_session
from edge_mer.sources.base import Chunk
from conftest import replay_all

DEMO_SESSION = demo_session_path()

EEG_CHANNELS = ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7", "F3", "F4", "F8")


@pytest.fixture(scope="module")
def replayed() -> tuple[dict[str, list[Chunk]], dict[str, object]]:
    return replay_all(load_session(DEMO_SESSION))


def test_demo_session_is_complete_small_and_documented() -> None:
    session = load_session(DEMO_SESSION)
    assert session.modalities == ("face", "speech", "eeg")
    assert session.eeg_sampling_rate == 250 and session.labels == ()
    files = {p.name: p.stat().st_size for p in DEMO_SESSION.iterdir()}
    assert set(files) == {"session.json", "video.mp4", "audio.wav", "eeg.csv", "SOURCES.md"}
    assert sum(files.values()) < 620_000
    sources_md = (DEMO_SESSION / "SOURCES.md").read_text()
    for needle in ("astronaut", "public domain", "espeak-ng", "SYNTHETIC_BOARD", "Labels: none"):
        assert needle in sources_md


def test_demo_video_replays_eight_seconds_of_a_detectable_face(replayed) -> None:
    chunks, infos = replayed
    frames = chunks["face"]
    assert infos["face"].rate == 15.0 and len(frames) == 120
    assert frames[0].data.shape == (240, 320, 3) and frames[-1].meta["session_t"] == pytest.approx(119 / 15)
    assert not np.array_equal(frames[0].data, frames[60].data)  # animated, not a still
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    for chunk in frames[::30]:
        grey = cv2.cvtColor(chunk.data, cv2.COLOR_BGR2GRAY)
        assert len(cascade.detectMultiScale(grey, 1.1, 5, minSize=(40, 40))) == 1


def test_demo_audio_is_eight_seconds_of_16_khz_speech(replayed) -> None:
    chunks, infos = replayed
    assert infos["speech"].rate == 16000
    audio = np.concatenate([c.data for c in chunks["speech"]])
    assert audio.size == 8 * 16000 and audio.dtype == np.float32
    assert len(chunks["speech"]) == 400 and chunks["speech"][-1].meta["session_t"] == pytest.approx(8 - 1 / 16000)
    rms = [float(np.sqrt(np.mean(audio[i:i + 16000] ** 2))) for i in range(0, audio.size, 16000)]
    assert sum(r > 0.01 for r in rms) >= 6  # speech through most of the 8 s


def test_demo_eeg_is_eight_seconds_of_the_synthetic_board_montage(replayed) -> None:
    chunks, infos = replayed
    assert infos["eeg"].rate == 250 and infos["eeg"].channel_names == EEG_CHANNELS
    eeg = np.concatenate([c.data for c in chunks["eeg"]], axis=1)
    assert eeg.shape == (10, 2000) and np.isfinite(eeg).all()
    assert 1.0 < float(eeg.std(axis=1).min()) and float(np.abs(eeg).max()) < 5000  # microvolts, not volts


def test_demo_streams_merge_in_time_order(replayed) -> None:
    chunks, _ = replayed
    merged = list(heapq.merge(*chunks.values(), key=lambda c: c.t_ns))
    times = [c.t_ns for c in merged]
    assert times == sorted(times) and len(merged) == 120 + 400 + 80
    assert times[-1] <= 8 * 10**9
