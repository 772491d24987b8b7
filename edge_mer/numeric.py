"""Small numeric helpers shared by the runtime and the host tools."""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The softmax of ``x`` along ``axis``, computed after subtracting the maximum (no overflow)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def is_number_text(text: str) -> bool:
    """Whether ``float(text)`` accepts ``text`` (CSV cells: ``"1e-3"``, ``"nan"``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


#: Probabilities below this count as this before a log (temperature scaling of a model that outputs exact 0).
PROB_FLOOR = 1e-12


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row: temperature scaling applied to probabilities.

    A model that outputs probabilities (a softmax inside the graph) is
    calibrated exactly as its logits would be, because ``log softmax(z)``
    differs from ``z`` by a per-row constant that the softmax removes.
    ``T > 1`` flattens a distribution (an over-confident encoder), ``T < 1``
    sharpens it; ``T == 1`` returns ``probs`` renormalised.
    """
    return softmax(np.log(np.maximum(probs, PROB_FLOOR)) / temperature)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the mean over equal-width top-probability bins of |accuracy - confidence|, weighted by bin size.

    ``probs`` is ``[n, classes]``, ``labels`` ``[n]`` class indices (Guo et al. 2017, 15 bins).
    """
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(float(correct[members].mean()) - float(top[members].mean()))
    return total / max(len(labels), 1)
