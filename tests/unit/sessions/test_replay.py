"""Replay sources on sessions built in tmp_path: timestamps, order, rates, channels, pacing."""
from __future__ import annotations

import heapq
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from edge_mer.errors import ConfigError, SensorError
from edge_mer.preprocess.audio import to_mono
from edge_mer.sessions import (
    FORMAT, AudioReplaySource, EegReplaySource, VideoReplaySource, load_session, replay_sources)
from edge_mer.sources.base import Chunk, Source

FPS = 20.0
FRAMES = 12
CHANNELS = ("Fz", "C3", "Cz", "C4")


def write_video(path: Path, frames: int = FRAMES, fps: float = FPS, size: tuple[int, int] = (64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):  # flat grey levels survive mp4v well enough to check the order
        writer.write(np.full((size[1], size[0], 3), 10 + 20 * i, dtype=np.uint8))
    writer.release()


def write_eeg(path: Path, values: np.ndarray, stamps: np.ndarray | None) -> None:
    header = list(CHANNELS) if stamps is None else ["timestamp", *CHANNELS]
    rows = values.T.tolist() if stamps is None else [[t, *row] for t, row in zip(stamps.tolist(), values.T.tolist())]
    path.write_text(",".join(header) + "\n" + "".join(",".join(repr(v) for v in row) + "\n" for row in rows))


def make_session(root: Path, *, audio: str = "stereo", eeg_stamps: bool = True, rate: int = 128,
                 eeg_seconds: float = 0.6) -> dict[str, np.ndarray]:
    """A session with video, audio and EEG; returns the raw arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_video(root / "video.mp4")
    if audio == "stereo":
        pcm = rng.integers(-20000, 20000, size=(int(0.5 * 22050) + 7, 2), dtype=np.int16)
        sf.write(root / "audio.wav", pcm, 22050, subtype="PCM_16")
    else:
        pcm = rng.uniform(-0.9, 0.9, size=int(0.5 * 16000) + 3).astype(np.float32)
        sf.write(root / "audio.wav", pcm, 16000, subtype="FLOAT")
    n = int(eeg_seconds * rate)
    eeg = rng.normal(0, 20, size=(len(CHANNELS), n))
    stamps = 0.25 + np.arange(n) / rate if eeg_stamps else None
    write_eeg(root / "eeg.csv", eeg, stamps)
    data = {"format": FORMAT, "video": "video.mp4", "audio": "audio.wav", "eeg": "eeg.csv"}
    if not eeg_stamps:
        data["eeg_sampling_rate"] = rate
    (root / "session.json").write_text(json.dumps(data))
    return {"audio": pcm, "eeg": eeg, "stamps": np.zeros(0) if stamps is None else stamps}


def collect(source: Source) -> list[Chunk]:
    with source:
        return list(source)


def test_video_frames_are_timed_by_index_over_fps(tmp_path: Path) -> None:
    make_session(tmp_path)
    source = VideoReplaySource(load_session(tmp_path), clock_offset_ns=5_000, pace=False)
    chunks = collect(source)
    assert source.info.modality == "face" and source.info.rate == pytest.approx(FPS)
    assert len(chunks) == FRAMES
    assert [c.t_ns for c in chunks] == [5_000 + int(i / FPS * 1e9) for i in range(FRAMES)]
    assert [c.meta["session_t"] for c in chunks] == [i / FPS for i in range(FRAMES)]
    assert all(c.data.shape == (48, 64, 3) and c.data.dtype == np.uint8 for c in chunks)
    levels = [float(c.data.mean()) for c in chunks]
    assert np.allclose(levels, [10 + 20 * i for i in range(FRAMES)], atol=4)


def test_stereo_int16_audio_at_22050_is_mixed_and_chunked_at_20_ms(tmp_path: Path) -> None:
    raw = make_session(tmp_path, audio="stereo")["audio"]
    source = AudioReplaySource(tmp_path, clock_offset_ns=0, pace=False)
    chunks = collect(source)
    assert source.info.modality == "speech" and source.info.rate == 22050
    assert {c.data.shape[0] for c in chunks[:-1]} == {441} and 0 < chunks[-1].data.shape[0] <= 441
    assert all(c.data.dtype == np.float32 and c.data.ndim == 1 for c in chunks)
    joined = np.concatenate([c.data for c in chunks])
    np.testing.assert_array_equal(joined, to_mono(raw))  # same bytes as the live mixing path
    newest = np.cumsum([c.data.shape[0] for c in chunks]) - 1
    assert [c.meta["session_t"] for c in chunks] == (newest / 22050).tolist()
    assert [c.t_ns for c in chunks] == [int(t * 1e9) for t in (newest / 22050).tolist()]


def test_mono_float_audio_at_16000_is_returned_unchanged(tmp_path: Path) -> None:
    raw = make_session(tmp_path, audio="float")["audio"]
    source = AudioReplaySource(tmp_path, clock_offset_ns=0, pace=False)
    chunks = collect(source)
    assert source.info.rate == 16000 and chunks[0].data.shape == (320,)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), raw)
    assert chunks[-1].meta["session_t"] == (raw.size - 1) / 16000


def test_eeg_with_timestamp_column_derives_the_rate_and_uses_the_stamps(tmp_path: Path) -> None:
    raw = make_session(tmp_path, eeg_stamps=True, rate=128)
    source = EegReplaySource(tmp_path, clock_offset_ns=0, pace=False)
    chunks = collect(source)
    assert source.info.modality == "eeg" and source.info.rate == pytest.approx(128)
    assert source.info.channel_names == CHANNELS
    assert {c.data.shape for c in chunks[:-1]} == {(4, 13)}  # ~0.1 s at 128 Hz
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks], axis=1), raw["eeg"])
    newest = np.cumsum([c.data.shape[1] for c in chunks]) - 1
    assert [c.meta["session_t"] for c in chunks] == raw["stamps"][newest].tolist()
    assert chunks[0].meta["session_t"] == pytest.approx(0.25 + 12 / 128)


def test_eeg_without_timestamps_uses_index_over_rate(tmp_path: Path) -> None:
    raw = make_session(tmp_path, eeg_stamps=False, rate=250)
    source = EegReplaySource(tmp_path, clock_offset_ns=0, pace=False)
    chunks = collect(source)
    assert source.info.rate == 250 and source.info.channel_names == CHANNELS
    assert chunks[0].data.shape == (4, 25) and chunks[0].data.dtype == np.float64
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks], axis=1), raw["eeg"])
    newest = np.cumsum([c.data.shape[1] for c in chunks]) - 1
    assert [c.meta["session_t"] for c in chunks] == (newest / 250).tolist()


def test_fast_replay_merges_into_one_ordered_stream(tmp_path: Path) -> None:
    make_session(tmp_path, audio="float")
    sources = replay_sources(load_session(tmp_path), pace=False, clock_offset_ns=10**12)
    assert set(sources) == {"face", "speech", "eeg"}
    for source in sources.values():
        source.open()
    try:
        streams = {m: list(s) for m, s in sources.items()}
        merged = list(heapq.merge(*(iter(s) for s in streams.values()), key=lambda c: c.t_ns))
    finally:
        for source in sources.values():
            source.close()
    for chunks in streams.values():
        times = [c.t_ns for c in chunks]
        assert times == sorted(times) and times[0] >= 10**12
    times = [c.t_ns for c in merged]
    assert times == sorted(times) and len(merged) == sum(map(len, streams.values()))


def test_paced_replay_follows_the_monotonic_clock_and_fast_replay_does_not_sleep(tmp_path: Path) -> None:
    make_session(tmp_path)
    started = time.monotonic()
    fast = collect(VideoReplaySource(tmp_path, clock_offset_ns=time.monotonic_ns() + 10**10, pace=False))
    assert time.monotonic() - started < 0.3
    offset = time.monotonic_ns()
    late = []
    with VideoReplaySource(tmp_path, clock_offset_ns=offset, pace=True) as source:
        for chunk in source:
            late.append(time.monotonic_ns() - chunk.t_ns)
    assert len(late) == len(fast) == FRAMES
    assert min(late) >= 0 and max(late) < 0.1e9
    assert (time.monotonic_ns() - offset) / 1e9 >= (FRAMES - 1) / FPS


def test_default_clock_offset_is_now_when_pacing_and_zero_otherwise(tmp_path: Path) -> None:
    make_session(tmp_path)
    with EegReplaySource(tmp_path, pace=False) as source:
        assert next(iter(source)).t_ns == int((0.25 + 12 / 128) * 1e9)
    before = time.monotonic_ns()
    sources = replay_sources(tmp_path, pace=True)
    assert len({s.clock_offset_ns for s in sources.values()}) == 1  # type: ignore[attr-defined]
    assert next(iter(sources.values())).clock_offset_ns >= before  # type: ignore[attr-defined]


def test_close_from_another_thread_ends_a_paced_replay_promptly(tmp_path: Path) -> None:
    make_session(tmp_path)
    source = AudioReplaySource(tmp_path, clock_offset_ns=time.monotonic_ns() + 5 * 10**9, pace=True)
    got: list[Chunk] = []
    with source:
        worker = threading.Thread(target=lambda: got.extend(source))
        worker.start()
        time.sleep(0.1)
        started = time.monotonic()
        source.close()
        worker.join(2)
        assert not worker.is_alive() and time.monotonic() - started < 0.5
    assert got == []


def test_iterating_an_unopened_source_fails(tmp_path: Path) -> None:
    make_session(tmp_path)
    with pytest.raises(SensorError, match="not open"):
        iter(VideoReplaySource(tmp_path, pace=False))


def test_replay_sources_only_for_present_files(tmp_path: Path) -> None:
    make_session(tmp_path)
    (tmp_path / "session.json").write_text(json.dumps({"format": FORMAT, "audio": "audio.wav"}))
    assert list(replay_sources(tmp_path, pace=False)) == ["speech"]
    with pytest.raises(ConfigError, match="no 'video' file"):
        VideoReplaySource(tmp_path)


@pytest.mark.parametrize(("csv_text", "match"), [
    ("timestamp,Fz\n1700000000.0,1\n1700000000.004,2\n", "looks like an epoch time"),
    ("timestamp,Fz\n0.0,1\n0.0,2\n", "cannot derive the sampling rate"),
    ("timestamp,Fz\n0.0,1\n0.1,2\n0.05,3\n", "line 4: the timestamp is earlier than the previous row's"),
    ("timestamp,Fz\n0.0,1\n0.1,x\n", "line 3 column 2: not a number"),
    ("timestamp,Fz\n0.0,1\n0.1,2,3\n", "line 3: 3 values, expected 2"),
])
def test_bad_eeg_files_raise_sensor_errors_naming_the_line(tmp_path: Path, csv_text: str, match: str) -> None:
    (tmp_path / "eeg.csv").write_text(csv_text)
    (tmp_path / "session.json").write_text(json.dumps({"format": FORMAT, "eeg": "eeg.csv"}))
    with pytest.raises(SensorError, match=match):
        collect(EegReplaySource(tmp_path, pace=False))


def test_unreadable_media_raise_sensor_errors(tmp_path: Path) -> None:
    (tmp_path / "video.mp4").write_bytes(b"not a video")
    (tmp_path / "audio.wav").write_bytes(b"not a wav")
    (tmp_path / "session.json").write_text(json.dumps({"format": FORMAT, "video": "video.mp4",
                                                       "audio": "audio.wav"}))
    with pytest.raises(SensorError, match="video .*video.mp4"):
        VideoReplaySource(tmp_path).open()
    with pytest.raises(SensorError, match="audio .*audio.wav: cannot read it"):
        AudioReplaySource(tmp_path).open()
