"""A model's input and output tensors as the bundle manifest declares them, with their bounds.

Split from :mod:`edge_mer.bundle.schema` (which re-exports :class:`TensorInfo`)
so the schema stays one readable module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_mer.config import require

__all__ = ["MAX_DIM", "MAX_FIXED_ELEMENTS", "MAX_RANK", "OutputKind", "TensorInfo"]

_DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
#: Bounds on tensor shapes (backends and the benchmark size buffers from the fixed dimensions).
MAX_RANK, MAX_DIM, MAX_FIXED_ELEMENTS = 8, 1 << 20, 1 << 28
#: ``multilabel``: independent sigmoid scores per label (never renormalised), with per-label ``thresholds``;
#: ``embedding``: a ``[N, D]`` feature vector a fusion head may consume (``<encoder>.<output>`` head inputs).
OutputKind = Literal["probs", "logits", "valence_arousal", "embedding", "multilabel"]


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (messages quote values from untrusted files)."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


@dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor: ints are fixed sizes, strings name dynamic axes."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    layout: str | None = None
    kind: OutputKind | None = None
    labels: tuple[str, ...] = ()
    description: str = ""
    #: Per label of a ``multilabel`` output, the score at or above which the label is active (each in (0, 1)).
    thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        require(bool(self.name), "tensor name must not be empty")
        require(self.dtype in _DTYPES, f"tensor {self.name}: dtype {self.dtype!r} is not one of {', '.join(_DTYPES)}")
        require(len(self.shape) <= MAX_RANK, f"tensor {self.name}: rank {len(self.shape)}, expected at most {MAX_RANK}")
        for d in self.shape:
            require((isinstance(d, int) and 0 < d <= MAX_DIM) or (isinstance(d, str) and 0 < len(d) <= 64),
                    f"tensor {self.name}: dimension {_short(d)} must be an int in 1..{MAX_DIM} "
                    "or a dynamic axis name of 1..64 characters")
        fixed = math.prod(d for d in self.shape if isinstance(d, int))
        require(fixed <= MAX_FIXED_ELEMENTS,
                f"tensor {self.name}: fixed dimensions {list(self.shape)} make {fixed} elements, "
                f"expected at most {MAX_FIXED_ELEMENTS}")
        if self.layout is not None:
            require(len(self.layout) == len(self.shape),
                    f"tensor {self.name}: layout {self.layout!r} has {len(self.layout)} letters for rank {len(self.shape)}")
        if self.kind in ("probs", "logits"):
            require(len(self.labels) > 0, f"output {self.name}: kind {self.kind} needs its class labels")
            last = self.shape[-1] if self.shape else None
            require(not isinstance(last, int) or last == len(self.labels),
                    f"output {self.name}: {len(self.labels)} labels for a last dimension of {last}")
        if self.kind == "valence_arousal":
            require(bool(self.shape) and self.shape[-1] == 2, f"output {self.name}: valence_arousal needs last dimension 2")
        self._check_multilabel()
        if self.kind == "embedding":
            require(len(self.shape) == 2 and isinstance(self.shape[1], int),
                    f"tensor {self.name}: an embedding is [batch, width] with a fixed width, got {list(self.shape)}")

    def _check_multilabel(self) -> None:
        if self.kind != "multilabel":
            require(not self.thresholds, f"tensor {self.name}: thresholds are for kind multilabel, not {self.kind}")
            return
        last = self.shape[-1] if self.shape else None
        require(len(self.labels) > 0 and (not isinstance(last, int) or last == len(self.labels)),
                f"output {self.name}: kind multilabel needs one label per score ({len(self.labels)} labels "
                f"for a last dimension of {last})")
        require(len(set(self.labels)) == len(self.labels), f"output {self.name}: labels must be distinct")
        require(len(self.thresholds) == len(self.labels),
                f"output {self.name}: {len(self.thresholds)} thresholds for {len(self.labels)} labels")
        for label, value in zip(self.labels, self.thresholds):
            require(isinstance(value, (int, float)) and 0.0 < value < 1.0,
                    f"output {self.name}: threshold of {label!r} must be in (0, 1), got {value!r}")

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)
