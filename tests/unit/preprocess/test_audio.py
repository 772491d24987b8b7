"""Speech preprocessing (edge_mer.preprocess.audio) against librosa as an oracle.

librosa is a test-only dependency: the package computes the same features with
numpy and scipy.  Oracle comparisons are stated per test:
* power mel: ``np.testing.assert_allclose(10 ** (ours_db / 10), max(S_librosa, amin), rtol=1e-3)``
* dB values: ``max |ours_db - librosa_db| / (max - min of librosa_db) < 1e-3``
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_mer.config import from_dict, to_dict
from edge_mer.errors import ConfigError, InputError
from edge_mer.preprocess.audio import (
    AudioParams,
    AudioPreprocessor,
    log_mel,
    loudness_gate,
    mel_filterbank,
    num_frames,
    peak_frame_dbfs,
    resample,
    to_mono,
)
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid

librosa = pytest.importorskip("librosa")
sf = pytest.importorskip("soundfile")

CLIPS = ("08a01Ab.wav", "11b03Wb.wav", "14a01Ea.wav")  # fear, anger, disgust; 22,050 Hz int16


def _clip_path(shared_dir: Path, name: str) -> Path:
    path = shared_dir / "data" / "speech" / "emodb" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(params=CLIPS)
def clip(request: pytest.FixtureRequest, shared_dir: Path) -> tuple[np.ndarray, int]:
    """A real EMO-DB clip as soundfile reads it (float64 in [-1, 1)) and its rate."""
    samples, rate = sf.read(_clip_path(shared_dir, request.param))
    return samples, rate


def _at_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    return resample(to_mono(samples), rate, 16000)


def _librosa_power_mel(y: np.ndarray, p: AudioParams) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=y, sr=p.sample_rate, n_fft=p.n_fft, win_length=p.win_length, hop_length=p.hop_length,
        window=p.window, center=p.center, pad_mode=p.pad_mode, power=p.power, n_mels=p.n_mels,
        fmin=p.fmin, fmax=p.fmax, htk=p.htk, norm=p.mel_norm)


def _relative_max_diff(ours: np.ndarray, oracle: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.float64) - oracle).max() / (oracle.max() - oracle.min()))


# --------------------------------------------------------------------------- mel filterbank

@pytest.mark.parametrize("kwargs", [
    {},
    {"htk": True},
    {"mel_norm": None},
    {"fmin": 0.0, "n_mels": 40},
    {"sample_rate": 22050, "n_fft": 1024, "win_length": 1024, "hop_length": 256, "n_mels": 128,
     "fmax": 11025.0},
])
def test_filterbank_matches_librosa(kwargs: dict) -> None:
    p = AudioParams(**kwargs)
    oracle = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin,
                                 fmax=p.fmax, htk=p.htk, norm=p.mel_norm, dtype=np.float64)
    ours = mel_filterbank(p)
    assert ours.shape == (p.n_mels, 1 + p.n_fft // 2)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-15)


def test_filterbank_is_cached_and_read_only() -> None:
    p = AudioParams()
    first = mel_filterbank(p)
    assert mel_filterbank(AudioParams()) is first
    assert mel_filterbank(dataclasses.replace(p, cmvn="utterance")) is first  # only mel fields matter
    with pytest.raises(ValueError):
        first[0, 0] = 1.0


# --------------------------------------------------------------------------- log-mel vs librosa

@pytest.mark.shared
@pytest.mark.parametrize("kwargs", [
    {},
    {"pad_mode": "constant"},
    {"center": False},
    {"htk": True, "mel_norm": None, "fmin": 0.0},
])
def test_log_mel_db_matches_librosa(clip: tuple[np.ndarray, int], kwargs: dict) -> None:
    p = AudioParams(**kwargs)
    y = _at_16k(*clip)
    power = _librosa_power_mel(y, p)
    oracle_db = librosa.power_to_db(power, ref=1.0, amin=p.amin, top_db=None)
    ours = log_mel(y, p)
    assert ours.shape == (1, p.n_mels, power.shape[1]) and ours.dtype == np.float32
    np.testing.assert_allclose(10.0 ** (ours[0].astype(np.float64) / 10.0), np.maximum(power, p.amin),
                               rtol=1e-3)
    assert _relative_max_diff(ours[0], oracle_db) < 1e-3


@pytest.mark.shared
def test_log_mel_top_db_matches_librosa(clip: tuple[np.ndarray, int]) -> None:
    p = AudioParams(top_db=60.0)
    y = _at_16k(*clip)
    oracle_db = librosa.power_to_db(_librosa_power_mel(y, p), ref=1.0, amin=p.amin, top_db=60.0)
    ours = log_mel(y, p)[0]
    assert ours.max() - ours.min() == pytest.approx(60.0, abs=1e-4)
    assert _relative_max_diff(ours, oracle_db) < 1e-3


@pytest.mark.shared
def test_log_mel_ln_matches_librosa(clip: tuple[np.ndarray, int]) -> None:
    p = AudioParams(log="ln", log_offset=1e-6)
    y = _at_16k(*clip)
    oracle = np.log(_librosa_power_mel(y, p) + 1e-6)
    assert _relative_max_diff(log_mel(y, p)[0], oracle) < 1e-3


@pytest.mark.shared
def test_deltas_match_librosa_delta(clip: tuple[np.ndarray, int]) -> None:
    """Channel 1 = librosa.feature.delta(logmel, width=9, order=1), channel 2 = order=2."""
    p = AudioParams(deltas=2)
    y = _at_16k(*clip)
    logmel = librosa.power_to_db(_librosa_power_mel(y, p), ref=1.0, amin=p.amin, top_db=None)
    ours = log_mel(y, p)
    assert ours.shape == (3, p.n_mels, logmel.shape[1])
    assert _relative_max_diff(ours[0], logmel) < 1e-3
    for order in (1, 2):
        oracle = librosa.feature.delta(logmel, width=p.delta_width, order=order, axis=-1, mode="interp")
        assert _relative_max_diff(ours[order], oracle) < 1e-3


@pytest.mark.shared
def test_cmvn_normalises_each_channel_and_band(clip: tuple[np.ndarray, int]) -> None:
    y = _at_16k(*clip)
    raw = log_mel(y, AudioParams(deltas=1)).astype(np.float64)
    normed = log_mel(y, AudioParams(deltas=1, cmvn="utterance"))
    np.testing.assert_allclose(normed.mean(axis=-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(normed.std(axis=-1), 1.0, atol=1e-4)
    expected = (raw - raw.mean(axis=-1, keepdims=True)) / raw.std(axis=-1, keepdims=True)
    np.testing.assert_allclose(normed, expected, atol=1e-3)


# --------------------------------------------------------------------------- helpers

def _tone(freq: float, rate: int, seconds: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


# --------------------------------------------------------------------------- to_mono

def test_to_mono_scales_pcm() -> None:
    np.testing.assert_array_equal(to_mono(np.array([-32768, 0, 16384], dtype=np.int16)), [-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(to_mono(np.array([-2 ** 31, 2 ** 30], dtype=np.int32)), [-1.0, 0.5])
    np.testing.assert_array_equal(to_mono(np.array([0, 128, 192], dtype=np.uint8)), [-1.0, 0.0, 0.5])
    floats = np.array([0.25, -2.0], dtype=np.float64)
    out = to_mono(floats)
    assert out.dtype == np.float32 and np.array_equal(out, floats)  # float values are kept, not rescaled


def test_to_mono_averages_interleaved_channels() -> None:
    stereo = np.array([[1000, 3000], [-2000, 2000], [0, 0]], dtype=np.int16)  # [n, channels]
    np.testing.assert_array_equal(to_mono(stereo), np.array([2000, 0, 0]) / 32768)
    # PyAudio delivers interleaved bytes: reshape(-1, channels) gives the same layout.
    np.testing.assert_array_equal(to_mono(np.frombuffer(stereo.tobytes(), np.int16).reshape(-1, 2)),
                                  to_mono(stereo))


@pytest.mark.parametrize("samples,message", [
    (np.zeros(0, dtype=np.int16), "empty"),
    (np.zeros((0, 2), dtype=np.float32), "empty"),
    (np.array([0.0, np.nan, 0.1]), "NaN"),
    (np.array([0.0, np.inf], dtype=np.float32), "NaN/Inf"),
    (np.zeros(10, dtype=np.complex64), "complex64"),
    (np.array([0.1, 0.2], dtype=object), "object"),
    (np.zeros(10, dtype=bool), "bool"),
    (np.zeros(10, dtype=np.int64), "int64"),
    (np.zeros((2, 1000), dtype=np.int16), r"\[channels, n\]"),
    (np.zeros((10, 2, 2), dtype=np.float32), "shape"),
])
def test_to_mono_refuses_bad_input(samples: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        to_mono(samples)


# --------------------------------------------------------------------------- loudness gate

def test_peak_frame_dbfs_of_known_levels() -> None:
    assert peak_frame_dbfs(_tone(1000.0, 16000, amplitude=1.0), 16000) == pytest.approx(-3.01, abs=0.01)
    assert peak_frame_dbfs(np.full(16000, 0.01), 16000) == pytest.approx(-40.0, abs=1e-9)


def test_silence_is_invalid() -> None:
    pre = AudioPreprocessor()
    assert pre.process(np.zeros(16000, dtype=np.int16), 16000) == Invalid(ReasonCode.SILENCE)
    quiet = np.random.default_rng(0).normal(0.0, 1e-4, 32000).astype(np.float32)  # about -80 dBFS
    assert pre.process(quiet, 16000) == Invalid(ReasonCode.SILENCE)
    assert pre.process(quiet * 1000, 16000).shape == (1, 64, 201)  # about -20 dBFS: speech-loud


def test_gate_threshold_and_disable() -> None:
    p = AudioParams()
    assert loudness_gate(_tone(300.0, 16000, amplitude=0.01 * np.sqrt(2)), p) is None  # -40 dBFS
    assert loudness_gate(_tone(300.0, 16000, amplitude=0.003 * np.sqrt(2)), p) == "silence"  # -50.5
    ungated = AudioPreprocessor(AudioParams(vad_threshold_db=None)).process(np.zeros(16000), 16000)
    assert isinstance(ungated, np.ndarray)
    np.testing.assert_allclose(ungated, -100.0)  # 10*log10(amin)


@pytest.mark.shared
def test_real_clip_is_model_input(clip: tuple[np.ndarray, int]) -> None:
    samples, rate = clip
    pre = AudioPreprocessor()
    out = pre.process(samples, rate)
    assert isinstance(out, np.ndarray), out
    assert out.shape == (1, 64, 201) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, log_mel(_at_16k(samples, rate), pre.params))


# --------------------------------------------------------------------------- lengths and errors

def test_too_short_is_invalid_and_time_axis_is_dynamic() -> None:
    pre = AudioPreprocessor(AudioParams(deltas=2))
    loud = _tone(440.0, 16000, seconds=3.0, amplitude=0.3)
    assert pre.process(loud[:15999], 16000) == Invalid(ReasonCode.TOO_SHORT)
    assert pre.process(loud[:8000], 16000) == Invalid(ReasonCode.TOO_SHORT)
    for n in (16000, 21920, 32000, 48000):
        out = pre.process(loud[:n], 16000)
        assert out.shape == pre.output_shape(n) == (3, 64, 1 + n // 160)


def test_process_refuses_malformed_input() -> None:
    pre = AudioPreprocessor()
    with pytest.raises(InputError, match="empty"):
        pre.process(np.array([], dtype=np.float32), 16000)
    with pytest.raises(InputError, match="NaN"):
        pre.process(np.full(16000, np.nan, dtype=np.float32), 16000)
    with pytest.raises(InputError, match="complex128"):
        pre.process(np.zeros(16000, dtype=complex), 16000)
    for rate in (0, -1, 16000.0, 16000.5, None):  # the resampler takes 16000.0; process does not
        with pytest.raises(InputError, match="sample_rate"):
            pre.process(np.zeros(16000, dtype=np.int16), rate)  # type: ignore[arg-type]


def test_log_mel_refuses_unusable_audio() -> None:
    p = AudioParams(deltas=1)
    with pytest.raises(InputError, match="1-D"):
        log_mel(np.zeros((16000, 2)), p)
    with pytest.raises(InputError, match="n_fft=512"):
        log_mel(np.zeros(100), p)
    with pytest.raises(InputError, match="delta_width=9"):
        log_mel(np.zeros(1000), p)  # 7 frames
    with pytest.raises(InputError, match="NaN"):
        log_mel(np.full(16000, np.inf), p)


# --------------------------------------------------------------------------- determinism

@pytest.mark.shared
def test_same_input_gives_identical_bytes(clip: tuple[np.ndarray, int]) -> None:
    samples, rate = clip
    params = AudioParams(deltas=2, cmvn="utterance")
    first = AudioPreprocessor(params).process(samples, rate)
    again = AudioPreprocessor(params).process(samples.copy(), rate)
    assert first.tobytes() == again.tobytes()


@pytest.mark.shared
def test_microphone_and_wav_paths_agree_bytewise(shared_dir: Path) -> None:
    """int16 PCM (as PyAudio delivers) and soundfile's float64 of the same WAV give the same bytes."""
    path = _clip_path(shared_dir, CLIPS[0])
    as_int16, rate = sf.read(path, dtype="int16")
    as_float64, _ = sf.read(path)
    stereo = np.repeat(as_int16[:, None], 2, axis=1)  # a 2-channel device with the same signal
    pre = AudioPreprocessor()
    reference = pre.process(as_int16, rate).tobytes()
    assert pre.process(as_float64, rate).tobytes() == reference
    assert pre.process(stereo, rate).tobytes() == reference


