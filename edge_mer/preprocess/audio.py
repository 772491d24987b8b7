"""Speech preprocessing: one PCM window in, one model-ready log-mel tensor out.

The microphone runtime and the calibration/evaluation readers (WAV folders)
both call this single implementation, so a window produces the same bytes
whichever path delivered it: :func:`to_mono` always returns float32 (int16 PCM
from PyAudio and the float64 that ``soundfile`` reads from the same int16 WAV
become identical arrays), and every later step is deterministic numpy/scipy
(same input on the same platform and library build -> identical bytes).

Pipeline of :meth:`AudioPreprocessor.process`::

    to_mono -> resample (polyphase, anti-aliased) -> length check -> loudness
    gate -> |STFT|**power -> mel -> log -> deltas -> CMVN -> dtype

Output layout (no batch axis): ``[channels, n_mels, frames]`` where
``channels = 1 + deltas``; channel 0 is the log-mel spectrogram, channel 1 (if
``deltas >= 1``) its first time derivative and channel 2 (if ``deltas == 2``)
its second derivative, both computed from channel 0 exactly as
``librosa.feature.delta(logmel, width=delta_width, order=k)`` does
(Savitzky-Golay, ``mode="interp"``).  CMVN, when enabled, then normalises every
(channel, mel band) row over the frames of the window.  ``frames`` is
dynamic: ``1 + n // hop_length`` with ``center=True``.

Only numpy and scipy are used here; librosa is a test-time oracle only.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from edge_mer.config import require
from edge_mer.errors import ConfigError, InputError
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.resample import check_rate, resample

log = logging.getLogger(__name__)

_CHOICES: dict[str, tuple[object, ...]] = {
    "window": ("hann", "hamming", "blackman"), "pad_mode": ("reflect", "constant"),
    "mel_norm": ("slaney", None), "log": ("db", "ln"), "deltas": (0, 1, 2),
    "cmvn": ("none", "utterance"), "dtype": ("float32", "float16"),
}
_OPTIONAL = ("top_db", "vad_threshold_db")  # float fields where None is allowed
_GATE_FRAME_S = 0.025  # loudness gate: RMS over 25 ms frames ...
_GATE_HOP_S = 0.010  # ... taken every 10 ms
_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0  # Slaney mel scale
_SILENCE = "silence"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class AudioParams:
    """Everything needed to reproduce the speech model's input from PCM samples.

    Matches ``librosa.feature.melspectrogram`` (+ ``power_to_db``) for the same
    settings.  ``pad_mode`` is ``"reflect"`` by default (librosa < 0.10's
    default; librosa >= 0.10 defaults to ``"constant"``).  ``log="db"`` is
    ``10*log10(max(S, amin))`` (ref 1.0), clipped to ``max - top_db`` when
    ``top_db`` is set; ``log="ln"`` is ``ln(S + log_offset)``.  ``cmvn`` is
    ``(x - mean) / max(std, cmvn_eps)`` per channel and mel band over the
    window's frames.  ``vad_threshold_db`` is compared with the loudest
    25 ms frame's RMS in dBFS (RMS 1.0 = 0 dBFS); None disables the gate.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    window: Literal["hann", "hamming", "blackman"] = "hann"
    center: bool = True
    pad_mode: Literal["reflect", "constant"] = "reflect"
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0
    power: float = 2.0
    mel_norm: Literal["slaney"] | None = "slaney"
    htk: bool = False
    log: Literal["db", "ln"] = "db"
    top_db: float | None = None
    amin: float = 1e-10
    log_offset: float = 1e-6
    deltas: Literal[0, 1, 2] = 0
    delta_width: int = 9
    cmvn: Literal["none", "utterance"] = "none"
    cmvn_eps: float = 1e-5
    min_seconds: float = 1.0
    vad_threshold_db: float | None = -45.0
    dtype: Literal["float32", "float16"] = "float32"

    def __post_init__(self) -> None:
        self._check_types()
        self._check_stft()
        self._check_mel()
        self._check_features()
        self._check_window_length()

    @property
    def channels(self) -> int:
        """Number of feature channels: the log-mel plus one per delta order."""
        return 1 + self.deltas

    def _check_types(self) -> None:
        """Check types and choices; normalise whole-number floats (20 -> 20.0)."""
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "delta_width"):
            value = getattr(self, name)
            require(_is_int(value), f"{name}={value!r}: expected an integer")
        for name in ("center", "htk"):
            value = getattr(self, name)
            require(isinstance(value, bool), f"{name}={value!r}: expected true or false")
        for name in ("fmin", "fmax", "power", "amin", "log_offset", "cmvn_eps", "min_seconds",
                     "top_db", "vad_threshold_db"):
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL:
                require(_is_real(value), f"{name}={value!r}: expected a finite number")
                object.__setattr__(self, name, float(value))
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            require(any(value == c and type(value) is type(c) for c in choices),
                    f"{name}={value!r}: expected one of {', '.join(map(repr, choices))}")

    def _check_stft(self) -> None:
        require(8000 <= self.sample_rate <= 192000,
                f"sample_rate={self.sample_rate}: expected an integer in [8000, 192000]")
        require(16 <= self.n_fft <= 16384, f"n_fft={self.n_fft}: expected an integer in [16, 16384]")
        require(1 <= self.win_length <= self.n_fft,
                f"win_length={self.win_length}: expected an integer in [1, n_fft={self.n_fft}]")
        require(1 <= self.hop_length <= self.n_fft,
                f"hop_length={self.hop_length}: expected a positive integer <= n_fft={self.n_fft}")
        require(self.power > 0, f"power={self.power}: expected a number > 0 (2.0 power, 1.0 magnitude)")

    def _check_mel(self) -> None:
        nyquist = self.sample_rate / 2
        require(1 <= self.n_mels <= 512, f"n_mels={self.n_mels}: expected an integer in [1, 512]")
        require(self.fmin >= 0, f"fmin={self.fmin}: expected a number >= 0")
        require(self.fmin < self.fmax <= nyquist,
                f"fmax={self.fmax}: expected fmin={self.fmin} < fmax <= sample_rate/2={nyquist}")
        weights = mel_filterbank(self)
        empty = [i for i in range(self.n_mels) if not weights[i].max() > 0]
        require(not empty, f"n_mels={self.n_mels}: mel bands {empty[:5]} are empty for n_fft={self.n_fft} "
                f"at sample_rate={self.sample_rate}; lower n_mels or raise n_fft/fmin")

    def _check_features(self) -> None:
        require(self.top_db is None or self.top_db > 0, f"top_db={self.top_db}: expected None or a number > 0")
        for name in ("amin", "log_offset", "cmvn_eps"):
            require(getattr(self, name) > 0, f"{name}={getattr(self, name)}: expected a number > 0")
        require(self.delta_width >= 3 and self.delta_width % 2 == 1,
                f"delta_width={self.delta_width}: expected an odd integer >= 3")
        require(self.vad_threshold_db is None or self.vad_threshold_db <= 0,
                f"vad_threshold_db={self.vad_threshold_db}: expected None or a number <= 0 (dBFS)")

    def _check_window_length(self) -> None:
        """The shortest accepted window must hold one FFT frame and one delta width."""
        require(0 < self.min_seconds <= 600, f"min_seconds={self.min_seconds}: expected a number in (0, 600]")
        samples = min_samples(self)
        require(samples >= self.n_fft, f"min_seconds={self.min_seconds}: {samples} samples at "
                f"{self.sample_rate} Hz is shorter than n_fft={self.n_fft}")
        if self.deltas:
            frames = num_frames(samples, self)
            require(frames >= self.delta_width,
                    f"min_seconds={self.min_seconds}: gives {frames} frames, fewer than "
                    f"delta_width={self.delta_width} needed for deltas")


