"""Reliability-aware fusion: each modality weighs its measured skill times its confidence at this tick.

The rule ``reliability`` is the weighted linear pool of
:class:`~edge_mer.fusion.rules.WeightedMean` (same coverage rule, see
:mod:`edge_mer.fusion.rules`) with per-tick weights instead of fixed ones.
Encoder ``m`` with skill ``s_m`` (its fusion weight: in the bundle, the
measured ``(accuracy - chance) / (1 - chance)`` on subject-independent
held-out data) and calibrated distribution ``p_m`` over its own ``K_m``
labels weighs ``w_m = s_m * c_m``, then the modality check below may cut it.

Confidence ``c_m`` (``confidence``, default ``top``)
    ``top``: ``(max p - 1/K) / (1 - 1/K)``. With temperature-calibrated
    probabilities the top probability is the expected accuracy of this
    tick's top label, so this is that accuracy corrected for chance (``1/K``)
    exactly as the skill corrects the held-out accuracy: 0 for a uniform
    distribution whatever ``K``, 1 for a one-hot, comparable between a
    3-label EEG and a 7-label face. ``entropy``: ``1 - H(p) / log K``, also
    0 for uniform and 1 for one-hot; it uses the whole distribution (a close
    second label lowers it), at the price of no accuracy reading. A one-label
    encoder has confidence 0 (the coverage rule makes it uniform), and a
    confidence within 1e-9 of 0 counts as 0 (float rounding of a uniform).

The modality check (after M3ER, Mittal et al., AAAI 2020)
    M3ER checks each modality's effectiveness before fusing (a canonical
    correlation between its features and the others'; an ineffective one is
    replaced by proxy features). At the edge only the calibrated outputs are
    shared, so the check runs on them and down-weights instead of regenerating:

    * uninformative: ``c_m < min_confidence`` (default 0.1) multiplies
      ``w_m`` by ``uninformative_factor`` (default 0: left out);
    * contradicting: the others' consensus is their weighted linear pool
      ``q`` (weights ``w`` after the first cut; the modalities still above 0
      are coverage-extended over the union of their labels). When the
      Jensen-Shannon divergence in bits (symmetric, in 0..1 whatever the
      label count) ``JS(p~_m, q) > max_disagreement`` (default 0.5) and the others
      together weigh more than ``m``, ``w_m`` is multiplied by
      ``contradiction_factor`` (default 0.25: outvoted, not silenced, since
      the odd one out may be the one that is right). Each modality is judged
      against the same weights, so the result does not depend on their order,
      and one already cut as uninformative is not cut again.

    A modality whose weight ends 0 is left out, labels included (with a
    weight above 0, its labels join the union that the others are extended
    to). One contributing modality: its distribution, unchanged. When every
    weight ends 0 (every modality uninformative) the rule falls back to the
    skill weights, i.e. ``weighted_mean``: a valid result never fuses to None.

Worked examples (face's 7 canonical labels, speech's 7 with ``boredom`` for
``surprise``, EEG's happy/sad/fear; face skill 0.63, a speech encoder of skill
0.35, the default bundle's EEG skill 0.0261; default options;
``tests/unit/fusion/test_reliability.py`` checks every number)

1.  Speech says nothing. Face happy 0.8 (0.2/6 = 0.0333 elsewhere): c = (0.8 -
    1/7) / (6/7) = 0.7667, w = 0.4830. Speech uniform: c = 0, w = 0, left out.
    Fused = face's distribution exactly (no ``boredom``). ``weighted_mean``
    with the same skills gives speech 35.7 % and 8 labels: happy 0.4946,
    boredom 0.1250.
2.  Speech contradicts. Face as above against speech angry 0.9 (0.1/6 =
    0.0167 elsewhere): c = 0.8833, w = 0.3092. Extended to the 8 labels, face
    is happy 0.7000, boredom 0.1250 and speech angry 0.7875, surprise 0.1250;
    JS = 0.690 bits > 0.5, and face (0.4830) outweighs speech, so speech is
    cut to 0.3092 * 0.25 = 0.0773: shares 0.862 / 0.138 instead of 0.610 /
    0.390. Fused happy 0.6054, angry 0.1338, boredom 0.1098 (happy 0.4325,
    angry 0.3251 unchecked). Face is not cut: speech alone weighs less.
3.  Mild disagreement. Face happy 0.6 against speech angry 0.6 (each 0.4/6
    elsewhere): JS = 0.328 bits <= 0.5, nothing is cut. Both have c =
    0.5333, so the shares are the skills' (0.643 / 0.357): ``weighted_mean``.
4.  EEG at chance. Face as in 1; EEG happy 0.36, sad 0.33, fear 0.31: c =
    (0.36 - 1/3) / (2/3) = 0.04 < 0.1, so it is left out: fused = face. Even
    with the check off (``uninformative_factor = 1``) it weighs 0.0261 * 0.04
    = 0.00104, a share of 0.22 %, where ``weighted_mean`` gives it 3.98 %.

Diagnostics: :attr:`ReliabilityRule.last_report` holds the last tick's
:class:`ModalityCheck` per contributing encoder (skill, confidence,
divergence, verdict, final share); the scheduler puts
:attr:`~ReliabilityRule.last_weights` in the decision's ``fusion_weights``,
and each cut is logged at DEBUG.
"""
from __future__ import annotations

