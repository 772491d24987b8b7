"""The typed results every layer shares: one modality's contribution, and the fused decision.

:class:`Decision` is what the scheduler makes and every sink, the bench and
the calibration tools read (by attribute); :meth:`Decision.to_json` is the
one place that spells the decision format (the JSON lines output, /state,
/ws, LSL), and :meth:`Decision.from_json` reads it back.
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_mer.errors import InputError
from edge_mer.names import ReasonCode


@dataclass(frozen=True)
class FaceResult:
    """One tracked face's evidence in a decision: its id, last box, canonical probabilities and affect.

    ``valid`` is False (with ``code``/``reason``) for a face whose id is kept
    while it is not found (it may reappear) or whose crops all failed; its
    ``box`` is then where it was last seen and ``probs`` is empty.
    ``primary`` marks the face the fused estimate is built from.
    """

    id: int
    box: tuple[int, int, int, int]
    valid: bool
    probs: dict[str, float] = field(default_factory=dict)
    valence: float = 0.0
    arousal: float = 0.0
    primary: bool = False
    reason: str | None = None
    code: ReasonCode | None = None

    @property
    def label(self) -> str | None:
        return max(self.probs, key=self.probs.get) if self.valid and self.probs else None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "box": list(self.box), "label": self.label,
                "probs": {k: round(v, 6) for k, v in self.probs.items()},
                "valence": round(self.valence, 6), "arousal": round(self.arousal, 6), "valid": self.valid,
                "reason": self.reason, "reason_code": None if self.code is None else self.code.value,
                "primary": self.primary}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaceResult:
        code = data.get("reason_code")
        try:
            x, y, w, h = (int(v) for v in data["box"])
            return cls(int(data["id"]), (x, y, w, h), bool(data["valid"]),
                       {str(k): float(v) for k, v in data.get("probs", {}).items()}, float(data.get("valence", 0.0)),
                       float(data.get("arousal", 0.0)), bool(data.get("primary", False)), data.get("reason"),
                       None if code is None else ReasonCode(code))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"decision face: not in the decision format ({exc})") from None


@dataclass(frozen=True)
class ModalityResult:
    """One encoder's output for one decision tick, on canonical labels.

    ``probs`` maps canonical labels (plus labels kept under their own name,
    such as ``boredom``) to probabilities summing to 1; it is empty when the
    modality is invalid, and then ``code`` says why and ``reason`` says it for
    people (``"no face"``, ``"stale: newest data 1.2 s old"``, ``"bad channels ..."``).
    """

    modality: str
    encoder: str
    valid: bool
    reason: str | None = None
    probs: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    #: Daemon-clock time of the newest sample this result examined, valid or not ("silence" and "no face"
    #: examined their window); None when it examined none (no data, stale, failed). Not part of the JSON.
    newest_t_ns: int | None = None
    code: ReasonCode | None = None
    #: Per tracked face (face modality only); affect is filled in by the scheduler. Not in this JSON:
    #: the decision carries them at its top level (``faces``).
    faces: tuple[FaceResult, ...] = ()
    #: The encoder's ``embedding`` outputs over the window (``{output name: float32 [D]}``), for fusion heads
    #: that consume them; empty for an invalid result or an encoder without any. Not part of the JSON.
    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str | None:
        return max(self.probs, key=self.probs.get) if self.valid and self.probs else None

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "reason": self.reason, "reason_code": None if self.code is None else self.code.value,
                "label": self.label, "probs": {k: round(v, 6) for k, v in self.probs.items()},
                "latency_ms": round(self.latency_ms, 3)}

    @classmethod
    def invalid(cls, modality: str, encoder: str, code: ReasonCode, reason: str | None = None,
                latency_ms: float = 0.0, newest_t_ns: int | None = None) -> ModalityResult:
        """An invalid result; ``reason`` defaults to the code's plain text."""
        return cls(modality, encoder, False, reason or code.text, {}, latency_ms, newest_t_ns, code)

    @classmethod
    def from_json(cls, modality: str, data: Mapping[str, Any]) -> ModalityResult:
        """One entry of a decision's ``modalities`` read back (the encoder name is not in the JSON)."""
        code = data.get("reason_code")
        try:
            return cls(modality, modality, bool(data["valid"]), data.get("reason"),
                       {str(k): float(v) for k, v in data.get("probs", {}).items()},
                       float(data.get("latency_ms", 0.0)), None, None if code is None else ReasonCode(code))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"decision modality {modality!r}: not in the decision format ({exc})") from None


