"""EEG window preprocessing: channel mapping, quality gate, filtering, band features.

One deterministic implementation serves the live daemon (BrainFlow boards) and
the calibration readers (GU ``.mat``, session CSV, BrainFlow files). For one
window ``data[n_channels, n_samples]`` at ``source_rate``,
:meth:`EegPreprocessor.process` picks the model's channels by name, keeps the
last ``window_s`` seconds, gates quality on the raw samples, removes linear
trends (board DC offsets would ring through the filters), fades the ends
(:func:`taper`), resamples (band-limited polyphase FIR), notches and
band-passes with BrainFlow's zero-phase Butterworth filters on a zero-padded
copy, z-scores each channel and returns differential entropy or log band power
as ``float32[n_channels, n_bands]`` (``params.channels`` x ``params.bands``),
without a batch axis. BrainFlow is imported lazily.
"""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import signal

from edge_mer.config import require
from edge_mer.errors import InputError
from edge_mer.preprocess.eeg_window import TAPER_S, detrend_linear, taper  # noqa: F401 - public here too
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.resample import resample, resample_ratio

log = logging.getLogger(__name__)

DEFAULT_BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 45.0),
)
NOTCH_HALF_WIDTH_HZ = 2.0  # the notch stops notch_hz +- this
MAX_FILTER_ORDER = 8  # BrainFlow's DSP filters accept orders 1..8
#: Bounds on what a manifest may ask for: a window buffer of at most 4 Mi samples per channel
#: (e.g. 1 kHz for 70 min), 256 channels and 64 bands.
MAX_WINDOW_SAMPLES, MAX_CHANNELS, MAX_BANDS = 1 << 22, 256, 64
_VAR_FLOOR = 1e-20  # keeps log() finite for silent bands


