"""WavFileSource, SoundFileReader and the registry's "wav" speech source on real sound files written with soundfile."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from edge_mer.errors import ConfigError, SensorError  # noqa: E402
from edge_mer.sources.microphone import MicrophoneConfig  # noqa: E402
from edge_mer.sources.registry import create_source  # noqa: E402
from edge_mer.sources.wav import SoundFileReader, WavFileSource, chunk_samples, mix_down  # noqa: E402


def _tone(rate: int, seconds: float, hz: float, amp: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * hz * t)


@pytest.fixture(scope="module")
def stereo_int16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.7 s of 22050 Hz stereo int16 PCM with different tones per channel."""
    path = tmp_path_factory.mktemp("wav") / "stereo.wav"
    left, right = _tone(22050, 0.7, 440, 0.5), _tone(22050, 0.7, 1000, 0.25)
    sf.write(path, np.stack([left, right], axis=1), 22050, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def mono_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.0 s of 16 kHz mono float32."""
    path = tmp_path_factory.mktemp("wav") / "mono.wav"
    sf.write(path, _tone(16000, 1.0, 300, 0.8).astype(np.float32), 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("name, rate, frames", [("stereo_int16", 22050, 15434), ("mono_float", 16000, 16000)])
def test_chunks_cover_the_file_as_float32_mono(request: pytest.FixtureRequest, name: str, rate: int,
                                               frames: int) -> None:
    path = request.getfixturevalue(name)
    assert sf.info(str(path)).frames == frames
    with WavFileSource(path, pace=False, chunk_ms=20.0) as src:
        info = src.info
        chunks = list(src)
    n = chunk_samples(rate, 20.0)
    assert info.modality == "speech" and info.rate == rate
    assert all(c.data.dtype == np.float32 and c.data.ndim == 1 for c in chunks)
    assert [c.data.size for c in chunks[:-1]] == [n] * (len(chunks) - 1) and 0 < chunks[-1].data.size <= n
    assert sum(c.data.size for c in chunks) == frames
    assert [c.meta["sample_index"] for c in chunks] == list(range(0, frames, n))
    expected = sf.read(path, dtype="float64", always_2d=True)[0].mean(axis=1)
    np.testing.assert_allclose(np.concatenate([c.data for c in chunks]), expected, rtol=0, atol=1e-7)
    # Unpaced: stamped with the file's clock (newest sample of each chunk).
    assert chunks[-1].t_ns == round((frames - 1) * 1e9 / rate)
    assert chunks[-1].meta["device_time"] == pytest.approx((frames - 1) / rate)


def test_pacing_takes_the_file_duration(mono_float: Path) -> None:
    start_ns = time.monotonic_ns()
    with WavFileSource(mono_float, pace=True, chunk_ms=50.0) as src:
        chunks = []
        for chunk in src:
            chunks.append(chunk)
            assert chunk.t_ns <= time.monotonic_ns()  # never delivered before it could have been captured
    elapsed = (time.monotonic_ns() - start_ns) / 1e9
    assert 0.95 < elapsed < 1.3
    stamps = [c.t_ns for c in chunks]
    assert all(b - a == pytest.approx(0.05e9, abs=1e5) for a, b in zip(stamps, stamps[1:]))


def test_unpaced_is_fast(mono_float: Path) -> None:
    start = time.monotonic()
    with WavFileSource(mono_float, pace=False) as src:
        assert sum(c.data.size for c in src) == 16000
    assert time.monotonic() - start < 0.3


def test_close_from_another_thread_ends_a_paced_iteration(mono_float: Path) -> None:
    with WavFileSource(mono_float, pace=True, chunk_ms=100.0) as src:
        threading.Timer(0.25, src.close).start()
        start = time.monotonic()
        got = list(src)
    assert time.monotonic() - start < 0.5 and 1 <= len(got) <= 3


def test_missing_or_unreadable_file_is_a_sensor_error(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="no such file"):
        WavFileSource(tmp_path / "absent.wav").open()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a sound file at all")
    with pytest.raises(SensorError, match="junk.wav"):
        WavFileSource(junk).open()


def test_mix_down_handles_a_tail_shorter_than_its_channel_count() -> None:
    tail = np.array([[1000, -1000, 3000, 0]], dtype=np.int16)  # one frame, four channels
    np.testing.assert_allclose(mix_down(tail), [3000 / 4 / 32768])


def test_speech_source_picks_the_file_when_configured(mono_float: Path) -> None:
    source = create_source("speech", "wav", MicrophoneConfig(file=mono_float, chunk_ms=40.0))
    assert isinstance(source, WavFileSource) and source.pace and source.chunk_ms == 40.0


def test_wav_kind_without_a_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected a sound file path"):
        create_source("speech", "wav", MicrophoneConfig())


def test_reader_hands_out_consecutive_blocks_until_closed(stereo_int16: Path) -> None:
    with SoundFileReader(stereo_int16) as reader:
        assert (reader.rate, reader.channels, reader.subtype, reader.frames) == (22050, 2, "PCM_16", 15434)
        first, samples = reader.read(1000)
        assert first == 0 and samples.shape == (1000,) and samples.dtype == np.float32
        assert [start for start, _ in reader.chunks(5000)] == [1000, 6000, 11000]
        assert reader.position == 15434 and reader.read(10) is None  # the end of the file
    assert reader.read(10) is None  # closed


def test_bad_float_samples_are_a_sensor_error_naming_the_position(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    data = np.zeros(1000, np.float32)
    data[700] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    with SoundFileReader(path, name="audio x") as reader:
        assert reader.read(500)[0] == 0
        with pytest.raises(SensorError, match=r"^audio x: bad samples at sample 500 \(0\.031 s\): .*NaN"):
            reader.read(500)


@pytest.mark.parametrize(("rate", "ok"), [(3, False), (3999, False), (4000, True), (384000, True), (384001, False)])
def test_sample_rates_outside_4000_to_384000_are_refused_at_open(tmp_path: Path, rate: int, ok: bool) -> None:
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(max(rate // 10, 3), np.float32), rate)
    if ok:
        with SoundFileReader(path) as reader:
            assert reader.rate == rate
        return
    for open_it in (lambda: SoundFileReader(path), lambda: WavFileSource(path, pace=False).open()):
        with pytest.raises(SensorError, match=f"sample rate {rate} Hz, expected 4000..384000 Hz") as info:
            open_it()
        assert "\n" not in str(info.value)
