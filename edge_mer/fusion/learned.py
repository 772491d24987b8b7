"""The learned fusion head: an ONNX model over the encoders' probabilities, run by a Backend.

Input convention (checked when the head is built, :class:`BundleError` otherwise):

* One input per encoder the head uses, **named after the encoder** (a key of
  the bundle's ``encoders``), declared with ``kind: "probs"`` and ``labels``:
  canonical labels of that encoder (its ``label_map`` targets, e.g.
  ``boredom`` for the EMO-DB speech encoder) in the order the head expects.
  Shape ``[1, K]`` or ``[batch_axis, K]`` with ``K = len(labels)``, dtype
  float32 or float16. It is fed the result's probabilities at those labels,
  in that order, as they are (not renormalised if the head uses only some of
  the encoder's labels), and zeros when the encoder has no valid result.
* One input named ``mask`` (reserved: no encoder may be called that), shape
  ``[1, M]`` or ``[batch_axis, M]``, float dtype, whose ``labels`` name the M
  encoder inputs in mask order. It is fed 1.0 for an encoder whose result is
  valid and weighted above 0 this tick, 0.0 otherwise.
* Exactly one output of ``kind`` ``probs`` (or ``logits``, softmaxed here)
  with shape ``[1, L]`` or ``[batch_axis, L]``; its ``labels`` are the fused
  labels and must all have valence/arousal coordinates in the bundle.

A manifest's head, for face and speech::

    "inputs": [
      {"name": "face", "shape": [1, 7], "kind": "probs", "labels": ["angry", ..., "neutral"]},
      {"name": "speech", "shape": [1, 7], "kind": "probs", "labels": ["angry", "boredom", ...]},
      {"name": "mask", "shape": [1, 2], "labels": ["face", "speech"]}],
    "outputs": [{"name": "probs", "shape": [1, 8], "kind": "probs", "labels": [...]}]

Weights: the head's parameters are its weights, so positive fusion weights
are ignored; an encoder of weight 0 (by the policy of
:class:`~edge_mer.fusion.base.FusionRule`) is masked out like an invalid one.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.precision import resolve_precision
from edge_mer.bundle.schema import FusionHead, TensorInfo
from edge_mer.errors import BackendError, BundleError, ConfigError, InputError
from edge_mer.fusion.base import FusionContext, FusionRule, checked_probs
from edge_mer.names import AUTO
from edge_mer.numeric import softmax
from edge_mer.results import ModalityResult

log = logging.getLogger(__name__)

MASK_INPUT = "mask"
_FLOAT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class HeadLayout:
    """The head's tensors, checked against the input convention."""

    encoders: tuple[TensorInfo, ...]
    mask: TensorInfo
    output: TensorInfo


def _check_matrix(tensor: TensorInfo, width: int, what: str) -> None:
    shape = tensor.shape
    if len(shape) != 2 or not (shape[0] == 1 or isinstance(shape[0], str)) or shape[1] != width:
        raise BundleError(f"fusion head {what} {tensor.name!r} has shape {list(shape)}, expected [1, {width}]")
    if what != "output" and tensor.dtype not in _FLOAT_DTYPES:
        raise BundleError(f"fusion head input {tensor.name!r} is {tensor.dtype}, expected float32 or float16")


def _check_encoder_input(bundle: Bundle, tensor: TensorInfo) -> None:
    encoders = bundle.manifest.encoders
    if tensor.name not in encoders:
        raise BundleError(f"fusion head input {tensor.name!r} names no encoder "
                          f"(encoders: {', '.join(encoders)}; the validity mask input is {MASK_INPUT!r})")
    if tensor.kind != "probs" or not tensor.labels:
        raise BundleError(f"fusion head input {tensor.name!r} needs kind 'probs' and the labels it expects")
    have = set(encoders[tensor.name].label_map.values())
    unknown = [label for label in tensor.labels if label not in have]
    if unknown or len(set(tensor.labels)) != len(tensor.labels):
        raise BundleError(f"fusion head input {tensor.name!r}: labels {list(tensor.labels)} must be distinct "
                          f"labels of encoder {tensor.name} ({', '.join(sorted(have))})")
    _check_matrix(tensor, len(tensor.labels), "input")


