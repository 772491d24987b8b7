"""The canonical label set and the mapping of model labels onto it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge_mer.errors import InputError

#: Every fused decision is expressed on these labels (plus any label a model
#: has with no counterpart here, such as EMO-DB's ``boredom``, kept by name).
CANONICAL_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def to_canonical(probs: np.ndarray, model_labels: Sequence[str], label_map: Mapping[str, str]) -> dict[str, float]:
    """One probability vector in the model's label order -> ``{canonical label: p}``.

    Model labels mapped onto the same canonical label add up, so the result
    still sums to what ``probs`` summed to.
    """
    vector = np.asarray(probs, dtype=np.float64).reshape(-1)
    if vector.shape[0] != len(model_labels):
        raise InputError(f"got {vector.shape[0]} probabilities for {len(model_labels)} labels {list(model_labels)}")
    out: dict[str, float] = {}
    for label, p in zip(model_labels, vector):
        target = label_map[label]
        out[target] = out.get(target, 0.0) + float(p)
    return out
