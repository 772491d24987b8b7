"""Closed-form replacements of library calls on the hot path: EEG linear detrend and the log-mel matrix product.

``detrend_linear`` replaced ``scipy.signal.detrend(type="linear")``; the log-mel front end now multiplies
``(S @ mel.T).T`` instead of ``mel @ S.T``. Both must give the same numbers as the straightforward forms.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from edge_mer.preprocess.audio import AudioParams, log_mel, mel_filterbank
from edge_mer.preprocess.eeg import detrend_linear


def _trended(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """EEG-like rows: noise and alpha on top of per-row DC offsets (hundreds of uV) and linear drifts."""
    t = np.arange(n) / 250.0
    offsets = rng.uniform(-800.0, 800.0, (rows, 1))
    slopes = rng.uniform(-50.0, 50.0, (rows, 1))  # uV per second
    return offsets + slopes * t + rng.normal(0.0, 15.0, (rows, n)) + 20.0 * np.sin(2 * np.pi * 10.0 * t)


@pytest.mark.parametrize("rows, n", [(10, 1000), (16, 1000), (1, 500), (3, 3), (8, 257)])
def test_detrend_linear_equals_scipy(rows: int, n: int) -> None:
    x = _trended(np.random.default_rng(rows * 1000 + n), rows, n)
    ours = detrend_linear(x)
    assert ours.shape == x.shape and ours.dtype == np.float64
    np.testing.assert_allclose(ours, signal.detrend(x, axis=1, type="linear"), rtol=0, atol=1e-9)


def test_detrend_linear_removes_an_exact_line_and_keeps_what_is_orthogonal_to_it() -> None:
    n = 400
    t = np.arange(n, dtype=np.float64)
    line = 3.0 - 0.25 * t
    wave = np.cos(2 * np.pi * 5 * (t - t.mean()) / n)  # even about the centre: orthogonal to 1 and t
    x = np.stack([line, line + wave])
    out = detrend_linear(x)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(out[1], wave - wave.mean(), atol=1e-9)


def test_detrend_linear_accepts_float32_and_ints_and_leaves_the_input_alone() -> None:
    rng = np.random.default_rng(7)
    x32 = _trended(rng, 4, 300).astype(np.float32)
    before = x32.copy()
    out = detrend_linear(x32)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(x32, before)
    np.testing.assert_allclose(out, signal.detrend(x32.astype(np.float64), axis=1, type="linear"), atol=1e-9)
    ints = np.arange(20, dtype=np.int64).reshape(2, 10) ** 2
    np.testing.assert_allclose(detrend_linear(ints), signal.detrend(ints.astype(np.float64), axis=1), atol=1e-9)


def test_detrend_linear_one_sample_rows_become_zero() -> None:
    x = np.array([[5.0], [-3.25], [1e4]])
    out = detrend_linear(x)  # a single point lies on every line through it: nothing is left
    assert out.shape == (3, 1)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_allclose(out, signal.detrend(x, axis=1, type="linear"), atol=1e-9)


def test_detrend_linear_two_sample_rows_become_zero() -> None:
    x = np.array([[5.0, 7.0], [-3.0, -3.0], [1e3, -1e3]])
    out = detrend_linear(x)  # two points define the line exactly
    assert out.shape == (3, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.0, atol=1e-9)
    np.testing.assert_allclose(out, signal.detrend(x, axis=1, type="linear"), atol=1e-9)


# ----------------------------------------------------------------------------- log-mel matrix product


def _reference_db(x: np.ndarray, p: AudioParams) -> np.ndarray:
    """log-mel in dB the textbook way: centred frames, windowed |rfft|^2, ``mel @ power.T``, 10 log10."""
    padded = np.pad(x.astype(np.float64), p.n_fft // 2, mode=p.pad_mode)
    frames = sliding_window_view(padded, p.n_fft)[::p.hop_length]
    window = np.zeros(p.n_fft)
    left = (p.n_fft - p.win_length) // 2
    window[left:left + p.win_length] = signal.get_window(p.window, p.win_length, fftbins=True)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [frames, bins]
    mel = mel_filterbank(p) @ power.T  # [n_mels, frames]
    return 10.0 * np.log10(np.maximum(mel, p.amin))


@pytest.mark.parametrize("kwargs", [{}, {"n_mels": 40, "n_fft": 400, "hop_length": 100},
                                    {"sample_rate": 22050, "n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                     "fmax": 11025.0, "n_mels": 128}])
def test_log_mel_equals_mel_times_power_spectrogram(kwargs: dict) -> None:
    p = AudioParams(**kwargs)
    rng = np.random.default_rng(3)
    n = int(1.5 * p.sample_rate)
    t = np.arange(n) / p.sample_rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t * (1 + t))
         + 0.05 * rng.standard_normal(n)).astype(np.float32)
    ours = log_mel(x, p)
    reference = _reference_db(x, p)
    assert ours.shape == (1, p.n_mels, 1 + n // p.hop_length) == (1,) + reference.shape
    assert ours.dtype == np.float32
    # float32 output of dB values of tens: a few ulp.
    np.testing.assert_allclose(ours[0], reference, rtol=0, atol=1e-4)


def test_log_mel_reference_sees_the_tones_in_the_right_bands() -> None:
    """The reference itself is right: a 1 kHz tone's energy lands in the mel band centred nearest 1 kHz."""
    p = AudioParams()
    t = np.arange(p.sample_rate) / p.sample_rate
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    db = log_mel(x, p)[0]
    weights = mel_filterbank(p)
    freqs = np.fft.rfftfreq(p.n_fft, 1.0 / p.sample_rate)
    peak_band = int(np.argmax(weights[:, np.argmin(np.abs(freqs - 1000.0))]))
    assert int(np.argmax(db.mean(axis=1))) == peak_band
    np.testing.assert_allclose(db, _reference_db(x, p), atol=1e-4)