def _is_number(value: Any) -> bool:
    """A finite real number that is not a bool (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


@dataclass(frozen=True)
class EegParams:
    """How raw EEG becomes one model input; validated on construction.

    ``standardize`` z-scores every channel over the window after filtering. The
    GU training data were normalised by their publishers (unitless, unit
    variance per channel) while boards deliver microvolts scaled by each
    electrode's gain and contact; after z-scoring, the features describe how a
    channel's variance is spread over the bands, the same quantity in both
    worlds, so a model trained on GU applies to boards. ``max_abs`` is in the
    input's units (µV for BrainFlow boards), compared with each channel's
    deviation from its median; it is off by default because units differ
    between datasets. ``max_run_s``: a channel constant for this long is railed.
    """

    channels: tuple[str, ...]
    sample_rate: int = 128
    window_s: float = 4.0
    notch_hz: float = 50.0
    bandpass: tuple[float, float] = (1.0, 45.0)
    filter_order: int = 4
    bands: tuple[tuple[str, float, float], ...] = DEFAULT_BANDS
    feature: Literal["de", "log_power"] = "de"
    standardize: bool = True
    max_abs: float | None = None
    min_std: float = 1e-6
    max_run_s: float | None = 0.25
    max_bad_channels: int = 0

    def __post_init__(self) -> None:
        for check in (self._check_channels, self._check_timing, self._check_filters, self._check_bands,
                      self._check_quality):
            check()

    def _check_channels(self) -> None:
        chans = self.channels
        require(isinstance(chans, (tuple, list)) and 0 < len(chans) <= MAX_CHANNELS,
                f"channels: expected 1..{MAX_CHANNELS} channel names, got {str(chans)[:60]}")
        for i, name in enumerate(chans):
            require(isinstance(name, str) and name != "" and not any(c.isspace() for c in name),
                    f"channels[{i}]: expected a channel name without spaces, got {name!r}")
        lowered = [c.lower() for c in chans]
        dupes = sorted({c for c in chans if lowered.count(c.lower()) > 1})
        require(not dupes, f"channels: expected unique names (case-insensitive), got duplicates {dupes}")
        object.__setattr__(self, "channels", tuple(chans))

    def _check_timing(self) -> None:
        require(type(self.sample_rate) is int and 16 <= self.sample_rate <= 100_000,
                f"sample_rate: expected an integer in 16..100000 Hz, got {self.sample_rate!r}")
        require(_is_number(self.window_s) and 0 < self.window_s <= 3600,
                f"window_s: expected 0 < window_s <= 3600 s, got {self.window_s!r}")
        require(self.window_s * self.sample_rate <= MAX_WINDOW_SAMPLES,
                f"window_s: {self.window_s:g} s at {self.sample_rate} Hz is more than the {MAX_WINDOW_SAMPLES} "
                "samples a window may have")
        require(self.feature in ("de", "log_power"), f"feature: expected 'de' or 'log_power', got {self.feature!r}")
        require(isinstance(self.standardize, bool), f"standardize: expected true or false, got {self.standardize!r}")

    def _check_filters(self) -> None:
        nyq = self.sample_rate / 2
        require(type(self.filter_order) is int and 1 <= self.filter_order <= MAX_FILTER_ORDER,
                f"filter_order: expected an integer in 1..{MAX_FILTER_ORDER}, got {self.filter_order!r}")
        lo_n, hi_n = NOTCH_HALF_WIDTH_HZ, nyq - NOTCH_HALF_WIDTH_HZ
        require(_is_number(self.notch_hz) and (self.notch_hz == 0 or lo_n < self.notch_hz < hi_n),
                f"notch_hz: expected 0 (off) or {lo_n:g} < notch_hz < {hi_n:g} Hz "
                f"(Nyquist {nyq:g} Hz less the notch half-width), got {self.notch_hz!r}")
        bp = self.bandpass
        require(isinstance(bp, (tuple, list)) and len(bp) == 2 and all(_is_number(v) for v in bp),
                f"bandpass: expected [low, high] in Hz, got {bp!r}")
        require(0 < bp[0] < bp[1] < nyq, f"bandpass: expected 0 < low < high < Nyquist ({nyq:g} Hz), got {tuple(bp)}")
        require(self.window_s * bp[0] >= 1.0,
                f"window_s: expected >= 1/bandpass low = {1 / bp[0]:g} s (one cycle), got {self.window_s!r}")
        object.__setattr__(self, "bandpass", (float(bp[0]), float(bp[1])))

    def _check_bands(self) -> None:
        nyq, (lo_bp, hi_bp) = self.sample_rate / 2, self.bandpass
        require(isinstance(self.bands, (tuple, list)) and 0 < len(self.bands) <= MAX_BANDS,
                f"bands: expected 1..{MAX_BANDS} [name, low, high] entries, got {str(self.bands)[:60]}")
        resolution = max(1.0, 1.0 / self.window_s)  # Welch bin width used by log_power
        out = []
        for i, band in enumerate(self.bands):
            require(isinstance(band, (tuple, list)) and len(band) == 3 and isinstance(band[0], str)
                    and band[0] != "" and _is_number(band[1]) and _is_number(band[2]),
                    f"bands[{i}]: expected [name, low Hz, high Hz], got {band!r}")
            name, lo, hi = band[0], float(band[1]), float(band[2])
            require(lo_bp <= lo < hi <= hi_bp and hi < nyq,
                    f"bands[{i}] {name!r}: expected {lo_bp:g} <= low < high <= {hi_bp:g} Hz (inside bandpass, "
                    f"below Nyquist {nyq:g} Hz), got {lo:g}-{hi:g} Hz")
            require(self.feature != "log_power" or hi - lo >= resolution,
                    f"bands[{i}] {name!r}: log_power needs bands >= {resolution:g} Hz wide, got {hi - lo:g} Hz")
            out.append((name, lo, hi))
        names = [b[0] for b in out]
        require(len(set(names)) == len(names), f"bands: expected unique names, got {names}")
        object.__setattr__(self, "bands", tuple(out))

    def _check_quality(self) -> None:
        require(self.max_abs is None or (_is_number(self.max_abs) and self.max_abs > 0),
                f"max_abs: expected a positive number (input units) or nothing, got {self.max_abs!r}")
        require(_is_number(self.min_std) and self.min_std >= 0, f"min_std: expected >= 0, got {self.min_std!r}")
        run = self.max_run_s
        require(run is None or (_is_number(run) and 0 < run <= self.window_s),
                f"max_run_s: expected 0 < max_run_s <= window_s ({self.window_s:g} s) or nothing, got {run!r}")
        k, n = self.max_bad_channels, len(self.channels)
        require(type(k) is int and 0 <= k < n,
                f"max_bad_channels: expected an integer in 0..{n - 1} (fewer than the {n} channels), got {k!r}")


def _board_call(what: str, board_id: int) -> Any:
    """``BoardShim.<what>(board_id)``, with BrainFlow's errors as :class:`InputError`."""
    from brainflow.board_shim import BoardShim  # lazy: native library
    from brainflow.exit_codes import BrainFlowError

    try:
        return getattr(BoardShim, what)(int(board_id))
    except BrainFlowError as exc:
        raise InputError(f"BrainFlow board {board_id}: {what} failed ({exc}); "
                         "playback and streaming boards describe their master board's channels") from None