def min_samples(params: AudioParams) -> int:
    """Fewest samples (at ``params.sample_rate``) of a window that is not too short."""
    return math.ceil(params.min_seconds * params.sample_rate - 1e-6)


def num_frames(n_samples: int, params: AudioParams) -> int:
    """Frames of the feature tensor for ``n_samples`` samples at ``params.sample_rate``."""
    if params.center:
        return 1 + n_samples // params.hop_length
    return 1 + (n_samples - params.n_fft) // params.hop_length


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Return one channel of float32 audio from ``[n]`` or interleaved ``[n, channels]`` samples.

    int16, int32 and uint8 PCM are scaled to [-1, 1) (``/32768``,
    ``/2**31``, ``(v - 128)/128``); float16/32/64 values are kept as they are
    (only cast to float32).  Channels are averaged.  Raises :class:`InputError`
    for other dtypes, empty input, other shapes and NaN/Inf.
    """
    x = np.asarray(samples)
    kind, size = x.dtype.kind, x.dtype.itemsize
    pcm = {("i", 2): (0.0, 32768.0), ("i", 4): (0.0, 2147483648.0), ("u", 1): (128.0, 128.0)}
    if (kind, size) not in pcm and not (kind == "f" and size in (2, 4, 8)):
        raise InputError(f"audio dtype {x.dtype} is not supported: expected int16, int32 or uint8 PCM, "
                         "or float16/float32/float64")
    if x.size == 0:
        raise InputError(f"audio is empty (shape {x.shape})")
    if x.ndim == 2 and x.shape[1] > x.shape[0]:
        raise InputError(f"audio shape {x.shape} looks like [channels, n]; expected [n] or interleaved "
                         "[n, channels] (transpose it)")
    if x.ndim not in (1, 2):
        raise InputError(f"audio has shape {x.shape}: expected [n] or [n, channels]")
    y = x.astype(np.float64)
    if kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise InputError(f"audio contains {bad} NaN/Inf samples of {x.size}")
    else:
        offset, scale = pcm[(kind, size)]
        y = (y - offset) / scale
    if y.ndim == 2:
        y = y.mean(axis=1)
    return y.astype(np.float32)


def _hz_to_mel(hz: np.ndarray, htk: bool) -> np.ndarray:
    """Hz -> mel as librosa computes it: HTK, or Slaney (linear below 1 kHz, log above)."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    mels = hz / _F_SP
    high = hz >= _MIN_LOG_HZ
    mels[high] = _MIN_LOG_HZ / _F_SP + np.log(hz[high] / _MIN_LOG_HZ) / _LOGSTEP
    return mels