import logging
import math
import numbers
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from edge_mer.config import require
from edge_mer.fusion.base import FusionContext
from edge_mer.fusion.rules import WeightedMean, extend_to_labels, label_order
from edge_mer.results import ModalityResult

log = logging.getLogger(__name__)

#: How a distribution's confidence is measured (see the module docstring).
ConfidenceMeasure = Literal["top", "entropy"]
CONFIDENCE_MEASURES: tuple[ConfidenceMeasure, ...] = typing.get_args(ConfidenceMeasure)
#: What the modality check made of one encoder this tick.
Verdict = Literal["kept", "uninformative", "contradicts"]
#: A confidence this close to 0 is 0: a uniform distribution must drop out exactly, not bring its labels in.
_ZERO_CONFIDENCE = 1e-9
#: Parts of a tick: (result, skill weight, checked probabilities), as FusionRule.contributions gives them.
_Part = tuple[ModalityResult, float, dict[str, float]]


def confidence(probs: Sequence[float] | np.ndarray, measure: ConfidenceMeasure = "top") -> float:
    """How informative a distribution over its own ``K`` labels is: 0 for uniform, 1 for one-hot."""
    p = np.asarray(probs, dtype=np.float64)
    k = p.size
    if k < 2:
        return 0.0
    if measure == "top":
        value = (float(p.max()) - 1.0 / k) / (1.0 - 1.0 / k)
    else:
        nz = p[p > 0]
        value = 1.0 + float((nz * np.log(nz)).sum()) / math.log(k)
    return 0.0 if value < _ZERO_CONFIDENCE else min(1.0, value)


