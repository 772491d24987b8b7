"""Multi-label fusion-head data: label sets *derived by cross-person pairing*, not annotated compound expressions.

No dataset here has multi-label emotion annotations: every face, clip and EEG
window carries exactly one label. A "compound" example is therefore made the
way :mod:`edge_mer_calibration.pairing` makes a single-label one, across
people and corpora: draw a label set ``S`` of one or two canonical labels,
then for each present modality a held-out output (:meth:`Pools.draw`) of a
window whose label is one member of ``S``, picked at random per modality. A
modality whose data has no such label gives a random-label row, as in
:func:`~edge_mer_calibration.pairing.pairings`; modality dropout is the same.
So a pair row says "the face shows one of these, the voice one of these"
(the face of one person who looked happy and the voice of another who
sounded surprised), never that any one person showed both at once.

The allowed pairs default to :data:`DU_PAIRS`, the twelve two-emotion
compounds of basic emotions that Du, Tao and Martinez (2014, "Compound facial
expressions of emotion", PNAS 111(15)) found people produce and recognise
(happily surprised, sadly angry, ...); pairs of opposite valence with
happiness (happy with sad, fear or anger) are not among them, nor is any pair
with neutral or boredom. :func:`all_pairs` gives every pair instead.

The module also holds the numpy metrics the multi-label head is chosen and
measured with (per-label F1, thresholds, average precision, exact-set
accuracy), so they are tested without torch.
"""
from __future__ import annotations

import itertools
from typing import Protocol

import numpy as np

from edge_mer.errors import InputError
from edge_mer_calibration.pairing import DROPOUT, ENCODERS, SLOTS

#: Du et al. (2014)'s two-emotion compounds, in the canonical label names.
DU_PAIRS: tuple[tuple[str, str], ...] = (
    ("happy", "surprise"), ("happy", "disgust"),
    ("sad", "fear"), ("sad", "angry"), ("sad", "surprise"), ("sad", "disgust"),
    ("fear", "angry"), ("fear", "surprise"), ("fear", "disgust"),
    ("angry", "surprise"), ("angry", "disgust"), ("disgust", "surprise"),
)
#: Share of rows whose label set is one label (the rest are pairs).
SINGLE_SHARE = 0.5
#: Bounds of a chosen threshold: the schema wants each in (0, 1).
THRESHOLD_RANGE = (1e-3, 1.0 - 1e-3)


