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

The modality check (:class:`LearnedOptions`, ``[fusion.learned]``), before the head:

* an encoder whose measured skill (its fusion weight: ``(accuracy - chance)
  / (1 - chance)`` on subject-independent held-out data) is below
  ``min_skill`` (default 0.1) is masked out: at chance across people, what
  the head learnt about it from a few training subjects does not carry over
  to new ones (the default bundle's EEG, skill 0.026);
* a result whose calibrated confidence ``(top - 1/K) / (1 - 1/K)`` (as in
  :mod:`edge_mer.fusion.reliability`) is below ``min_confidence`` (default
  0.1) is uninformative and masked out, as M3ER drops an ineffective
  modality; when every result is uninformative they are all kept;
* with one result left, ``single_passthrough`` (default on) returns its own
  distribution: a lone modality has nothing to be fused with, and a head
  fitted on other people's pairings only re-maps it.

Why, on held-out pairings of people neither the encoders nor the head saw
(``training/fusion_eval.py``, split B, 3,000 pairings each): without the
check the head turned speech alone 49.1% into 47.6%, speech + at-chance EEG
48.5% into 44.8%, and face + EEG 61.4% was helped only by re-mapping the
face; with it every subset of modalities is at or above its best single
modality (speech + EEG 48.5%, face + speech + EEG 77.8% against 61.9%).
"""
from __future__ import annotations

import dataclasses

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bundle.feeds import head_ranges
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.precision import resolve_precision
from edge_mer.bundle.schema import FusionHead, TensorInfo
from edge_mer.errors import BackendError, BundleError, ConfigError, InputError
from edge_mer.config import require
from edge_mer.fusion.base import FusionContext, FusionRule, checked_probs
from edge_mer.fusion.reliability import confidence
from edge_mer.names import AUTO
from edge_mer.numeric import softmax
from edge_mer.results import ModalityResult

log = logging.getLogger(__name__)

MASK_INPUT = "mask"
_FLOAT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class LearnedOptions:
    """The ``[fusion.learned]`` options: the modality check in front of the head (module docstring).

    ``min_confidence`` 0 and ``min_skill`` 0 turn those checks off.
    """

    min_confidence: float = 0.1
    single_passthrough: bool = True
    min_skill: float = 0.1

    def __post_init__(self) -> None:
        okay = isinstance(self.min_skill, (int, float)) and not isinstance(self.min_skill, bool)
        require(okay and 0.0 <= self.min_skill <= 1.0, f"min_skill must be a number in 0..1, got {self.min_skill!r}")
        ok = isinstance(self.min_confidence, (int, float)) and not isinstance(self.min_confidence, bool)
        require(ok and 0.0 <= self.min_confidence <= 1.0,
                f"min_confidence must be a number in 0..1, got {self.min_confidence!r}")
        require(isinstance(self.single_passthrough, bool),
                f"single_passthrough must be true or false, got {self.single_passthrough!r}")


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
                 backend_options: BackendOptions | None = None, options: LearnedOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else LearnedOptions()
        head = head if head is not None else bundle.manifest.fusion.head
        if head is None:
            raise BundleError(f"bundle {bundle.manifest.name} has no fusion head")
        self.layout = head_layout(bundle, head)
        options = backend_options or BackendOptions()
        self.precision = resolve_precision("fusion_head", head, precision, resolve_backend_name(options.name))
        ref = dataclasses.replace(bundle.head_ref(head, self.precision), dim_ranges=head_ranges(head))
        self._backend = create_backend(ref, backend_options).load()
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
        try:
            checked = LearnedOptions(**options)
        except (TypeError, ConfigError) as exc:  # an unknown option, or a value out of range
            raise ConfigError(f"fusion rule {cls.name!r}: {exc}") from None
        return cls(context.bundle, None, context.precision, context.backend_options, checked)

    @property
    def labels(self) -> tuple[str, ...]:
        """The fused labels, in the head's output order."""
        return self.layout.output.labels

    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        present = self._checked(self._present(results, weights))
        if not present:
            log.debug("learned fusion: no valid result with positive weight among %d", len(results))
            return None
        if len(present) == 1 and self.options.single_passthrough:
            return dict(next(iter(present.values())))
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
            # Weights are the encoders' skills: a skill below min_skill is masked like an invalid result.
            if not (result.valid and w > 0) or (weights and w < self.options.min_skill):
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

    def _checked(self, present: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """``present`` without the uninformative results (all of them when none is informative)."""
        threshold = self.options.min_confidence
        kept = {name: probs for name, probs in present.items() if confidence(list(probs.values())) >= threshold}
        for name in set(present) - set(kept):
            log.debug("learned fusion: %s is uninformative this tick; masked out", name)
        return kept or present

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