def js_divergence_bits(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen-Shannon divergence of two distributions over the same labels, in bits (0..1)."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0  # m > 0 wherever a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return min(1.0, max(0.0, 0.5 * (kl(p) + kl(q))))


def _fraction(name: str, value: object) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    require(ok, f"{name} must be a number in 0..1, got {value!r}")


@dataclass(frozen=True)
class ReliabilityOptions:
    """The ``[fusion.reliability]`` options: the confidence measure and the modality check's thresholds.

    ``min_confidence`` 0 and ``max_disagreement`` 1 turn their checks off, as
    do factors of 1; every number is in 0..1 (divergences are in bits).
    """

    confidence: ConfidenceMeasure = "top"
    min_confidence: float = 0.1
    uninformative_factor: float = 0.0
    max_disagreement: float = 0.5
    contradiction_factor: float = 0.25

    def __post_init__(self) -> None:
        require(self.confidence in CONFIDENCE_MEASURES,
                f"confidence must be one of {', '.join(CONFIDENCE_MEASURES)}, got {self.confidence!r}")
        for name in ("min_confidence", "uninformative_factor", "max_disagreement", "contradiction_factor"):
            _fraction(name, getattr(self, name))


@dataclass(frozen=True)
class ModalityCheck:
    """One contributing encoder at one tick: its skill, confidence, divergence from the others, verdict, share.

    ``divergence`` is None when this or every other modality weighs 0 after the first cut; ``weight``
    is the encoder's final share of the fused distribution (shares sum to 1).
    """

    encoder: str
    skill: float
    confidence: float
    divergence: float | None
    verdict: Verdict
    weight: float


@dataclass(frozen=True)
class TickReport:
    """The modality check of one tick; ``fallback``: every weight ended 0, so the skills were used."""

    checks: tuple[ModalityCheck, ...]
    weights: dict[str, float]
    fallback: bool = False


@runtime_checkable
class ReportsWeights(Protocol):
    """A rule that says which weight each encoder had in its last fused tick (the decision's ``fusion_weights``)."""

    @property
    def last_weights(self) -> Mapping[str, float]:
        """``{encoder: share}`` for every result of the last tick (0: left out); empty when it fused nothing."""


class ReliabilityRule(WeightedMean):
    """The linear pool with weights skill x confidence and the modality check of the module docstring."""

    name = "reliability"

    def __init__(self, options: ReliabilityOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else ReliabilityOptions()
        #: The last tick's modality check; None before the first tick and after one with no contribution.
        self.last_report: TickReport | None = None

    @classmethod
    def build(cls, context: FusionContext, **options: Any) -> ReliabilityRule:
        """The rule with ``options`` as the fields of :class:`ReliabilityOptions` (``min_confidence=0.2``...)."""
        return cls(cls.checked_options(ReliabilityOptions, options))

    @property
    def last_weights(self) -> dict[str, float]:
        return {} if self.last_report is None else dict(self.last_report.weights)

    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        self.last_report = None  # a tick that fails or fuses nothing reports nothing
        return super().fuse(results, weights)

    def contributions(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> list[_Part]:
        """The contributing results with their reliability weights (the modality check applied)."""
        parts = super().contributions(results, weights)
        if not parts:
            return parts
        checks, final = self._check(parts)
        fallback = not final.any()
        if fallback:
            log.debug("reliability fusion: every weight is 0 after the modality check; using the skill weights")
            final = np.array([skill for _, skill, _ in parts], dtype=np.float64)
        shares = final / final.sum()
        checks = [ModalityCheck(c.encoder, c.skill, c.confidence, c.divergence, c.verdict, float(s))
                  for c, s in zip(checks, shares)]
        by_encoder = {c.encoder: c.weight for c in checks}
        self.last_report = TickReport(tuple(checks), {r.encoder: by_encoder.get(r.encoder, 0.0) for r in results},
                                      fallback)
        return [(r, float(w), probs) for (r, _, probs), w in zip(parts, final) if w > 0]

    def _check(self, parts: Sequence[_Part]) -> tuple[list[ModalityCheck], np.ndarray]:
        """Each part's check (share not yet set) and its weight after the modality check."""
        opts = self.options
        skills = np.array([skill for _, skill, _ in parts], dtype=np.float64)
        conf = np.array([confidence(list(probs.values()), opts.confidence) for _, _, probs in parts])
        if len(parts) == 1:  # nothing to weigh it against: its own distribution, unchanged
            return [ModalityCheck(parts[0][0].encoder, float(skills[0]), float(conf[0]), None, "kept", 1.0)], skills
        uninformative = conf < opts.min_confidence
        w = skills * conf * np.where(uninformative, opts.uninformative_factor, 1.0)
        divergence = self._divergences(parts, w)
        contradicts = np.array([d is not None and d > opts.max_disagreement and w.sum() - wi > wi and not u
                                for d, wi, u in zip(divergence, w, uninformative)], dtype=bool)
        final = w * np.where(contradicts, opts.contradiction_factor, 1.0)
        checks = []
        for (result, _, _), s, c, d, u, x in zip(parts, skills, conf, divergence, uninformative, contradicts):
            verdict: Verdict = "uninformative" if u else "contradicts" if x else "kept"
            if verdict != "kept":
                log.debug("reliability fusion: %s is %s (confidence %.3f, divergence %s bits); weight cut",
                          result.encoder, verdict, c, "n/a" if d is None else f"{d:.3f}")
            checks.append(ModalityCheck(result.encoder, float(s), float(c), d, verdict, 0.0))
        return checks, final

    @staticmethod
    def _divergences(parts: Sequence[_Part], weights: np.ndarray) -> list[float | None]:
        """Each part's JS divergence (bits) from the weighted pool of the others; None when it or they weigh 0.

        Only parts of weight > 0 are extended (to the union of their labels): one left out must not move
        the others' divergences by adding labels, or a uniform modality could change the result.
        """
        active = [i for i, w in enumerate(weights) if w > 0]
        out: list[float | None] = [None] * len(parts)
        if len(active) < 2:
            return out
        labels = label_order({label for i in active for label in parts[i][2]})
        matrix = np.stack([extend_to_labels(parts[i][2], labels) for i in active])
        w = weights[active]
        for row, i in enumerate(active):
            others = w.copy()
            others[row] = 0.0
            out[i] = js_divergence_bits(matrix[row], others @ matrix / others.sum())
        return out