class DrawsRows(Protocol):
    """What :func:`compound_pairings` needs of :class:`~edge_mer_calibration.pairing.Pools`."""

    rows: dict[str, np.ndarray]

    def draw(self, name: str, label: str, rng: np.random.Generator) -> np.ndarray: ...


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def all_pairs(labels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Every unordered pair of distinct ``labels``, in label order."""
    return tuple(itertools.combinations(labels, 2))


def _label_sets(labels: tuple[str, ...], singles: tuple[str, ...], pairs: tuple[tuple[str, str], ...],
                single_share: float) -> list[tuple[str, ...]]:
    _check(len(labels) == len(set(labels)) and len(labels) > 0, f"labels {list(labels)} must be distinct and not empty")
    _check(isinstance(single_share, (int, float)) and 0.0 <= single_share <= 1.0,
           f"single_share must be a number in [0, 1], got {single_share!r}")
    for label in singles:
        _check(label in labels, f"single label {label!r} is not one of labels {list(labels)}")
    for pair in pairs:
        _check(len(pair) == 2 and len(set(pair)) == 2 and all(x in labels for x in pair),
               f"pair {list(pair)} must be two distinct labels of {list(labels)}")
    _check(single_share == 0.0 or len(singles) > 0, f"single_share {single_share} needs at least one single label")
    _check(single_share == 1.0 or len(pairs) > 0, f"single_share {single_share} < 1 needs at least one pair")
    return [(x,) for x in singles] + [tuple(p) for p in pairs]


def _present(rng: np.random.Generator) -> list[str]:
    # The same modality dropout as pairing.pairings: each slot kept with 1 - DROPOUT, at least one,
    # and the EEG slot is the synthetic-board or the Cyton montage at random.
    keep = rng.random(len(SLOTS)) >= DROPOUT
    if not keep.any():
        keep[rng.integers(len(SLOTS))] = True
    chosen = [s for s, k in zip(SLOTS, keep) if k]
    return [("eeg_cyton" if rng.random() < 0.5 else "eeg") if s == "eeg" else s for s in chosen]


def compound_pairings(pools: DrawsRows, labels: tuple[str, ...], n: int, rng: np.random.Generator,
                      pairs: tuple[tuple[str, str], ...] = DU_PAIRS, single_share: float = SINGLE_SHARE,
                      singles: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` rows of cross-person label-set pairings: the head's feeds and the multi-hot label sets.

    ``labels`` orders the label-set columns (the fused labels). With
    probability ``single_share`` a row's set is one label of ``singles``
    (default: all of ``labels``), otherwise one of ``pairs``, uniformly; each
    present modality then draws a row of one member of the set, picked at
    random per modality. Returns ``(feeds, label_sets)``: feeds as
    :func:`~edge_mer_calibration.pairing.pairings` gives them (per encoder
    float32 ``[n, K]``, zeros where absent, and ``mask`` ``[n, 4]``), and
    ``label_sets`` float32 ``[n, len(labels)]`` of 0/1. These sets are derived
    by pairing single-label data across people, not annotated compound expressions.
    """
    _check(isinstance(n, (int, np.integer)) and n >= 0, f"n must be an integer >= 0, got {n!r}")
    singles = tuple(labels) if singles is None else tuple(singles)
    sets = _label_sets(tuple(labels), singles, tuple(pairs), single_share)
    n_single = len(singles)
    column = {label: j for j, label in enumerate(labels)}
    feeds = {name: np.zeros((n, pools.rows[name].shape[1]), dtype=np.float32) for name in ENCODERS}
    mask = np.zeros((n, len(ENCODERS)), dtype=np.float32)
    label_sets = np.zeros((n, len(labels)), dtype=np.float32)
    for i in range(n):
        if rng.random() < single_share:
            members = sets[rng.integers(n_single)]
        else:
            members = sets[n_single + rng.integers(len(sets) - n_single)]
        label_sets[i, [column[x] for x in members]] = 1.0
        for name in _present(rng):
            feeds[name][i] = pools.draw(name, members[rng.integers(len(members))], rng)
            mask[i, ENCODERS.index(name)] = 1.0
    feeds["mask"] = mask
    return feeds, label_sets


def first_members(label_sets: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """For each row, the first label of its set in ``labels`` order (unicode), the ``labels`` key of head data."""
    sets = _targets(label_sets, len(labels))
    _check(bool(sets.any(axis=1).all()), "every label set needs at least one label")
    return np.array([labels[i] for i in sets.argmax(axis=1)])


def _targets(targets: np.ndarray, width: int | None = None) -> np.ndarray:
    targets = np.asarray(targets)
    _check(targets.ndim == 2 and (width is None or targets.shape[1] == width),
           f"label sets must be [n, {width or 'L'}], got shape {list(targets.shape)}")
    _check(bool(np.isin(targets, (0, 1)).all()), "label sets must hold only 0 and 1")
    return targets.astype(bool)


def _scores(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    _check(scores.ndim == 2, f"scores must be [n, L], got shape {list(scores.shape)}")
    sets = _targets(targets, scores.shape[1])
    _check(sets.shape[0] == scores.shape[0], f"{scores.shape[0]} score rows for {sets.shape[0]} label sets")
    _check(bool(np.isfinite(scores).all()), "scores must be finite")
    return scores, sets


def _ranked(score: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, descending, with the true and false positives at or above each."""
    order = np.argsort(-score, kind="stable")
    score, target = score[order], target[order]
    last = np.r_[np.flatnonzero(np.diff(score) != 0), score.size - 1]  # last row of each run of tied scores
    tp = np.cumsum(target)[last]
    return score[last], tp, (last + 1) - tp


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the step-wise area under the precision-recall curve, ``sum_k (R_k - R_{k-1}) P_k``.

    As scikit-learn's ``average_precision_score`` (tied scores are one
    threshold); NaN for a label without positives.
    """
    scores, sets = _scores(scores, targets)
    out = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        positives = int(sets[:, j].sum())
        if positives == 0 or scores.shape[0] == 0:
            continue
        _, tp, fp = _ranked(scores[:, j], sets[:, j])
        recall = tp / positives
        out[j] = float(np.sum(np.diff(np.r_[0.0, recall]) * tp / (tp + fp)))
    return out


def f1_scores(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per label, the F1 of "active when score >= threshold"; NaN for a label with neither positives nor actives."""
    scores, sets = _scores(scores, targets)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    _check(thresholds.shape == (scores.shape[1],), f"{thresholds.size} thresholds for {scores.shape[1]} labels")
    active = scores >= thresholds
    tp = (active & sets).sum(axis=0)
    denominator = active.sum(axis=0) + sets.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * tp / denominator, np.nan)


def best_thresholds(scores: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per label, the threshold with the highest F1 on these rows (``default`` for a label without positives).

    The cut lies midway between the lowest score it keeps and the next lower
    score, so unseen rows near either are not decided by float noise, and
    within :data:`THRESHOLD_RANGE` so it is a valid manifest threshold.
    """
    scores, sets = _scores(scores, targets)
    out = np.full(scores.shape[1], default)
    for j in range(scores.shape[1]):
        positives = int(sets[:, j].sum())
        if positives == 0:
            continue
        values, tp, fp = _ranked(scores[:, j], sets[:, j])
        k = int(np.argmax(2.0 * tp / (tp + fp + positives)))  # first of the best: the highest such cut
        below = values[k + 1] if k + 1 < values.size else min(0.0, values[k])
        out[j] = np.clip((values[k] + below) / 2.0, *THRESHOLD_RANGE)
    return out


def exact_set_accuracy(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> float:
    """Share of rows whose active labels (score >= threshold) are exactly the label set."""
    scores, sets = _scores(scores, targets)
    return float(((scores >= np.asarray(thresholds)) == sets).all(axis=1).mean()) if len(sets) else float("nan")


def top1_in_set(probs: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose most probable label is a member of the label set."""
    probs, sets = _scores(probs, targets)
    return float(sets[np.arange(len(sets)), probs.argmax(axis=1)].mean()) if len(sets) else float("nan")