def board_channel_names(board_id: int) -> tuple[str, ...]:
    """EEG channel names of a BrainFlow board (``BoardShim.get_eeg_names``), in row order."""
    return tuple(str(n) for n in _board_call("get_eeg_names", board_id))


def board_eeg_rows(board_id: int) -> tuple[int, ...]:
    """Rows of ``BoardShim.get_board_data()`` that hold the board's EEG channels."""
    return tuple(int(r) for r in _board_call("get_eeg_channels", board_id))


def board_eeg(board_data: Any, board_id: int) -> tuple[np.ndarray, tuple[str, ...], int]:
    """Split a BrainFlow data block into (EEG rows, their names, sampling rate in Hz)."""
    rows, names = board_eeg_rows(board_id), board_channel_names(board_id)
    if len(rows) != len(names):
        raise InputError(f"BrainFlow board {board_id}: {len(rows)} EEG rows but {len(names)} EEG names")
    data = np.asarray(board_data)
    if data.ndim != 2 or data.shape[0] <= max(rows):
        raise InputError(f"BrainFlow board {board_id}: expected board data with more than {max(rows)} rows, "
                         f"got shape {data.shape}")
    return data[list(rows)], names, int(_board_call("get_sampling_rate", board_id))


def _as_window(data: Any, n_names: int) -> np.ndarray:
    """``data`` as float64 [n_channels, n_samples] with one row per source name."""
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"EEG data: expected a numeric array, got {type(data).__name__} ({exc})") from None
    if arr.ndim != 2:
        raise InputError(f"EEG data: expected [n_channels, n_samples], got shape {arr.shape}")
    if arr.shape[0] != n_names:
        hint = " (transposed? rows must be channels)" if arr.shape[1] == n_names else ""
        raise InputError(f"EEG data: {arr.shape[0]} rows but {n_names} channel names{hint}")
    return arr


def channel_indices(source_names: Sequence[str], wanted: Sequence[str]) -> tuple[int, ...]:
    """Row of ``source_names`` holding each ``wanted`` name (case-insensitive).

    Raises :class:`InputError` listing every missing channel and what the source has.
    """
    keys = [str(name).strip().lower() for name in source_names]
    missing = [w for w in wanted if w.lower() not in keys]
    if missing:
        raise InputError(f"EEG source lacks channel(s) {', '.join(missing)} "
                         f"(source has: {', '.join(map(str, source_names)) or 'nothing'})")
    clash = [w for w in wanted if keys.count(w.lower()) > 1]
    if clash:
        raise InputError(f"EEG source names channel(s) {', '.join(clash)} more than once: {list(source_names)}")
    return tuple(keys.index(w.lower()) for w in wanted)


