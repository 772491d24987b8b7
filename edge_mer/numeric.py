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
