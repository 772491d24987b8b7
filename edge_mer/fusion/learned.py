"""The learned fusion heads: ONNX models over the encoders' probabilities and embeddings, run by a Backend.

A bundle ships one or more heads by name (``stacked``, ``attention``,
``transformer``, ``compound``...; :meth:`FusionSpec.named_heads`); the run's
``fusion.head`` (``--fusion-head``) picks one, the bundle's default otherwise.
Their input and output convention (probabilities named after the encoder,
embeddings named ``<encoder>.<output>``, the validity ``mask``, one fused
distribution and optionally a ``multilabel`` output) is
:mod:`edge_mer.fusion.head_layout`; it is checked when the head is built
(:class:`BundleError` otherwise). Probabilities are fed as they are (not
renormalised if the head uses only some of an encoder's labels).

A manifest's probability-only head, for face and speech::

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
from edge_mer.bundle.schema import FusionHead
from edge_mer.errors import BackendError, BundleError, ConfigError, InputError
from edge_mer.config import require
from edge_mer.fusion.base import FusionContext, FusionRule, checked_probs
from edge_mer.fusion.head_layout import MASK_INPUT, HeadLayout, head_layout
from edge_mer.fusion.reliability import confidence
from edge_mer.names import AUTO
from edge_mer.numeric import softmax
from edge_mer.results import ModalityResult

log = logging.getLogger(__name__)

__all__ = ["MASK_INPUT", "HeadLayout", "LearnedHead", "LearnedOptions", "head_layout", "shipped_head"]


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


def shipped_head(bundle: Bundle, name: str | None) -> tuple[str, FusionHead]:
    """The bundle's head called ``name`` (None: its default head), with its name; one-line errors otherwise."""
    heads = bundle.manifest.fusion.named_heads()
    if not heads:
        raise BundleError(f"bundle {bundle.manifest.name} has no fusion head")
    chosen = bundle.manifest.fusion.head_name if name is None else name
    if chosen not in heads:
        raise ConfigError(f"fusion head {chosen!r} is not in bundle {bundle.manifest.name} "
                          f"(it ships: {', '.join(heads)})")
    return chosen, heads[chosen]


#: What a present encoder gives the head: its checked probabilities and its embedding outputs.
_Evidence = tuple[dict[str, float], Mapping[str, np.ndarray]]