def head_layout(bundle: Bundle, head: FusionHead) -> HeadLayout:
    """Check ``head``'s declared tensors against the input convention of this module."""
    if MASK_INPUT in bundle.manifest.encoders:
        raise BundleError(f"encoder name {MASK_INPUT!r} collides with the fusion head's mask input")
    by_name = {t.name: t for t in head.inputs}
    mask = by_name.get(MASK_INPUT)
    if mask is None:
        raise BundleError(f"fusion head needs an input named {MASK_INPUT!r} (the validity mask)")
    encoders = tuple(t for t in head.inputs if t.name != MASK_INPUT)
    if not encoders:
        raise BundleError("fusion head needs at least one encoder input besides the mask")
    for tensor in encoders:
        _check_encoder_input(bundle, tensor)
    if len(mask.labels) != len(set(mask.labels)) or set(mask.labels) != {t.name for t in encoders}:
        raise BundleError(f"fusion head mask labels {list(mask.labels)} must name each encoder input once "
                          f"({', '.join(t.name for t in encoders)})")
    _check_matrix(mask, len(mask.labels), "input")
    outputs = [t for t in head.outputs if t.kind in ("probs", "logits")]
    if len(outputs) != 1:
        raise BundleError(f"fusion head needs exactly one output of kind probs or logits, has {len(outputs)}")
    output = outputs[0]
    _check_matrix(output, len(output.labels), "output")
    coords = bundle.manifest.affect.valence_arousal
    missing = [label for label in output.labels if label not in coords]
    if missing:
        raise BundleError(f"fusion head output label {missing[0]!r} has no affect.valence_arousal coordinates")
    return HeadLayout(encoders, mask, output)


class LearnedHead(FusionRule):
    """Fusion by the bundle's learned head; see the module docstring for its input convention.

    ``head`` defaults to the bundle's ``fusion.head``; ``precision`` ``auto``
    is resolved from the head's gate results exactly as for encoders
    (:func:`~edge_mer.bundle.precision.resolve_precision`). The backend session
    is created and loaded here, so a head that does not fit the convention or
    cannot load fails at construction. Call :meth:`close` (or use ``with``) to release it.
    """

    name = "learned"

    def __init__(self, bundle: Bundle, head: FusionHead | None = None, precision: str = AUTO,
                 backend_options: BackendOptions | None = None) -> None:
        super().__init__()
        head = head if head is not None else bundle.manifest.fusion.head
        if head is None:
            raise BundleError(f"bundle {bundle.manifest.name} has no fusion head")
        self.layout = head_layout(bundle, head)
        options = backend_options or BackendOptions()
        self.precision = resolve_precision("fusion_head", head, precision, resolve_backend_name(options.name))
        self._backend = create_backend(bundle.head_ref(head, self.precision), backend_options).load()
        declared = sorted(t.name for t in head.inputs)
        actual = sorted(s.name for s in self._backend.input_specs)
        if actual != declared:
            self._backend.close()
            raise BundleError(f"fusion head model has inputs {actual}, the manifest declares {declared}")
        self._inputs = {t.name: t for t in self.layout.encoders}

    @classmethod
    def build(cls, context: FusionContext, **options: Any) -> LearnedHead:
        if context.bundle is None:
            raise ConfigError("fusion rule 'learned' needs the bundle that holds its head")
        if options:
            raise ConfigError(f"fusion rule 'learned' takes no options, got {', '.join(sorted(options))}")
        return cls(context.bundle, None, context.precision, context.backend_options)

    @property
    def labels(self) -> tuple[str, ...]:
        """The fused labels, in the head's output order."""
        return self.layout.output.labels

    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        present = self._present(results, weights)
        if not present:
            log.debug("learned fusion: no valid result with positive weight among %d", len(results))
            return None
        feeds = {}
        for name, tensor in self._inputs.items():
            probs = present.get(name, {})
            feeds[name] = np.array([[probs.get(label, 0.0) for label in tensor.labels]], dtype=tensor.np_dtype)
        mask = self.layout.mask
        feeds[mask.name] = np.array([[1.0 if name in present else 0.0 for name in mask.labels]],
                                    dtype=mask.np_dtype)
        out = self._backend.infer(feeds)[self.layout.output.name]
        return dict(zip(self.labels, self._distribution(out)))

    def _present(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, dict[str, float]]:
        present: dict[str, dict[str, float]] = {}
        for result, w in zip(results, self.resolve_weights(results, weights)):
            if not (result.valid and w > 0):
                continue
            if result.encoder not in self._inputs:
                if result.encoder not in self._warned:
                    self._warned.add(result.encoder)
                    log.warning("fusion head has no input for encoder %r; it is left out", result.encoder)
                continue
            if result.encoder in present:
                raise InputError(f"two results for encoder {result.encoder!r} in one fusion tick")
            present[result.encoder] = checked_probs(result)
        return present

    def _distribution(self, out: np.ndarray) -> list[float]:
        vector = np.asarray(out, dtype=np.float64).reshape(-1)
        if vector.shape[0] != len(self.labels):
            raise BackendError(f"fusion head returned {vector.shape[0]} values for {len(self.labels)} labels")
        if not np.isfinite(vector).all():
            raise BackendError(f"fusion head returned NaN or Inf: {vector.tolist()}")
        if self.layout.output.kind == "logits":
            vector = softmax(vector)
        if (vector < 0).any() or vector.sum() <= 0:
            raise BackendError(f"fusion head output is not a distribution: {vector.tolist()}")
        return [float(p) for p in vector / vector.sum()]

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> LearnedHead:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