# --------------------------------------------------------------------------- parameters

def test_params_from_dict_and_back() -> None:
    params = from_dict(AudioParams, {"n_mels": 40, "fmin": 0, "mel_norm": None, "deltas": 2,
                                     "cmvn": "utterance", "vad_threshold_db": None, "top_db": 80})
    assert params.fmin == 0.0 and isinstance(params.fmin, float) and params.mel_norm is None
    assert params.channels == 3
    assert from_dict(AudioParams, to_dict(params)) == params
    assert hash(AudioParams(fmin=20)) == hash(AudioParams())
    assert num_frames(16000, params) == 101


@pytest.mark.parametrize("data,field", [
    ({"fmax": 9000.0}, "fmax"),
    ({"sample_rate": 22050, "fmax": 11026.0}, "fmax"),
    ({"fmin": 8000.0}, "fmax"),
    ({"n_fft": 256}, "win_length"),
    ({"win_length": 600}, "win_length"),
    ({"hop_length": -160}, "hop_length"),
    ({"hop_length": 0}, "hop_length"),
    ({"n_mels": 0}, "n_mels"),
    ({"n_mels": 256}, "n_mels"),  # empty bands at n_fft=512
    ({"power": 0.0}, "power"),
    ({"amin": 0.0}, "amin"),
    ({"top_db": -1.0}, "top_db"),
    ({"delta_width": 4}, "delta_width"),
    ({"min_seconds": 0.0}, "min_seconds"),
    ({"min_seconds": 0.01}, "min_seconds"),  # 160 samples < n_fft
    ({"deltas": 1, "min_seconds": 0.04}, "min_seconds"),  # 5 frames < delta_width
    ({"vad_threshold_db": 3.0}, "vad_threshold_db"),
    ({"deltas": 3}, "deltas"),
    ({"cmvn": "global"}, "cmvn"),
    ({"window": "rect"}, "window"),
    ({"log": "log10"}, "log"),
    ({"n_fft": "512"}, "n_fft"),
    ({"center": 1}, "center"),
    ({"fmin": float("nan")}, "fmin"),
    ({"hop": 160}, "hop"),
])
def test_bad_params_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        from_dict(AudioParams, data)


def test_bad_params_direct_construction() -> None:
    with pytest.raises(ConfigError, match=r"fmax=9000.0: expected fmin=20.0 < fmax <= sample_rate/2=8000.0"):
        AudioParams(fmax=9000.0)
    with pytest.raises(ConfigError, match=r"win_length=1024.*n_fft=512"):
        AudioParams(win_length=1024)
    with pytest.raises(ConfigError, match=r"hop_length=-1"):
        AudioParams(hop_length=-1)
    with pytest.raises(ConfigError, match="AudioParams"):
        AudioPreprocessor({"n_mels": 64})  # type: ignore[arg-type]


def test_float16_output() -> None:
    out = AudioPreprocessor(AudioParams(dtype="float16")).process(_tone(440.0, 16000, amplitude=0.3), 16000)
    assert out.dtype == np.float16 and out.shape == (1, 64, 201)