class LearnedHead(FusionRule):
    """Fusion by one of the bundle's learned heads; see the module docstring for its input convention.

    ``head_name`` picks a shipped head (None: the bundle's default); ``head``
    passes a :class:`FusionHead` directly instead. ``precision`` ``auto``
    is resolved from the head's gate results exactly as for encoders
    (:func:`~edge_mer.bundle.precision.resolve_precision`). The backend session
    is created and loaded here, so a head that does not fit the convention or
    cannot load fails at construction. Call :meth:`close` (or use ``with``) to release it.
    """

    name = "learned"

    def __init__(self, bundle: Bundle, head: FusionHead | None = None, precision: str = AUTO,
                 backend_options: BackendOptions | None = None, options: LearnedOptions | None = None,
                 head_name: str | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else LearnedOptions()
        if head is None:
            head_name, head = shipped_head(bundle, head_name)
        self.head_name = head_name or bundle.manifest.fusion.head_name
        self.layout = head_layout(bundle, head)
        options = backend_options or BackendOptions()
        self.precision = resolve_precision(f"fusion head {self.head_name}", head, precision,
                                           resolve_backend_name(options.name))
        ref = dataclasses.replace(bundle.head_ref(head, self.precision, head_name), dim_ranges=head_ranges(head))
        self._backend = create_backend(ref, backend_options).load()
        declared = sorted(t.name for t in head.inputs)
        actual = sorted(s.name for s in self._backend.input_specs)
        if actual != declared:
            self._backend.close()
            raise BundleError(f"fusion head model has inputs {actual}, the manifest declares {declared}")
        self._inputs = {t.name: t for t in self.layout.encoders}
        self._read = set(self.layout.read_encoders)
        self._active: dict[str, float] | None = None if self.layout.multilabel is None else {}

    @classmethod
    def build(cls, context: FusionContext, **options: Any) -> LearnedHead:
        if context.bundle is None:
            raise ConfigError("fusion rule 'learned' needs the bundle that holds its head")
        checked = cls.checked_options(LearnedOptions, options)
        return cls(context.bundle, None, context.precision, context.backend_options, checked, context.head)

    @property
    def labels(self) -> tuple[str, ...]:
        """The fused labels, in the head's output order."""
        return self.layout.output.labels

    @property
    def last_labels_active(self) -> dict[str, float] | None:
        """The last tick's ``{label: score}`` at or above threshold (empty when it fused nothing);
        None for a head without a multilabel output."""
        return None if self._active is None else dict(self._active)

    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        if self._active is not None:
            self._active = {}
        present = self._checked(self._present(results, weights))
        if not present:
            log.debug("learned fusion: no valid result with positive weight among %d", len(results))
            return None
        passthrough = len(present) == 1 and self.options.single_passthrough
        if passthrough and self.layout.multilabel is None:
            return dict(next(iter(present.values()))[0])
        outputs = self._backend.infer(self._feeds(present))
        # Both outputs are checked before either is used: a failed tick reports no label set.
        fused = dict(zip(self.labels, self._distribution(outputs[self.layout.output.name])))
        active = None if self.layout.multilabel is None else self._label_set(outputs[self.layout.multilabel.name])
        self._active = active
        if passthrough:  # the multilabel output still comes from the head; the distribution is the modality's
            return dict(next(iter(present.values()))[0])
        return fused

    def _feeds(self, present: Mapping[str, _Evidence]) -> dict[str, np.ndarray]:
        feeds = {}
        for name, tensor in self._inputs.items():
            probs = present[name][0] if name in present else {}
            feeds[name] = np.array([[probs.get(label, 0.0) for label in tensor.labels]], dtype=tensor.np_dtype)
        for item in self.layout.embeddings:
            width = int(item.tensor.shape[-1])
            vector = present[item.encoder][1].get(item.output) if item.encoder in present else None
            if vector is None and item.encoder in present and item.tensor.name not in self._warned:
                # Valid probabilities without the embedding: the head runs on zeros there, which is what
                # an encoder without that output gives; say so once, as it is usually a caller's mistake.
                self._warned.add(item.tensor.name)
                log.warning("encoder %r gave no embedding %r; the head's input %r is fed zeros",
                            item.encoder, item.output, item.tensor.name)
            if vector is not None and np.shape(vector) != (width,):
                raise InputError(f"encoder {item.encoder!r}: embedding {item.output!r} has shape "
                                 f"{list(np.shape(vector))}, the head expects [{width}]")
            row = np.zeros(width) if vector is None else vector
            feeds[item.tensor.name] = np.asarray(row, dtype=item.tensor.np_dtype).reshape(1, width)
        mask = self.layout.mask
        feeds[mask.name] = np.array([[1.0 if name in present else 0.0 for name in mask.labels]],
                                    dtype=mask.np_dtype)
        return feeds

    def _label_set(self, scores: np.ndarray) -> dict[str, float]:
        tensor = self.layout.multilabel
        vector = np.asarray(scores, dtype=np.float64).reshape(-1)
        if tensor is None or vector.shape[0] != len(tensor.labels) or not np.isfinite(vector).all() \
                or (vector < 0).any() or (vector > 1).any():
            raise BackendError(f"fusion head multilabel output is not one score in [0, 1] per label: "
                               f"{vector.tolist()[:16]}")
        return {label: float(v) for label, v, t in zip(tensor.labels, vector, tensor.thresholds) if v >= t}

    def _present(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, _Evidence]:
        present: dict[str, _Evidence] = {}
        for result, w in zip(results, self.resolve_weights(results, weights)):
            # Weights are the encoders' skills: a skill below min_skill is masked like an invalid result.
            if not (result.valid and w > 0) or (weights and w < self.options.min_skill):
                continue
            if result.encoder not in self._read:
                if result.encoder not in self._warned:
                    self._warned.add(result.encoder)
                    log.warning("fusion head has no input for encoder %r; it is left out", result.encoder)
                continue
            if result.encoder in present:
                raise InputError(f"two results for encoder {result.encoder!r} in one fusion tick")
            present[result.encoder] = (checked_probs(result), result.embeddings)
        return present

    def _checked(self, present: dict[str, _Evidence]) -> dict[str, _Evidence]:
        """``present`` without the uninformative results (all of them when none is informative)."""
        threshold = self.options.min_confidence
        kept = {name: item for name, item in present.items() if confidence(list(item[0].values())) >= threshold}
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

