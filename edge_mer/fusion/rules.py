"""Late fusion rules that combine per-encoder distributions label by label.

The weight policy is :meth:`edge_mer.fusion.base.FusionRule.resolve_weights`;
the remaining weights are renormalised to sum to 1, so one contributing
encoder yields its own distribution under either rule.

The coverage rule
    Encoders have different label sets: in the default bundle face has the 7
    canonical labels, speech has ``boredom`` instead of ``surprise``, EEG has
    only happy/sad/fear. A tick's fused labels are the union ``L`` of the
    label sets of its contributing results (canonical labels in canonical
    order, then extra labels such as ``boredom`` sorted by name). An encoder
    whose label set ``S`` lacks some labels of ``L`` *abstains* on them, and
    abstaining means "I do not know", not "I am absent from this vote":
    before combining, its distribution ``p`` over ``S`` is extended to ``L``
    by :func:`extend_to_labels` as if it started from a uniform prior over
    ``L``::

        p~(l) = p(l) * |S| / |L|              for l in S
        p~(l) = (1 - |S| / |L|) / |L \\ S|  = 1 / |L|   for l not in S

    Then every (extended) encoder covers every label of ``L`` and the rule
    combines them with the same weights on every label.

    Why not drop the encoder on the labels it lacks and renormalise the
    weights per label (the naive rule)? Because a distribution over 3 labels
    puts more mass on each of them than one over 7, so partial coverage alone
    would pull the fused estimate towards the covered labels. Face uniform
    (1/7 each) with an uninformative EEG (1/3 on happy/sad/fear), equal
    weights: the naive rule gives happy/sad/fear (1/7 + 1/3)/2 = 0.238 and
    the other four 1/7 = 0.143 before renormalising, so an EEG that says
    nothing makes happy/sad/fear 1.67 times as likely as surprise. Extended,
    that EEG is uniform over the 7 labels and the fused result stays uniform.
    Likewise the naive rule gives a label covered by one encoder that
    encoder's full vote: face ``happy: 1`` with speech ``boredom: 1``, equal
    weights, fuses to boredom 2/3, happy 1/3. With the extension face is
    happy 7/8, boredom 1/8 and speech boredom 7/8, surprise 1/8, so the
    weighted mean is boredom (1/8 + 7/8)/2 = 0.5, happy 7/16 = 0.4375,
    surprise 1/16 = 0.0625: boredom still leads, because speech rules happy
    out while face cannot rule boredom out, but it no longer counts double.
    The invariant: an encoder that outputs its uniform distribution acts
    exactly like a full-coverage encoder that outputs the uniform
    distribution over ``L``, whatever its label set.

A new rule is one :class:`~edge_mer.fusion.base.FusionRule` subclass (a
:class:`CombiningRule` for label-by-label arithmetic) plus one line in
:data:`edge_mer.fusion.registry.RULES`.
"""
from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer.errors import ConfigError, InputError
from edge_mer.fusion.base import FusionRule
from edge_mer.results import ModalityResult

log = logging.getLogger(__name__)

def label_order(labels: set[str] | frozenset[str]) -> tuple[str, ...]:
    """Canonical labels in canonical order, then extra labels sorted by name."""
    extras = sorted(label for label in labels if label not in CANONICAL_LABELS)
    return tuple(label for label in CANONICAL_LABELS if label in labels) + tuple(extras)


def extend_to_labels(probs: Mapping[str, float], labels: Sequence[str]) -> np.ndarray:
    """``probs`` (over a subset ``S`` of ``labels``) as a vector over all ``labels``, by the coverage rule.

    The labels of ``S`` keep the share ``|S| / |labels|`` of the mass in their
    own proportions; each missing label gets ``1 / |labels|``, what a uniform
    prior gives it. ``probs`` must sum to 1 and use only labels in ``labels``.
    """
    unknown = sorted(set(probs) - set(labels))
    if unknown:
        raise InputError(f"label {unknown[0]!r} is not among the fused labels {list(labels)}")
    share = len(probs) / len(labels)
    uniform = 1.0 / len(labels)
    return np.array([probs[label] * share if label in probs else uniform for label in labels], dtype=np.float64)


class CombiningRule(FusionRule):
    """A rule that combines the coverage-extended distributions label by label.

    Subclasses implement :meth:`combine`; this class picks the contributing
    results, renormalises their weights and applies the coverage rule.
    """

    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        parts = self.contributions(results, weights)
        if not parts:
            log.debug("fusion: no valid result with positive weight among %d", len(results))
            return None
        labels = label_order({label for _, _, probs in parts for label in probs})
        matrix = np.stack([extend_to_labels(probs, labels) for _, _, probs in parts])
        w = np.array([weight for _, weight, _ in parts], dtype=np.float64)
        fused = self.combine(matrix, w / w.sum())
        fused = fused / fused.sum()
        return {label: float(p) for label, p in zip(labels, fused)}

    @abc.abstractmethod
    def combine(self, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Fuse ``probs`` [encoders, labels] (rows sum to 1) with ``weights`` [encoders] (sum 1).

        Returns a non-negative vector [labels]; the caller renormalises it.
        """


class WeightedMean(CombiningRule):
    """The linear opinion pool: ``p(l) = sum_m w_m p~_m(l)``.

    Robust to one encoder's confident mistakes (a zero from one encoder does
    not veto a label), at the price of never being sharper than the sharpest encoder.
    """

    name = "weighted_mean"

    def combine(self, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return weights @ probs


class LogLinear(CombiningRule):
    """The weighted product of experts: ``p(l) ∝ prod_m p~_m(l) ** w_m``, computed in log space.

    This is the multiplicative fusion of M3ER (Mittal et al., AAAI 2020) and
    Hinton's product of experts; with weights summing to 1 it is the log
    opinion pool, so encoders that agree sharpen each other and a single
    encoder yields its own distribution. A probability below ``eps`` counts
    as ``eps`` so that log 0 never occurs: an encoder with weight share ``w``
    that gives a label 0 scales it by at most ``eps ** w`` against a label it
    gives ~1, a strong veto but a finite one that other encoders can outvote.
    """

    name = "log_linear"

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        if not (isinstance(eps, float) and 0.0 < eps < 1.0):
            raise ConfigError(f"log_linear eps must be a float in (0, 1), got {eps!r}")
        self.eps = eps

    def combine(self, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        scores = weights @ np.log(np.maximum(probs, self.eps))
        # Subtracting the max keeps exp() in range; the caller's renormalisation undoes it.
        return np.exp(scores - scores.max())