@dataclass(frozen=True)
class Uncertainty:
    """How sure a probabilistic fusion (``monte_carlo``) is of one tick's fused label.

    ``label`` is that tick's fused label, before smoothing (the decision's
    ``label`` is after it, so around a change of label the two can differ);
    ``entropy`` is the entropy (nats) of the tick's fused distribution;
    ``agreement`` the share of the ``samples`` draws whose fused label is
    ``label``; ``interval`` the central ``level`` interval of ``label``'s fused
    probability over the draws.
    """

    entropy: float
    agreement: float
    interval: tuple[float, float]
    level: float
    samples: int
    label: str | None = None

    def __post_init__(self) -> None:
        lo, hi = self.interval
        if not (math.isfinite(self.entropy) and self.entropy >= 0 and 0.0 <= self.agreement <= 1.0
                and 0.0 <= lo <= hi <= 1.0 and 0.0 < self.level < 1.0
                and isinstance(self.samples, int) and self.samples >= 1):
            raise InputError(f"uncertainty out of range: entropy {self.entropy!r} (>= 0), agreement "
                             f"{self.agreement!r} (0..1), interval {list(self.interval)} (0 <= lo <= hi <= 1), "
                             f"level {self.level!r} (0..1), samples {self.samples!r} (>= 1)")

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "entropy": round(self.entropy, 6), "agreement": round(self.agreement, 6),
                "interval": [round(self.interval[0], 6), round(self.interval[1], 6)], "level": self.level,
                "samples": self.samples}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Uncertainty:
        try:
            lo, hi = (float(v) for v in data["interval"])
            samples = data["samples"]
            if not isinstance(samples, int) or isinstance(samples, bool):
                raise ValueError(f"samples {samples!r} is not a whole number")
            label = data.get("label")
            return cls(float(data["entropy"]), float(data["agreement"]), (lo, hi), float(data["level"]), samples,
                       None if label is None else str(label))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"decision uncertainty: not in the decision format ({exc})") from None


@dataclass(frozen=True)
class Decision:
    """One fused estimate: ``t`` (seconds, daemon or session clock), the label, probabilities,
    valence/arousal, each modality's result, and how long the tick took.

    ``fusion_weights`` is ``{encoder: share}`` of this tick's fusion (before
    smoothing; shares of the contributing encoders sum to 1, 0 for one left
    out), from rules whose weights change per tick (``reliability``); empty
    otherwise, and then the JSON has no ``fusion_weights`` key.

    ``uncertainty`` comes from probabilistic rules (``monte_carlo``) and
    ``labels_active`` (``{label: score}`` of the labels at or above their
    thresholds, possibly empty) from a head with a ``multilabel`` output; each
    is None otherwise, and its JSON key is then absent.
    """

    t: float
    label: str
    probs: dict[str, float]
    valence: float
    arousal: float
    modalities: tuple[ModalityResult, ...]
    latency_ms: float
    #: Every tracked face's evidence (empty without a face modality or with no face in view).
    faces: tuple[FaceResult, ...] = ()
    fusion_weights: dict[str, float] = field(default_factory=dict)
    uncertainty: Uncertainty | None = None
    labels_active: dict[str, float] | None = None

    def result(self, modality: str) -> ModalityResult | None:
        """This decision's result for ``modality``, or None when it has none."""
        return next((r for r in self.modalities if r.modality == modality), None)

    def valid(self, modality: str) -> bool:
        """Whether ``modality`` gave valid evidence to this decision."""
        return any(r.valid for r in self.modalities if r.modality == modality)

    def to_json(self) -> dict[str, Any]:
        """The decision format: the JSON object of one line of the JSON lines output."""
        data: dict[str, Any] = {
            "t": round(self.t, 6),
            "label": self.label,
            "probs": {k: round(v, 6) for k, v in self.probs.items()},
            "valence": round(self.valence, 6),
            "arousal": round(self.arousal, 6),
            "modalities": {r.modality: r.to_json() for r in self.modalities},
            "latency_ms": round(self.latency_ms, 3),
            "faces": [f.to_json() for f in self.faces],
        }
        if self.fusion_weights:  # only rules with per-tick weights: other decisions keep their exact format
            data["fusion_weights"] = {k: round(v, 6) for k, v in self.fusion_weights.items()}
        if self.uncertainty is not None:
            data["uncertainty"] = self.uncertainty.to_json()
        if self.labels_active is not None:
            data["labels_active"] = {k: round(v, 6) for k, v in self.labels_active.items()}
        return data

    @functools.cached_property
    def json_text(self) -> str:
        """:meth:`to_json` as one line of strict JSON, made once however many sinks send it."""
        return dumps_json(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        """A decision read back from its JSON object (a line of the JSON lines output)."""
        if not isinstance(data, Mapping):
            raise InputError(f"a decision must be a JSON object, got {type(data).__name__}")
        try:
            modalities = tuple(ModalityResult.from_json(m, r) for m, r in data["modalities"].items())
            faces = tuple(FaceResult.from_json(f) for f in data.get("faces", ()))
            weights = {str(k): float(v) for k, v in data.get("fusion_weights", {}).items()}
            uncertainty = Uncertainty.from_json(data["uncertainty"]) if "uncertainty" in data else None
            active = data.get("labels_active")
            active = None if active is None else {str(k): _score(v) for k, v in active.items()}
            return cls(float(data["t"]), str(data["label"]), {str(k): float(v) for k, v in data["probs"].items()},
                       float(data["valence"]), float(data["arousal"]), modalities, float(data["latency_ms"]), faces,
                       weights, uncertainty, active)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"not a decision in the decision format (key or value {exc})") from None


def _score(value: Any) -> float:
    """A multi-label score read back: a number in [0, 1]."""
    score = float(value)
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"labels_active score {value!r} is not in [0, 1]")
    return score


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_json(obj: Any) -> str:
    """One line of strict, compact JSON (no newline): UTF-8 kept as is, NaN and Inf written as ``null``."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        # Only reached when a float is NaN or infinite: rare, so the copy is cheap enough.
        return json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
