"""Temperature scaling and expected calibration error (edge_mer.numeric)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_mer.numeric import expected_calibration_error, softmax, temperature_scale


def test_temperature_scaling_of_probabilities_equals_scaling_the_logits() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)) * 3
    for t in (0.5, 1.0, 2.5, 40.0):
        np.testing.assert_allclose(temperature_scale(softmax(logits), t), softmax(logits / t), atol=1e-9)


def test_a_high_temperature_flattens_towards_uniform_and_keeps_the_ranking() -> None:
    probs = np.array([[0.96, 0.03, 0.01]])
    flat = temperature_scale(probs, 100.0)
    assert flat.max() - flat.min() < 0.05
    assert list(np.argsort(flat[0])) == list(np.argsort(probs[0]))


def test_exact_zeros_are_floored_not_nan() -> None:
    out = temperature_scale(np.array([[1.0, 0.0, 0.0]]), 2.0)
    assert np.isfinite(out).all() and out[0, 0] > 0.99


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident() -> None:
    # 10 rows at confidence 0.8, 8 of them right: calibrated.
    probs = np.tile([[0.8, 0.2]], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Confidence 0.99 at chance accuracy: ECE 0.49.
    sure = np.tile([[0.99, 0.01]], (10, 1))
    assert expected_calibration_error(sure, np.array([0, 1] * 5)) == pytest.approx(0.49, abs=1e-9)
