"""EEG preprocessing: parameters, channel mapping, quality gate, filtering and features."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from scipy import signal

from edge_mer.config import from_dict, to_dict
from edge_mer.errors import ConfigError, InputError
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import (
    EegParams,
    EegPreprocessor,
    check_quality,
    select_channels,
    taper,
)

SYNTHETIC = ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7", "F3", "F4", "F8")
CYTON = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
# Order of Coordinates.locs in the GU data set (../shared/README.md, data/eeg/gu).
GU_CHANNELS = tuple(
    "Cz Fz Fp1 F7 F3 FC1 C3 FC5 FT9 T7 CP5 CP1 P3 P7 PO9 O1 Pz Oz O2 PO10 P8 P4 CP2 CP6 T8 FT10 FC6 C4 FC2 F4 F8 "
    "Fp2".split()
)
BAND_NAMES = ("delta", "theta", "alpha", "beta", "gamma")


def tones(freqs: list[float], rate: float, seconds: float, amp: float = 20.0, noise: float = 1.0,
          seed: int = 0) -> np.ndarray:
    """One sine per row (µV-like amplitudes) plus a little white noise."""
    t = np.arange(int(round(rate * seconds))) / rate
    rng = np.random.default_rng(seed)
    x = np.stack([amp * np.sin(2 * np.pi * f * t + k) for k, f in enumerate(freqs)])
    return x + noise * rng.standard_normal(x.shape)


def eeg_block(names: tuple[str, ...], rate: float = 250, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """A plausible multi-channel block: 10 Hz alpha on every channel, noise and a DC offset."""
    return tones([10.0] * len(names), rate, seconds, noise=5.0, seed=seed) + 300.0


# ----------------------------------------------------------------------------- parameters

def test_importing_the_module_does_not_load_brainflow() -> None:
    code = "import sys, edge_mer.preprocess.eeg; print('brainflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_params_defaults_and_frozen() -> None:
    p = EegParams(channels=CYTON)
    assert p.sample_rate == 128 and p.window_s == 4.0 and p.feature == "de" and p.standardize
    assert tuple(name for name, _, _ in p.bands) == BAND_NAMES
    assert p.max_abs is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.sample_rate = 256  # type: ignore[misc]


def test_params_from_dict_round_trip() -> None:
    raw = {"channels": list(CYTON), "sample_rate": 128, "window_s": 2, "notch_hz": 60,
           "bandpass": [1, 40], "bands": [["theta", 4, 8], ["alpha", 8, 13], ["beta", 13, 30]],
           "feature": "log_power", "max_abs": 500, "max_bad_channels": 1}
    p = from_dict(EegParams, raw)
    assert p.channels == CYTON
    assert p.bands == (("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0))
    assert p.bandpass == (1.0, 40.0) and p.window_s == 2.0 and p.max_abs == 500.0
    assert from_dict(EegParams, to_dict(p)) == p


@pytest.mark.parametrize(
    ("changes", "field", "shown"),
    [
        ({"bands": (("gamma", 30.0, 70.0),), "bandpass": (1.0, 60.0)}, "bands[0]", "70"),  # above Nyquist 64
        ({"bands": (("slow", 0.5, 4.0),)}, "bands[0]", "0.5"),  # outside the band-pass
        ({"bandpass": (45.0, 1.0)}, "bandpass", "45"),
        ({"bandpass": (1.0, 64.0)}, "bandpass", "64"),
        ({"notch_hz": 63.0}, "notch_hz", "63"),
        ({"filter_order": 9}, "filter_order", "9"),
        ({"sample_rate": 128.0}, "sample_rate", "128.0"),
        ({"window_s": 0.5}, "window_s", "0.5"),
        ({"max_abs": -1.0}, "max_abs", "-1"),
        ({"min_std": -1.0}, "min_std", "-1"),
        ({"max_run_s": 10.0}, "max_run_s", "10"),
        ({"max_bad_channels": 8}, "max_bad_channels", "8"),
        ({"channels": ("Fz", "fz")}, "channels", "Fz"),
        ({"channels": ()}, "channels", "()"),
        ({"feature": "psd"}, "feature", "psd"),
        ({"bands": (("a", 8.0, 13.0), ("a", 13.0, 30.0))}, "bands", "'a'"),
    ],
)
def test_bad_params_raise_config_error_naming_the_field(changes: dict, field: str, shown: str) -> None:
    kwargs = {"channels": CYTON, **changes}
    with pytest.raises(ConfigError) as info:
        EegParams(**kwargs)
    message = str(info.value)
    assert message.startswith(field), message
    assert shown in message and "\n" not in message


def test_from_dict_reports_bad_values_as_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^bands\[0\] 'gamma'.*Nyquist 32"):
        from_dict(EegParams, {"channels": ["Fz"], "sample_rate": 64, "bandpass": [1, 30], "notch_hz": 0,
                              "bands": [["gamma", 30, 40]]})
    with pytest.raises(ConfigError, match="feature"):
        from_dict(EegParams, {"channels": ["Fz"], "feature": "psd"})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(EegParams, {"channels": ["Fz"], "notch": 50})


def test_log_power_needs_bands_as_wide_as_the_welch_resolution() -> None:
    with pytest.raises(ConfigError, match=r"bands\[0\].*wide"):
        EegParams(channels=CYTON, feature="log_power", bands=(("narrow", 8.0, 8.5),))
    EegParams(channels=CYTON, feature="de", bands=(("narrow", 8.0, 8.5),))  # fine for DE


# ----------------------------------------------------------------------------- channel mapping

def test_select_channels_maps_rows_case_insensitively_in_model_order() -> None:
    source = ("O2", "fp1", "C4", "FP2", "o1", "P7", "c3", "P8", "EXG")
    data = np.arange(len(source))[:, None] * np.ones((1, 5))
    out = select_channels(data, source, CYTON)
    assert out.shape == (8, 5) and out.dtype == np.float64 and out.flags["C_CONTIGUOUS"]
    assert out[:, 0].tolist() == [1, 3, 6, 2, 5, 7, 4, 0]


def test_missing_channels_error_lists_every_missing_name_and_the_source() -> None:
    synthetic_board = ("Fz", "C3", "Cz", "C4", "Pz", "PO7", "Oz", "PO8", "F5", "F7", "F3", "F1", "F2", "F4",
                       "F6", "F8")
    with pytest.raises(InputError) as info:
        select_channels(np.zeros((16, 10)), synthetic_board, CYTON)
    message = str(info.value)
    lacking = message.split("(source has")[0]
    for name in ("Fp1", "Fp2", "P7", "P8", "O1", "O2"):
        assert name in lacking
    assert "C3" not in lacking and "C4" not in lacking
    assert "source has: Fz, C3, Cz, C4, Pz, PO7" in message


def test_select_channels_rejects_bad_shapes() -> None:
    with pytest.raises(InputError, match="transposed"):
        select_channels(np.zeros((100, 8)), CYTON, CYTON)
    with pytest.raises(InputError, match="n_channels, n_samples"):
        select_channels(np.zeros(8), CYTON, CYTON)
    with pytest.raises(InputError, match="more than once"):
        select_channels(np.zeros((3, 4)), ("Cz", "cz", "Fz"), ("Cz",))


# ----------------------------------------------------------------------------- quality gate

def test_clean_window_passes_quality() -> None:
    p = EegParams(channels=CYTON, max_abs=200.0)
    assert check_quality(eeg_block(CYTON), p, sample_rate=250) is None


@pytest.mark.parametrize(
    ("spoil", "channel", "words"),
    [
        (lambda x: x.__setitem__((2, 100), np.nan), "C3", "NaN"),
        (lambda x: x.__setitem__((3, slice(None)), 5.0), "C4", "flat"),
        (lambda x: x.__setitem__((5, slice(500, None)), 187500.0), "P8", "railed"),
        (lambda x: x.__setitem__((7, slice(None)), x[7] * 20), "O2", "max_abs"),
    ],
)
def test_bad_channel_makes_the_window_invalid(spoil, channel: str, words: str) -> None:
    p = EegParams(channels=CYTON, max_abs=200.0)
    x = eeg_block(CYTON)
    spoil(x)
    result = EegPreprocessor(p).process(x, CYTON, 250)
    assert isinstance(result, Invalid)
    assert channel in result.reason and words in result.reason
    assert check_quality(x, p, sample_rate=250) == result.reason


def test_amplitude_limit_is_off_by_default() -> None:
    x = eeg_block(CYTON) * 1000  # millivolt-scale: only a max_abs would object
    assert check_quality(x, EegParams(channels=CYTON), sample_rate=250) is None
    assert "max_abs" in check_quality(x, EegParams(channels=CYTON, max_abs=500.0), sample_rate=250)


def test_tolerated_bad_channel_is_filled_and_more_are_reported() -> None:
    x = eeg_block(CYTON)
    x[0, 10:20] = np.nan
    out = EegPreprocessor(EegParams(channels=CYTON, max_bad_channels=1)).process(x, CYTON, 250)
    assert isinstance(out, np.ndarray) and np.all(np.isfinite(out))
    x[4] = 0.0
    result = EegPreprocessor(EegParams(channels=CYTON, max_bad_channels=1)).process(x, CYTON, 250)
    assert isinstance(result, Invalid)
    assert "Fp1" in result.reason and "P7" in result.reason and "2 > max_bad_channels 1" in result.reason


def test_short_window_is_invalid() -> None:
    pre = EegPreprocessor(EegParams(channels=CYTON, window_s=4.0))
    assert pre.process(eeg_block(CYTON, seconds=3.9), CYTON, 250) == Invalid(ReasonCode.SHORT_WINDOW)


def test_bad_source_rate_is_an_input_error() -> None:
    pre = EegPreprocessor(EegParams(channels=CYTON))
    for rate in (0, -250, float("nan")):
        with pytest.raises(InputError, match="rate"):
            pre.process(eeg_block(CYTON), CYTON, rate)


# ----------------------------------------------------------------------------- signal processing

@pytest.mark.parametrize("feature", ["de", "log_power"])
@pytest.mark.parametrize("rate", [128, 250])
def test_each_tone_peaks_in_its_band(feature: str, rate: int) -> None:
    freqs = [2.5, 6.0, 10.0, 20.0, 38.0]  # delta, theta, alpha, beta, gamma
    names = ("Fz", "Cz", "Pz", "Oz", "C3")
    pre = EegPreprocessor(EegParams(channels=names, feature=feature))
    out = pre.process(tones(freqs, rate, 4.0), names, rate)
    assert isinstance(out, np.ndarray) and out.shape == (5, 5) and out.dtype == np.float32
    assert np.argmax(out, axis=1).tolist() == [0, 1, 2, 3, 4]


def test_de_of_a_10_hz_sine_is_largest_in_alpha_and_matches_theory() -> None:
    p = EegParams(channels=("Oz",), standardize=False)
    out = EegPreprocessor(p).process(tones([10.0], 128, 4.0, amp=1.0, noise=0.0), ("Oz",), 128)
    assert BAND_NAMES[int(np.argmax(out[0]))] == "alpha"
    # a unit sine has variance 1/2, scaled by the mean square of the edge taper
    w2 = float(np.mean(taper(np.ones((1, 512)), 128) ** 2))
    assert 0.9 < w2 < 0.95
    assert out[0, 2] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.5 * w2), abs=0.01)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise of unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    return x / x.std()


def test_window_features_agree_with_long_context_filtering() -> None:
    """Edge handling: a 4 s window gives nearly what filtering the whole recording (scipy) gives."""
    rate, rng = 128, np.random.default_rng(7)
    t = np.arange(40 * rate) / rate
    x = 10 * pink(t.size, rng) + 10 * np.sin(2 * np.pi * 10.3 * t) + 3 * rng.standard_normal(t.size)
    x += 60 * np.sin(2 * np.pi * 50 * t) + 3000  # strong mains hum and a DC offset
    p = EegParams(channels=("Cz",))
    ref = signal.sosfiltfilt(signal.butter(4, [48, 52], "bandstop", fs=rate, output="sos"), x - x.mean())
    ref = signal.sosfiltfilt(signal.butter(4, [1, 45], "bandpass", fs=rate, output="sos"), ref)
    bands = [signal.sosfiltfilt(signal.butter(4, [lo, hi], "bandpass", fs=rate, output="sos"), ref)
             for _, lo, hi in p.bands]
    pre = EegPreprocessor(p)
    errors = []
    for start in range(8 * rate, 32 * rate, 4 * rate):
        window = slice(start, start + 4 * rate)
        expected = [0.5 * math.log(2 * math.pi * math.e * b[window].var() / ref[window].var()) for b in bands]
        errors.append(np.abs(pre.process(x[None, window], ("Cz",), rate)[0] - expected))
    assert np.mean(errors) < 0.04, np.mean(errors, axis=0)
    assert np.max(errors) < 0.12, np.max(errors, axis=0)


def test_standardize_makes_features_independent_of_units() -> None:
    x = eeg_block(CYTON)
    x[:, :] += tones([3.0, 5.0, 9.0, 11.0, 15.0, 22.0, 33.0, 41.0], 250, 4.0, amp=8.0, noise=0.0)
    std = EegPreprocessor(EegParams(channels=CYTON))
    assert np.allclose(std.process(x, CYTON, 250), std.process(x * 1000, CYTON, 250), atol=1e-4)
    raw = EegPreprocessor(EegParams(channels=CYTON, standardize=False))
    shift = raw.process(x * 1000, CYTON, 250) - raw.process(x, CYTON, 250)
    assert np.allclose(shift, math.log(1000), atol=1e-3)  # DE(a x) = DE(x) + ln a


def test_dc_offset_and_drift_do_not_change_features() -> None:
    x = eeg_block(CYTON)
    drift = 5000.0 + np.linspace(0, 800, x.shape[1])
    pre = EegPreprocessor(EegParams(channels=CYTON))
    assert np.allclose(pre.process(x, CYTON, 250), pre.process(x + drift, CYTON, 250), atol=1e-4)


def test_notch_removes_mains_hum() -> None:
    t = np.arange(1000) / 250
    rng = np.random.default_rng(0)
    clean = (np.sin(2 * np.pi * 10 * t) + 0.3 * rng.standard_normal(t.size))[None]
    hum = clean + 20 * np.sin(2 * np.pi * 50 * t + 1)  # mains 20x the alpha amplitude

    def features(x: np.ndarray, notch_hz: float) -> np.ndarray:
        return EegPreprocessor(EegParams(channels=("Cz",), notch_hz=notch_hz)).process(x, ("Cz",), 250)

    reference = features(clean, 50.0)
    assert np.max(np.abs(features(hum, 50.0) - reference)) < 0.1
    assert np.max(np.abs(features(hum, 0.0) - reference)) > 0.3  # band-pass alone lets hum through
    assert np.max(np.abs(features(hum, 60.0) - reference)) > 0.3  # a notch for the wrong mains


def test_processing_is_deterministic_and_leaves_the_input_alone() -> None:
    x = eeg_block(CYTON, seed=3)[:, :1200]
    before = x.copy()
    p = EegParams(channels=CYTON)
    first = EegPreprocessor(p).process(x, CYTON, 250)
    again = EegPreprocessor(p).process(x, CYTON, 250)
    assert np.array_equal(x, before)
    assert isinstance(first, np.ndarray) and first.tobytes() == again.tobytes()
    last_4_s = EegPreprocessor(p).process(x[:, -1000:], CYTON, 250)
    assert last_4_s.tobytes() == first.tobytes()  # only the most recent window_s seconds count


def test_output_shape_and_band_names() -> None:
    pre = EegPreprocessor(EegParams(channels=SYNTHETIC))
    assert pre.output_shape == (10, 5) and pre.band_names == BAND_NAMES
    out = pre.process(eeg_block(SYNTHETIC, rate=128).astype(np.float32), SYNTHETIC, 128)
    assert out.shape == pre.output_shape and out.dtype == np.float32


# ----------------------------------------------------------------------------- real data (GU)

def _gu(shared_dir, name: str) -> np.ndarray:
    path = shared_dir / "data" / "eeg" / "gu" / name
    matrix = scipy.io.loadmat(path)["normalizedMatrix"]
    assert matrix.shape == (1920, 32)
    return matrix.T  # [channels, samples]


@pytest.mark.shared
def test_gu_file_gives_cyton_and_synthetic_montages(shared_dir) -> None:
    data = _gu(shared_dir, "sub1t1H.mat")
    cyton = EegPreprocessor(EegParams(channels=CYTON)).process(data, GU_CHANNELS, 128)
    assert isinstance(cyton, np.ndarray) and cyton.shape == (8, 5) and cyton.dtype == np.float32
    assert np.all(np.isfinite(cyton))
    synthetic = EegPreprocessor(EegParams(channels=SYNTHETIC)).process(data, GU_CHANNELS, 128)
    assert isinstance(synthetic, np.ndarray) and synthetic.shape == (10, 5) and np.all(np.isfinite(synthetic))
    # the C3 and C4 rows are the same signal in both montages
    assert np.array_equal(cyton[2:4], synthetic[[1, 3]])


@pytest.mark.shared
def test_every_gu_window_passes_quality(shared_dir) -> None:
    files = sorted((shared_dir / "data" / "eeg" / "gu").glob("sub*.mat"))
    assert len(files) == 48
    pre = EegPreprocessor(EegParams(channels=CYTON))
    for path in files:
        data = scipy.io.loadmat(path)["normalizedMatrix"].T
        for end in (512, 1024, 1536, 1920):
            out = pre.process(data[:, :end], GU_CHANNELS, 128)
            assert isinstance(out, np.ndarray), f"{path.name} window ending at {end}: {out}"
            assert np.all(np.isfinite(out))
