"""The adaptation fits: a known temperature recovered, the logistic head's objective, its ONNX graph."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad

from edge_mer.adapt.fit import WindowRows, _objective, fit_linear_head, fit_temperature, nll
from edge_mer.adapt.head_onnx import head_model
from edge_mer.bundle.schema import MAX_TEMPERATURE, TensorInfo
from edge_mer.errors import InputError
from edge_mer.numeric import softmax, temperature_scale


def _one_row_windows(probs: np.ndarray) -> WindowRows:
    n, k = probs.shape
    return WindowRows(probs, np.arange(n), n, np.eye(k))


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_a_known_temperature_is_recovered_from_synthetic_logits(true_t: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 5))
    # Labels drawn from softmax(z / T): the model's softmax(z) is off by exactly temperature T.
    cdf = np.cumsum(softmax(logits / true_t), axis=1)
    labels = (rng.random((len(logits), 1)) > cdf).sum(axis=1)
    fitted = fit_temperature(_one_row_windows(softmax(logits)), labels)
    assert fitted == pytest.approx(true_t, rel=0.05)


def test_the_fit_minimises_the_nll_the_runtime_would_see() -> None:
    rng = np.random.default_rng(1)
    rows = softmax(rng.normal(scale=2.0, size=(300, 4)))
    owner = np.repeat(np.arange(60), 5)  # five frames a window, averaged as the face runner does
    mapping = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # two labels onto one
    windows = WindowRows(rows, owner, 60, mapping)
    truth = np.cumsum(windows.probs(1.7), axis=1)
    labels = (rng.random((60, 1)) > truth).sum(axis=1)
    t = fit_temperature(windows, labels)
    assert 0.2 < t < 20
    for other in (t * 0.9, t * 1.1):
        assert nll(windows.probs(t), labels) <= nll(windows.probs(other), labels)
    # probs(T) is the runner's computation: scale each row, average the window, normalise, map the labels.
    expected = temperature_scale(rows[:5], t).mean(axis=0)
    np.testing.assert_allclose(windows.probs(t)[0], (expected / expected.sum()) @ mapping)


def test_an_overconfident_wrong_model_gets_the_upper_bound_or_below() -> None:
    probs = np.tile([[0.98, 0.01, 0.01]], (50, 1))
    t = fit_temperature(_one_row_windows(probs), np.full(50, 1))
    assert 1.0 < t <= MAX_TEMPERATURE


def test_subset_renumbers_windows() -> None:
    rows = softmax(np.arange(12.0).reshape(6, 2))
    windows = WindowRows(rows, np.array([0, 0, 1, 2, 2, 2]), 3, np.eye(2))
    part = windows.subset(np.array([2, 0]))
    assert part.n == 2 and list(part.owner) == [1, 1, 0, 0, 0]
    np.testing.assert_allclose(part.probs(None)[0], windows.probs(None)[2])


def test_the_head_objective_has_the_right_gradient() -> None:
    rng = np.random.default_rng(2)
    z, onehot = rng.normal(size=(30, 6)), np.eye(3)[rng.integers(0, 3, 30)]
    theta = rng.normal(size=6 * 3 + 3)
    error = check_grad(lambda t: _objective(t, z, onehot, 0.3)[0], lambda t: _objective(t, z, onehot, 0.3)[1], theta)
    assert error < 1e-5


def _blobs(n: int = 240, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = rng.normal(scale=2.0, size=(3, 4, 5))
    return centres[labels] + rng.normal(size=(n, 4, 5)) * (1 + np.arange(5)), labels


def test_the_head_learns_separable_classes() -> None:
    x, labels = _blobs()
    head = fit_linear_head(x[:160], labels[:160], ("happy", "sad", "fear"), l2=0.01)
    assert np.mean(head.predict_proba(x[160:]).argmax(axis=1) == labels[160:]) > 0.9
    np.testing.assert_allclose(head.predict_proba(x).sum(axis=1), 1.0)


def test_the_head_matches_scikit_learn_on_the_same_objective() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, labels = _blobs(n=90, seed=4)
    l2 = 0.5
    head = fit_linear_head(x, labels, ("a", "b", "c"), l2)
    z = (x.reshape(len(x), -1) - head.mean) / head.scale
    # mean CE + l2/2 |W|^2  ==  (sum CE + 1/(2C) |W|^2) / n  with  C = 1 / (l2 n)
    reference = linear_model.LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=10000).fit(z, labels)
    np.testing.assert_allclose(head.predict_proba(x), reference.predict_proba(z), atol=1e-4)


def test_the_head_refuses_one_class_and_bad_features() -> None:
    x, labels = _blobs(n=20)
    with pytest.raises(InputError, match=">= 2 classes"):
        fit_linear_head(x, np.zeros(20, dtype=int), ("happy",), 0.1)
    x[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit_linear_head(x, labels, ("a", "b", "c"), 0.1)


def test_the_onnx_head_computes_what_numpy_computes() -> None:
    import onnxruntime

    x, labels = _blobs(n=60, seed=5)
    head = fit_linear_head(x, labels, ("happy", "sad", "fear"), 0.1)
    data = head_model(head, TensorInfo("de", ("N", 4, 5), layout="NCF"))
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["de"] and [o.name for o in session.get_outputs()] == ["probs"]
    (probs,) = session.run(None, {"de": x.astype(np.float32)})
    np.testing.assert_allclose(probs, head.predict_proba(x), atol=1e-5)


def test_the_onnx_head_refuses_an_input_of_another_size() -> None:
    x, labels = _blobs(n=30)
    head = fit_linear_head(x, labels, ("a", "b", "c"), 0.1)
    with pytest.raises(InputError, match="does not flatten"):
        head_model(head, TensorInfo("de", ("N", 10, 5)))
