"""The one implementation of the multi-label metrics (edge_mer_calibration.multilabel_metrics) against hand-computed
values and scikit-learn where it is installed; the export's gate and the compound recipe both use it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer_calibration.multilabel_metrics import (average_precision, best_thresholds, exact_set_accuracy,
                                                     f1_scores, first_not_binary, label_sets, top1_in_set)


def _column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]


def test_average_precision_by_hand_one_label() -> None:
    # Ranked 0.9(+) 0.8(-) 0.7(+): precision 1 at recall 0.5, 2/3 at recall 1 -> 0.5 * 1 + 0.5 * 2/3.
    assert average_precision(_column([0.9, 0.8, 0.7, 0.6, 0.5]), _column([1, 0, 1, 0, 0]))[0] == pytest.approx(5 / 6)
    # Tied scores enter together: at 0.8 one of three predicted is positive (recall 0.5), at 0.1 two of four.
    assert average_precision(_column([0.9, 0.8, 0.8, 0.1]), _column([0, 1, 0, 1]))[0] == pytest.approx(
        0.5 * (1 / 3) + 0.5 * 0.5)
    assert average_precision(_column([0.2, 0.1]), _column([1, 1]))[0] == pytest.approx(1.0)
    assert math.isnan(average_precision(_column([0.3, 0.4]), _column([0, 0]))[0])


def test_average_precision_is_the_stepwise_area() -> None:
    targets = np.array([[0, 1], [0, 0], [1, 1], [1, 0]])
    scores = np.array([[0.1, 0.9], [0.4, 0.5], [0.35, 0.5], [0.8, 0.2]])
    ap = average_precision(scores, targets)
    # label 0: ranks 0.8 (+), 0.4 (-), 0.35 (+): (1/2)*1 + (1/2)*(2/3); label 1: 0.9 (+), then a tie of (-, +)
    assert ap == pytest.approx([1 / 2 + 1 / 3, 1 / 2 + (1 / 2) * (2 / 3)])
    assert np.isnan(average_precision(scores, np.array([[0, 1]] * 4))[0])
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.random((300, 4)) < 0.3
    s = np.round(rng.random((300, 4)) + 0.4 * y, 2)  # rounding makes ties, which must count as one threshold
    expected = [sklearn.average_precision_score(y[:, j], s[:, j]) for j in range(4)]
    assert average_precision(s, y.astype(float)) == pytest.approx(expected)


def test_best_thresholds_maximise_f1_and_stay_inside_zero_one() -> None:
    targets = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 0]])
    scores = np.array([[0.9, 0.99999], [0.7, 0.2], [0.6, 1.0], [0.1, 0.3], [0.4, 0.1]])
    thresholds = best_thresholds(scores, targets)
    # label 0: keeping 0.9, 0.7, 0.6, 0.4 (F1 6/7) beats 0.9, 0.7 (F1 4/5): cut midway 0.4 -> 0.1
    assert thresholds[0] == pytest.approx(0.25)
    assert 0.0 < thresholds[1] < 1.0 and thresholds[1] == pytest.approx((0.99999 + 0.3) / 2)
    f1 = f1_scores(scores, targets, thresholds)
    assert f1 == pytest.approx([6 / 7, 1.0])
    assert best_thresholds(scores, np.zeros((5, 2)))[0] == 0.5  # no positives: the default
    assert exact_set_accuracy(scores, targets, thresholds) == pytest.approx(4 / 5)  # row 2 also turns label 0 on
    assert top1_in_set(scores, targets) == pytest.approx(4 / 5)  # row 3's top score (0.3) is no member


def test_metric_inputs_are_checked() -> None:
    with pytest.raises(InputError, match=r"2 score rows for 3 label sets"):
        average_precision(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"label sets row 0 column 0 is 0.5; expected 0 or 1"):
        f1_scores(np.zeros((2, 2)), np.full((2, 2), 0.5), np.full(2, 0.5))
    with pytest.raises(InputError, match="3 thresholds for 2 labels"):
        f1_scores(np.zeros((2, 2)), np.zeros((2, 2)), np.full(3, 0.5))


def test_f1_uses_each_labels_threshold() -> None:
    scores = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.1], [0.5, 0.45]])
    truth = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    # Label 0 at 0.5: predicted rows 0, 1, 3 (0.5 >= 0.5); TP 2, FP 1, FN 1 -> 4 / 6.
    # Label 1 at 0.4: predicted rows 1, 3; TP 2 -> 1.0 (at 0.5 it would be 2 / 3).
    np.testing.assert_allclose(f1_scores(scores, truth, np.array([0.5, 0.4])), [2 / 3, 1.0])
    np.testing.assert_allclose(f1_scores(scores, truth, np.array([0.5, 0.5])), [2 / 3, 2 / 3])
    # A label neither true nor predicted anywhere has no F1 (NaN).
    quiet = f1_scores(np.array([[0.1, 0.9], [0.2, 0.8]]), np.array([[0, 1], [0, 1]]), np.array([0.5, 0.5]))
    assert math.isnan(quiet[0]) and quiet[1] == 1.0


def test_the_first_value_that_is_not_0_or_1_is_named() -> None:
    assert first_not_binary(np.array([[0, 1], [1, 0]])) is None
    assert first_not_binary(np.array([[0, 1], [1, 0.5], [2, 0]])) == (1, 1, 0.5)
    assert first_not_binary(np.array([1.0, np.nan])) == (1, 0, pytest.approx(np.nan, nan_ok=True))
    with pytest.raises(InputError, match=r"^label sets row 2 column 0 is 2; expected 0 or 1$"):
        label_sets(np.array([[0, 1], [1, 0], [2, 0]]))
    with pytest.raises(InputError, match=r"^truth row 0 column 1 is -1; expected 0 or 1$"):
        label_sets(np.array([[0, -1]]), what="truth")