def select_channels(data: Any, source_names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Rows of ``data`` [n_channels, n_samples] for ``wanted``, in that order, as C-contiguous float64."""
    arr = _as_window(data, len(source_names))
    return np.ascontiguousarray(arr[list(channel_indices(source_names, wanted))])


def _channel_problem(row: np.ndarray, params: EegParams, rate: float) -> str | None:
    """Why one raw channel is unusable, or None."""
    if row.size == 0:
        return "empty"
    if not np.all(np.isfinite(row)):
        return f"NaN/Inf in {int(np.count_nonzero(~np.isfinite(row)))} samples"
    std = float(row.std())
    if std < params.min_std or std == 0:
        return f"flat (std {std:.3g} < min_std {params.min_std:g})"
    if params.max_run_s is not None:  # longest run of identical consecutive samples
        bounds = np.concatenate(([-1], np.flatnonzero(np.diff(row) != 0), [row.size - 1]))
        k = int(np.argmax(np.diff(bounds)))
        run = int(bounds[k + 1] - bounds[k])
        if run >= max(2, math.ceil(params.max_run_s * rate)):
            return f"railed ({run / rate:.2f} s constant at {row[bounds[k] + 1]:g})"
    if params.max_abs is not None:
        peak = float(np.max(np.abs(row - np.median(row))))
        if peak > params.max_abs:
            return f"amplitude {peak:.4g} > max_abs {params.max_abs:g}"
    return None


def bad_channels(x: np.ndarray, params: EegParams, sample_rate: float | None = None) -> list[tuple[int, str]]:
    """(row, problem) for every unusable channel of ``x`` [len(params.channels), n_samples]."""
    rate = float(sample_rate if sample_rate is not None else params.sample_rate)
    found = ((i, _channel_problem(row, params, rate)) for i, row in enumerate(np.asarray(x, dtype=np.float64)))
    return [(i, why) for i, why in found if why is not None]


def _describe_bad(bad: list[tuple[int, str]], params: EegParams) -> str:
    listed = "; ".join(f"{params.channels[i]} {why}" for i, why in bad)
    return f"bad channels ({len(bad)} > max_bad_channels {params.max_bad_channels}): {listed}"


def check_quality(x: np.ndarray, params: EegParams, sample_rate: float | None = None) -> str | None:
    """Why window ``x`` (rows in ``params.channels`` order, raw units) must not be classified, or None.

    A channel is bad when it holds NaN/Inf, is flat (std < ``min_std``), is railed
    (constant for ``max_run_s`` seconds, e.g. stuck at the ADC limit) or deviates
    from its median by more than ``max_abs``. Up to ``max_bad_channels`` bad
    channels pass. ``sample_rate`` is the rate of ``x`` (default ``params.sample_rate``).
    """
    bad = bad_channels(x, params, sample_rate)
    return _describe_bad(bad, params) if len(bad) > params.max_bad_channels else None


def _filter_rows(x: np.ndarray, rate: int, lo: float, hi: float, order: int, stop: bool = False) -> None:
    """Zero-phase Butterworth band-pass (or band-stop) of every row of C-contiguous float64 ``x``, in place.

    BrainFlow takes 1-D C-contiguous float64 arrays and a Python ``int`` rate,
    filters in place and does not pad, so callers pad first (see :func:`clean`).
    """
    from brainflow.data_filter import DataFilter, FilterTypes  # lazy: native library

    kind = int(FilterTypes.BUTTERWORTH_ZERO_PHASE)
    apply = DataFilter.perform_bandstop if stop else DataFilter.perform_bandpass
    for row in x:  # a row of a C-contiguous array is a contiguous view
        apply(row, int(rate), float(lo), float(hi), int(order), kind, 0.0)


def clean(x: np.ndarray, params: EegParams) -> tuple[np.ndarray, int]:
    """Notch and band-pass a tapered window at ``params.sample_rate``.

    Returns the filtered signal with its zero padding (filter tails) and the
    padding length: the window itself is ``out[:, pad:-pad]``.
    """
    pad = math.ceil(params.sample_rate / params.bandpass[0])  # room for the IIR responses
    xp = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (pad, pad)))
    if params.notch_hz:
        _filter_rows(xp, params.sample_rate, params.notch_hz - NOTCH_HALF_WIDTH_HZ,
                     params.notch_hz + NOTCH_HALF_WIDTH_HZ, params.filter_order, stop=True)
    _filter_rows(xp, params.sample_rate, *params.bandpass, params.filter_order)
    return xp, pad


def standardize(xp: np.ndarray, pad: int = 0) -> np.ndarray:
    """Z-score each channel by its mean and std over the window ``xp[:, pad:-pad]`` (zero std: only centred)."""
    core = xp[:, pad:xp.shape[1] - pad]
    std = core.std(axis=1, keepdims=True)
    return (xp - core.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def differential_entropy(xp: np.ndarray, params: EegParams, pad: int = 0) -> np.ndarray:
    """DE = 0.5 ln(2 pi e var) of each channel of ``xp[:, pad:-pad]`` band-passed to each band.

    ``xp`` is a cleaned window with ``pad`` samples of filter context on both
    ends, as :func:`clean` returns it.
    """
    out = np.empty((xp.shape[0], len(params.bands)), dtype=np.float64)
    for j, (_, lo, hi) in enumerate(params.bands):
        band = xp.copy()
        _filter_rows(band, params.sample_rate, lo, hi, params.filter_order)
        var = band[:, pad:band.shape[1] - pad].var(axis=1)
        out[:, j] = 0.5 * np.log(2 * np.pi * np.e * np.maximum(var, _VAR_FLOOR))
    return out


def log_band_power(xp: np.ndarray, params: EegParams, pad: int = 0) -> np.ndarray:
    """ln of the Welch band power of the window ``xp[:, pad:-pad]`` (1 s Hann segments, 50 % overlap)."""
    x = xp[:, pad:xp.shape[1] - pad]
    nperseg = min(params.sample_rate, x.shape[1])
    freqs, psd = signal.welch(x, fs=params.sample_rate, window="hann", nperseg=nperseg,
                              noverlap=nperseg // 2, detrend="constant", axis=1)
    df = freqs[1] - freqs[0]
    out = np.empty((x.shape[0], len(params.bands)), dtype=np.float64)
    for j, (_, lo, hi) in enumerate(params.bands):
        mask = (freqs >= lo) & (freqs < hi)
        out[:, j] = np.log(np.maximum(psd[:, mask].sum(axis=1) * df, _VAR_FLOOR))
    return out


def band_features(xp: np.ndarray, params: EegParams, pad: int = 0) -> np.ndarray:
    """``params.feature`` of a cleaned window (``pad`` samples of context each side) -> float32 [channels, bands]."""
    compute = differential_entropy if params.feature == "de" else log_band_power
    return compute(xp, params, pad).astype(np.float32)


class EegPreprocessor:
    """Turns one raw EEG window into the model input ``float32[n_channels, n_bands]``.

    Structural problems (wrong shape, missing channels, bad rate) raise
    :class:`InputError`; windows that are merely unusable (too short, bad
    signal) return :class:`Invalid`. Channel maps are cached per source.
    """

    def __init__(self, params: EegParams) -> None:
        self.params = params
        self.output_shape: tuple[int, int] = (len(params.channels), len(params.bands))
        self.band_names: tuple[str, ...] = tuple(name for name, _, _ in params.bands)
        self._rows: dict[tuple[str, ...], tuple[int, ...]] = {}
        import brainflow.data_filter  # noqa: F401  (fail here, not on the first window, without BrainFlow)

    def _rows_for(self, source_names: Sequence[str]) -> tuple[int, ...]:
        key = tuple(str(n) for n in source_names)
        if key not in self._rows:
            self._rows[key] = channel_indices(key, self.params.channels)
        return self._rows[key]

    def process(self, data: Any, source_names: Sequence[str], source_rate: float) -> np.ndarray | Invalid:
        """Features of the most recent ``window_s`` seconds of ``data`` [len(source_names), n_samples]."""
        p = self.params
        arr = _as_window(data, len(source_names))
        rows = self._rows_for(source_names)
        resample_ratio(source_rate, p.sample_rate)  # a bad rate is an InputError, even for a short window
        n_src = int(round(p.window_s * source_rate))
        if arr.shape[1] < n_src:
            log.debug("short EEG window: %d samples < %d (%g s at %g Hz)", arr.shape[1], n_src, p.window_s,
                      source_rate)
            return Invalid(ReasonCode.SHORT_WINDOW)
        x = np.ascontiguousarray(arr[list(rows), arr.shape[1] - n_src:])
        bad = bad_channels(x, p, source_rate)
        if len(bad) > p.max_bad_channels:
            return Invalid(ReasonCode.BAD_CHANNELS, _describe_bad(bad, p))
        if bad:  # tolerated: fill with the mean of the good channels (needs no montage)
            log.debug("EEG channels replaced by the mean of the others: %s", bad)
            rows_bad = [i for i, _ in bad]
            x[rows_bad] = np.delete(x, rows_bad, axis=0).mean(axis=0)
        x = taper(detrend_linear(x), source_rate)
        xp, pad = clean(resample(x, source_rate, p.sample_rate, padtype="line"), p)
        if p.standardize:
            xp = standardize(xp, pad)
        return band_features(xp, p, pad)
