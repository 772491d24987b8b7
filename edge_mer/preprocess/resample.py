"""Band-limited resampling shared by the speech and EEG preprocessors.

One implementation: :func:`scipy.signal.resample_poly` with a rational ratio
``up/down`` (:func:`resample_ratio`) and one anti-aliasing low-pass designed
once per ratio (:func:`lowpass`), so a speech window and an EEG window are
resampled by the same code and the same filter design.
"""
from __future__ import annotations

import functools
import logging
import math
import numbers
from fractions import Fraction
from typing import Literal, get_args

import numpy as np
from scipy import signal

from edge_mer.errors import InputError

log = logging.getLogger(__name__)

PadType = Literal["constant", "line", "mean", "median", "maximum", "minimum"]
PADTYPES: tuple[str, ...] = get_args(PadType)
_KAISER_BETA = 8.6  # anti-aliasing low-pass (see lowpass): Kaiser window beta,
_ROLLOFF = 0.94  # cutoff / lower Nyquist rate,
_ZERO_CROSSINGS = 48  # sinc zero crossings each side
_MAX_RATIO_TERM = 1000  # largest up/down term for a fractional source rate


def _is_integer(value: object) -> bool:
    """An ``int`` or numpy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_rate(name: str, rate: object) -> int:
    """``rate`` as an ``int`` if it is a positive integer (numpy integers included), else :class:`InputError`."""
    if not _is_integer(rate) or int(rate) <= 0:  # type: ignore[call-overload]
        raise InputError(f"{name}={rate!r}: expected a positive integer in Hz")
    return int(rate)  # type: ignore[call-overload]


def resample_ratio(orig_rate: float, target_rate: int) -> tuple[int, int]:
    """(up, down), coprime, with ``orig_rate * up / down == target_rate`` (approximately for fractional rates).

    ``target_rate`` must be a positive integer.  A whole-number ``orig_rate``
    (``int``, numpy integer or an integral float such as ``256.0``) gives the
    exact gcd-reduced ratio (22,050 -> 16,000 Hz is 320/441).  A fractional one
    (e.g. a board's measured 250.4 Hz) is approximated by the nearest fraction
    with a denominator <= 1000, and the ratio by the nearest one with terms <=
    1000.  Raises :class:`InputError` naming the bad rate.
    """
    target = check_rate("target_rate", target_rate)
    real = isinstance(orig_rate, numbers.Real) and not isinstance(orig_rate, (bool, np.bool_))
    if not (real and (_is_integer(orig_rate) or math.isfinite(orig_rate)) and orig_rate > 0):
        raise InputError(f"orig_rate={orig_rate!r}: expected a positive source sample rate in Hz")
    if _is_integer(orig_rate) or float(orig_rate).is_integer():
        orig = int(orig_rate)
        g = math.gcd(orig, target)
        return target // g, orig // g
    source = Fraction(float(orig_rate)).limit_denominator(_MAX_RATIO_TERM)
    ratio = (Fraction(target) / source).limit_denominator(_MAX_RATIO_TERM)
    return ratio.numerator, ratio.denominator


@functools.lru_cache(maxsize=16)
def lowpass(up: int, down: int) -> np.ndarray:
    """Anti-aliasing FIR for ``resample_poly(x, up, down)``, designed once per ratio (read-only, cached).

    Kaiser-windowed sinc (beta 8.6), 48 zero crossings each side
    (``96 * max(up, down) + 1`` taps), cutoff at 0.94 x the lower Nyquist
    rate.  Measured with :func:`scipy.signal.freqz`: within 0.13 dB up to
    0.9 x the lower Nyquist rate (7.2 kHz at 16 kHz), -10 dB at 0.95 x, at or
    below -86 dB from Nyquist up.  scipy's default (cutoff at Nyquist, beta 5,
    10 crossings) leaves a tone 1 kHz above the new Nyquist at only -30 dB.
    """
    if not (_is_integer(up) and _is_integer(down) and up > 0 and down > 0):
        raise InputError(f"lowpass(up={up!r}, down={down!r}): expected two positive integers")
    max_rate = max(up, down)
    taps = signal.firwin(2 * _ZERO_CROSSINGS * max_rate + 1, _ROLLOFF / max_rate,
                         window=("kaiser", _KAISER_BETA))
    taps.setflags(write=False)
    log.debug("designed a %d-tap anti-aliasing FIR for up=%d, down=%d", taps.size, up, down)
    return taps


def resample(x: np.ndarray, orig_rate: float, target_rate: int, axis: int = -1,
             padtype: PadType = "constant") -> np.ndarray:
    """Band-limited resampling of ``x`` along ``axis`` from ``orig_rate`` to ``target_rate`` Hz.

    :func:`scipy.signal.resample_poly` with the ratio of :func:`resample_ratio`
    and the low-pass of :func:`lowpass`.  The output holds
    ``ceil(n * up / down)`` samples along ``axis``: nothing is dropped.  It is
    a new C-contiguous float64 array (a copy for equal rates), as BrainFlow's
    filters need.  ``padtype`` is ``resample_poly``'s assumption about the
    signal beyond its ends: ``"constant"`` (zeros), ``"line"`` (the line
    through the first and last samples), ``"mean"``, ``"median"``,
    ``"maximum"`` or ``"minimum"``.  Raises :class:`InputError` for a bad
    rate, ``axis`` or ``padtype``, or an empty or non-real ``x``.
    """
    up, down = resample_ratio(orig_rate, target_rate)
    y = np.asarray(x)
    if y.dtype.kind not in "fiu" or y.ndim == 0 or y.size == 0:
        raise InputError(f"resample: expected a non-empty real array, got shape {y.shape} dtype {y.dtype}")
    if not (_is_integer(axis) and -y.ndim <= axis < y.ndim):
        raise InputError(f"resample: axis={axis!r}: expected an integer in {-y.ndim}..{y.ndim - 1} "
                         f"for shape {y.shape}")
    if padtype not in PADTYPES:
        raise InputError(f"resample: padtype={padtype!r}: expected one of {', '.join(PADTYPES)}")
    if up == down:
        return np.array(y, dtype=np.float64, order="C")
    y = np.asarray(y, dtype=np.float64)
    return np.ascontiguousarray(signal.resample_poly(y, up, down, axis=axis, window=lowpass(up, down),
                                                     padtype=padtype))