def _mel_to_hz(mels: np.ndarray, htk: bool) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    hz = _F_SP * mels
    high = mels >= _MIN_LOG_HZ / _F_SP
    hz[high] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[high] - _MIN_LOG_HZ / _F_SP))
    return hz


@functools.lru_cache(maxsize=32)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool,
               norm: str | None) -> np.ndarray:
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]), htk)[0],
                                   _hz_to_mel(np.array([fmax]), htk)[0], n_mels + 2), htk)
    fdiff = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    lower = -ramps[:-2] / fdiff[:-1, np.newaxis]
    upper = ramps[2:] / fdiff[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, np.newaxis]
    weights.setflags(write=False)
    return weights


def mel_filterbank(params: AudioParams) -> np.ndarray:
    """Mel weights ``[n_mels, 1 + n_fft // 2]`` (float64, read-only, cached per setting).

    Same values as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk,
    norm, dtype=np.float64)``.
    """
    return _mel_basis(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax,
                      params.htk, params.mel_norm)


@functools.lru_cache(maxsize=16)
def _kernels(params: AudioParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-params constants: (analysis window centred in n_fft samples, mel matrix)."""
    win = signal.get_window(params.window, params.win_length, fftbins=True)  # periodic, as librosa
    left = (params.n_fft - params.win_length) // 2
    window = np.zeros(params.n_fft, dtype=np.float64)
    window[left:left + params.win_length] = win
    window.setflags(write=False)
    return window, mel_filterbank(params)


def _power_spectrogram(x: np.ndarray, params: AudioParams, window: np.ndarray) -> np.ndarray:
    """``|STFT(x)| ** power`` as ``[frames, 1 + n_fft // 2]`` float64."""
    if params.center:
        x = np.pad(x, params.n_fft // 2, mode=params.pad_mode)
    frames = sliding_window_view(x, params.n_fft)[:: params.hop_length]
    spec = np.fft.rfft(frames * window, axis=-1)
    if params.power == 2.0:
        return spec.real ** 2 + spec.imag ** 2
    return np.abs(spec) ** params.power


def _log_compress(mel: np.ndarray, params: AudioParams) -> np.ndarray:
    if params.log == "ln":
        return np.log(mel + params.log_offset)
    db = 10.0 * np.log10(np.maximum(mel, params.amin))
    if params.top_db is not None:
        db = np.maximum(db, db.max() - params.top_db)
    return db


def _features(x: np.ndarray, params: AudioParams, kernels: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The shared core: float64 mono audio at params.sample_rate -> ``[C, n_mels, T]``."""
    window, mel = kernels
    # [frames, bins] @ [bins, mels], then transpose: BLAS takes a slow path on the transposed rfft output.
    logmel = _log_compress((_power_spectrogram(x, params, window) @ mel.T).T, params)
    rows = [logmel]
    for order in range(1, params.deltas + 1):
        rows.append(signal.savgol_filter(logmel, params.delta_width, polyorder=order, deriv=order,
                                         axis=-1, mode="interp"))
    feats = np.stack(rows)
    if params.cmvn == "utterance":
        std = np.maximum(feats.std(axis=-1, keepdims=True), params.cmvn_eps)
        feats = (feats - feats.mean(axis=-1, keepdims=True)) / std
    return np.ascontiguousarray(feats, dtype=np.dtype(params.dtype))


def log_mel(x: np.ndarray, params: AudioParams) -> np.ndarray:
    """Model features ``[1 + deltas, n_mels, frames]`` of mono audio at ``params.sample_rate``.

    Includes the deltas and CMVN that ``params`` asks for, cast to
    ``params.dtype`` (layout: module docstring).  Raises :class:`InputError`
    unless ``x`` is 1-D, real, finite, at least ``n_fft`` samples long and
    (with deltas) at least ``delta_width`` frames long.
    """
    y = np.asarray(x)
    if y.ndim != 1 or y.dtype.kind not in "fiu":
        raise InputError(f"expected 1-D real mono audio, got shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise InputError("audio contains NaN/Inf samples")
    if y.size < params.n_fft:
        raise InputError(f"audio has {y.size} samples; at least n_fft={params.n_fft} are needed")
    if params.deltas and num_frames(y.size, params) < params.delta_width:
        raise InputError(f"audio gives {num_frames(y.size, params)} frames; deltas need "
                         f"delta_width={params.delta_width}")
    return _features(y, params, _kernels(params))


def peak_frame_dbfs(x: np.ndarray, sample_rate: int) -> float:
    """RMS level in dBFS (RMS 1.0 = 0 dBFS) of the loudest 25 ms frame, frames every 10 ms."""
    y = np.asarray(x, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise InputError(f"expected non-empty 1-D audio, got shape {y.shape}")
    frame = max(1, round(_GATE_FRAME_S * sample_rate))
    hop = max(1, round(_GATE_HOP_S * sample_rate))
    frames = y[np.newaxis] if y.size < frame else sliding_window_view(y, frame)[::hop]
    mean_square = float(np.mean(frames * frames, axis=1).max())
    return 10.0 * math.log10(max(mean_square, 1e-20))


def loudness_gate(x: np.ndarray, params: AudioParams) -> str | None:
    """``"silence"`` if the loudest 25 ms frame of ``x`` (at ``params.sample_rate``) is below ``vad_threshold_db``."""
    if params.vad_threshold_db is None:
        return None
    level = peak_frame_dbfs(x, params.sample_rate)
    if level < params.vad_threshold_db:
        log.debug("speech window gated: peak frame %.1f dBFS < %.1f dBFS", level, params.vad_threshold_db)
        return _SILENCE
    return None


class AudioPreprocessor:
    """Turns one window of PCM at any rate into the speech model's input.

    The analysis window, mel matrix and resampling filters are computed once.
    :meth:`process` returns a float array ``[1 + deltas, n_mels, frames]`` (no
    batch axis) or :class:`Invalid` with reason ``"too short"`` (fewer than
    ``min_seconds`` after resampling) or ``"silence"`` (see :func:`loudness_gate`).
    Malformed input (empty, NaN, unsupported dtype or shape, bad sample rate)
    raises :class:`InputError`.
    """

    def __init__(self, params: AudioParams | None = None) -> None:
        params = AudioParams() if params is None else params
        if not isinstance(params, AudioParams):
            raise ConfigError(f"AudioPreprocessor needs AudioParams, got {type(params).__name__}")
        self.params = params
        self._kernels = _kernels(params)
        self._min_samples = min_samples(params)

    def output_shape(self, n_samples: int) -> tuple[int, int, int]:
        """Shape of :meth:`process`'s array for ``n_samples`` samples at ``params.sample_rate``."""
        return (self.params.channels, self.params.n_mels, num_frames(n_samples, self.params))

    def process(self, samples: np.ndarray, sample_rate: int) -> np.ndarray | Invalid:
        """Mono -> resample -> length check -> loudness gate -> features (see class doc)."""
        params = self.params
        rate = check_rate("sample_rate", sample_rate)
        x = resample(to_mono(samples), rate, params.sample_rate)
        if x.size < self._min_samples:
            log.debug("speech window too short: %d samples < %d", x.size, self._min_samples)
            return Invalid(ReasonCode.TOO_SHORT)
        reason = loudness_gate(x, params)
        if reason is not None:
            return Invalid(ReasonCode.SILENCE, reason)
        return _features(x, params, self._kernels)
