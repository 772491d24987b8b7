"""Multi-label metrics: average precision, per-label F1, F1-best thresholds, exact-set and top-1-in-set accuracy.

The one implementation of these metrics: the export's multilabel gate
(:mod:`edge_mer_export.multilabel`) and the compound head's recipe
(:mod:`edge_mer_calibration.compound`, ``training/fusion_compound.py``)
both use it. Everything here is a pure function of numpy arrays: scores
``[n, L]`` (one column per label) and label sets ``[n, L]`` of 0/1.

* :func:`average_precision`: per label, the step-wise (uninterpolated) area
  under the precision-recall curve, ``sum_k (R_k - R_{k-1}) P_k`` over the
  distinct score thresholds from high to low (tied scores enter together),
  as scikit-learn's ``average_precision_score``; NaN for a label with no
  positive row;
* :func:`f1_scores`: per label, F1 = 2TP / (2TP + FP + FN) of the decisions
  ``score >= threshold``; NaN for a label neither true nor predicted in any
  row.
"""
from __future__ import annotations

import numpy as np

from edge_mer.errors import InputError

#: Bounds of a chosen threshold: the schema wants each in (0, 1).
THRESHOLD_RANGE = (1e-3, 1.0 - 1e-3)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def first_not_binary(values: np.ndarray) -> tuple[int, int, float] | None:
    """``(row, column, value)`` of the first entry of a 1-d or 2-d array that is neither 0 nor 1, if any.

    A 1-d array's entries are reported as column 0.
    """
    array = np.asarray(values)
    matrix = array.reshape(array.shape[0], -1) if array.ndim >= 1 and array.size else array.reshape(0, 0)
    bad = np.argwhere(~np.isin(matrix, (0, 1)))
    if bad.size == 0:
        return None
    row, column = (int(v) for v in bad[0])
    return row, column, float(matrix[row, column])


def label_sets(targets: np.ndarray, width: int | None = None, what: str = "label sets") -> np.ndarray:
    """``targets`` as a bool ``[n, L]`` array (``L == width`` when given); InputError naming the first non-0/1 value."""
    targets = np.asarray(targets)
    _check(targets.ndim == 2 and (width is None or targets.shape[1] == width),
           f"{what} must be [n, {width or 'L'}], got shape {list(targets.shape)}")
    bad = first_not_binary(targets)
    if bad is not None:
        raise InputError(f"{what} row {bad[0]} column {bad[1]} is {bad[2]:g}; expected 0 or 1")
    return targets.astype(bool)


def score_matrix(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite float64 ``[n, L]`` scores and the bool label sets of the same shape (InputError otherwise)."""
    scores = np.asarray(scores, dtype=np.float64)
    _check(scores.ndim == 2, f"scores must be [n, L], got shape {list(scores.shape)}")
    sets = label_sets(targets, scores.shape[1])
    _check(sets.shape[0] == scores.shape[0], f"{scores.shape[0]} score rows for {sets.shape[0]} label sets")
    _check(bool(np.isfinite(scores).all()), "scores must be finite")
    return scores, sets


def ranked(score: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One label's distinct scores, descending, with the true and false positives at or above each."""
    order = np.argsort(-score, kind="stable")
    score, target = score[order], target[order]
    last = np.r_[np.flatnonzero(np.diff(score) != 0), score.size - 1]  # last row of each run of tied scores
    tp = np.cumsum(target)[last]
    return score[last], tp, (last + 1) - tp


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the step-wise area under the precision-recall curve (module docstring); NaN without positives."""
    scores, sets = score_matrix(scores, targets)
    out = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        positives = int(sets[:, j].sum())
        if positives == 0 or scores.shape[0] == 0:
            continue
        _, tp, fp = ranked(scores[:, j], sets[:, j])
        recall = tp / positives
        out[j] = float(np.sum(np.diff(np.r_[0.0, recall]) * tp / (tp + fp)))
    return out


def f1_scores(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per label, the F1 of "active when score >= threshold"; NaN for a label with neither positives nor actives."""
    scores, sets = score_matrix(scores, targets)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    _check(thresholds.shape == (scores.shape[1],), f"{thresholds.size} thresholds for {scores.shape[1]} labels")
    active = scores >= thresholds
    tp = (active & sets).sum(axis=0)
    denominator = active.sum(axis=0) + sets.sum(axis=0)  # 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * tp / denominator, np.nan)


def best_thresholds(scores: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per label, the threshold with the highest F1 on these rows (``default`` for a label without positives).

    The cut lies midway between the lowest score it keeps and the next lower
    score, so unseen rows near either are not decided by float noise, and
    within :data:`THRESHOLD_RANGE` so it is a valid manifest threshold.
    """
    scores, sets = score_matrix(scores, targets)
    out = np.full(scores.shape[1], default)
    for j in range(scores.shape[1]):
        positives = int(sets[:, j].sum())
        if positives == 0:
            continue
        values, tp, fp = ranked(scores[:, j], sets[:, j])
        k = int(np.argmax(2.0 * tp / (tp + fp + positives)))  # first of the best: the highest such cut
        below = values[k + 1] if k + 1 < values.size else min(0.0, values[k])
        out[j] = np.clip((values[k] + below) / 2.0, *THRESHOLD_RANGE)
    return out


def exact_set_accuracy(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> float:
    """Share of rows whose active labels (score >= threshold) are exactly the label set."""
    scores, sets = score_matrix(scores, targets)
    return float(((scores >= np.asarray(thresholds)) == sets).all(axis=1).mean()) if len(sets) else float("nan")


def top1_in_set(probs: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose most probable label is a member of the label set."""
    probs, sets = score_matrix(probs, targets)
    return float(sets[np.arange(len(sets)), probs.argmax(axis=1)].mean()) if len(sets) else float("nan")
