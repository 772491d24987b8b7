"""Valence and arousal of a fused distribution, from the bundle's affect space."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from edge_mer.bundle.schema import AffectSpace
from edge_mer.errors import BundleError, InputError

log = logging.getLogger(__name__)


def valence_arousal(probs: Mapping[str, float], affect: AffectSpace) -> tuple[float, float]:
    """The expected (valence, arousal) of the label coordinates under ``probs``.

    ``probs`` is divided by its sum, so float rounding does not shrink the
    result towards the centre. A label without coordinates is a
    :class:`BundleError` naming it (bundle validation guarantees coordinates
    for every label an encoder maps to, so this means a head or caller
    produced a label the bundle never declared); empty, negative, non-finite
    or all-zero probabilities are an :class:`InputError`.
    """
    total = 0.0
    valence = 0.0
    arousal = 0.0
    for label, p in probs.items():
        coords = affect.valence_arousal.get(label)
        if coords is None:
            raise BundleError(f"label {label!r} has no valence/arousal coordinates in the bundle's affect space")
        if not (math.isfinite(p) and p >= 0):
            raise InputError(f"probability of {label!r} must be finite and >= 0, got {p}")
        total += p
        valence += p * coords[0]
        arousal += p * coords[1]
    if total <= 0:
        raise InputError(f"cannot take valence/arousal of {dict(probs)}: no probability mass")
    return valence / total, arousal / total
