"""The shared band-limited resampler (edge_mer.preprocess.resample) used by speech and EEG."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from edge_mer.errors import InputError
from edge_mer.preprocess.resample import check_rate, lowpass, resample, resample_ratio


def _tone(freq: float, rate: float, seconds: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)


def _peak_hz(x: np.ndarray, rate: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


# --------------------------------------------------------------------------- speech rates

def test_resample_keeps_frequency_and_amplitude_of_1khz() -> None:
    y = resample(_tone(1000.0, 22050), 22050, 16000)
    assert y.shape == (32000,) and y.dtype == np.float64
    middle = y[4000:-4000]  # away from the filter's edge transients
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    peak_hz = np.fft.rfftfreq(middle.size, 1 / 16000)[spectrum.argmax()]
    assert abs(peak_hz - 1000.0) <= 16000 / middle.size  # within one FFT bin
    assert np.sqrt(2 * np.mean(middle ** 2)) == pytest.approx(0.5, rel=2e-3)


@pytest.mark.parametrize("freq", [8100.0, 8500.0, 9000.0, 10000.0])
def test_resample_removes_tones_above_new_nyquist(freq: float) -> None:
    """22,050 -> 16,000 Hz: a tone above 8 kHz would alias to 16 kHz - f; it must be < -80 dB.

    Measured on the steady state: the first and last 1,000 output samples hold
    the (in-band, legitimate) transient of the tone switching on and off.
    """
    x = _tone(freq, 22050)
    y = resample(x, 22050, 16000)[1000:-1000]
    ratio_db = 20 * np.log10(np.sqrt(np.mean(y ** 2)) / np.sqrt(np.mean(x ** 2)))
    assert ratio_db < -80.0


@pytest.mark.parametrize("orig,target,n", [(22050, 16000, 22051), (48000, 16000, 48000),
                                           (44100, 16000, 1000), (8000, 16000, 333)])
def test_resample_never_drops_samples(orig: int, target: int, n: int) -> None:
    y = resample(np.ones(n), orig, target)
    assert y.size == -(-n * target // orig)  # ceil(n * target / orig)


def test_resample_same_rate_is_a_copy() -> None:
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    y = resample(x, 16000, 16000)
    assert y.dtype == np.float64 and np.array_equal(y, x) and not np.shares_memory(x, y)


# --------------------------------------------------------------------------- EEG rates, [channels, samples]

def test_resample_keeps_a_10_hz_tone_at_10_hz() -> None:
    x = _tone(10.0, 250, 4.0, amplitude=1.0)[np.newaxis]
    y = resample(x, 250, 128, padtype="line")
    assert y.shape == (1, 512)
    assert _peak_hz(y[0], 128) == pytest.approx(10.0, abs=0.25)
    assert np.std(y[0, 64:-64]) == pytest.approx(np.std(x[0]), rel=0.02)


def test_resample_is_band_limited() -> None:
    x = _tone(100.0, 250, 4.0, amplitude=1.0)[np.newaxis]  # above the new Nyquist (64 Hz): must not alias to 28 Hz
    y = resample(x, 250, 128, padtype="line")
    assert np.std(y[0, 64:-64]) < 0.01


def test_resample_accepts_float_and_numpy_rates() -> None:
    x = _tone(10.0, 256, amplitude=1.0)[np.newaxis]
    assert resample(x, np.int64(256), 128).shape == (1, 256)
    assert np.array_equal(resample(x, 256.0, 128), resample(x, 256, 128))


def test_fractional_rates_use_a_bounded_ratio() -> None:
    assert resample_ratio(250.4, 128) == (160, 313)
    up, down = resample_ratio(127.9871, 128)
    assert max(up, down) <= 1000 and abs(127.9871 * up / down / 128 - 1) < 1e-3
    x = _tone(10.0, 250.4, 4.0, amplitude=1.0)[np.newaxis]
    assert _peak_hz(resample(x, 250.4, 128, padtype="line")[0], 128) == pytest.approx(10.0, abs=0.25)


def test_resample_works_along_any_axis() -> None:
    x = np.random.default_rng(0).standard_normal((3, 500))
    expected = resample(x, 250, 128)
    np.testing.assert_array_equal(resample(x.T, 250, 128, axis=0), expected.T)
    np.testing.assert_array_equal(resample(x, 250, 128, axis=1), expected)
    for rate in (250, 128):  # always a new C-contiguous array, also from a transposed view
        y = resample(x.T, rate, 128, axis=0)
        assert y.flags.c_contiguous and not np.shares_memory(y, x)


# --------------------------------------------------------------------------- filter and errors

@pytest.mark.parametrize("up,down", [(320, 441), (1, 3), (64, 125), (2, 1)])
def test_lowpass_has_the_documented_response(up: int, down: int) -> None:
    """Within 0.13 dB to 0.9 x the lower Nyquist rate, about -10 dB at 0.95 x, <= -86 dB from Nyquist up."""
    taps = lowpass(up, down)
    assert taps.size == 96 * max(up, down) + 1 and not taps.flags.writeable
    assert lowpass(up, down) is taps  # designed once per ratio
    w, h = signal.freqz(taps, worN=2 ** 18)
    rel = w / np.pi * max(up, down)  # frequency / lower Nyquist rate
    db = 20 * np.log10(np.abs(h) + 1e-300)
    assert np.all(np.abs(db[rel <= 0.9]) < 0.13)
    assert db[np.argmin(np.abs(rel - 0.95))] == pytest.approx(-10.3, abs=0.5)
    assert db[rel >= 1.0].max() < -86.0


@pytest.mark.parametrize("rate", [0, -16000, True, "16000", None, float("nan"), float("inf")])
def test_resample_refuses_bad_rates(rate: object) -> None:
    with pytest.raises(InputError, match="orig_rate"):
        resample(np.zeros(100), rate, 16000)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, 16000.0, True, np.float64(128)])
def test_target_rate_must_be_a_positive_integer(rate: object) -> None:
    with pytest.raises(InputError, match="target_rate"):
        resample(np.zeros(100), 16000, rate)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="sample_rate"):
        check_rate("sample_rate", rate)


@pytest.mark.parametrize("x,kwargs,message", [
    (np.zeros(0), {}, "non-empty"), (np.array(1.0), {}, "non-empty"), (np.zeros(4, complex), {}, "complex128"),
    (np.zeros((2, 4)), {"axis": 2}, "axis=2"), (np.zeros(4), {"padtype": "reflect"}, "padtype='reflect'"),
])
def test_resample_refuses_bad_arrays_and_options(x: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resample(x, 250, 128, **kwargs)
