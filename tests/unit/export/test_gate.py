"""The accuracy gate: worked metric examples, pass/fail verdicts, thresholds, latency."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle.schema import PrecisionReport
from edge_mer.config import from_dict
from edge_mer.errors import BackendError, ConfigError, InputError
from edge_mer.numeric import softmax
from edge_mer_export.gate import (KL_EPSILON, GateThresholds, ccc, compare_outputs, gate, label_metrics,
                                  measure_latency, va_metrics)


def one_hot(pred: list[int], k: int, p: float = 1.0) -> np.ndarray:
    """Rows putting ``p`` on the predicted class and the rest evenly elsewhere."""
    out = np.full((len(pred), k), (1.0 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


REF = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
CAND = np.array([[0.6, 0.3, 0.1], [0.1, 0.7, 0.2], [0.4, 0.3, 0.3], [0.5, 0.25, 0.25]])


def test_compare_outputs_worked_example() -> None:
    m = compare_outputs(REF, CAND)
    assert m["agreement"] == pytest.approx(3 / 4)  # row 2 flips from class 2 to class 0
    assert m["max_abs_diff"] == pytest.approx(0.1)
    assert m["mean_abs_diff"] == pytest.approx(0.6 / 12)
    kl_rows = [0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.3),
               0.8 * math.log(0.8 / 0.7) + 0.1 * math.log(0.1 / 0.2),
               0.3 * math.log(0.3 / 0.4) + 0.4 * math.log(0.4 / 0.3),
               0.0]
    assert m["kl"] == pytest.approx(sum(kl_rows) / 4, rel=1e-6)


def test_compare_identical_is_perfect() -> None:
    assert compare_outputs(REF, REF.copy()) == {"agreement": 1.0, "max_abs_diff": 0.0, "mean_abs_diff": 0.0,
                                               "kl": 0.0}


def test_kl_epsilon_floor_keeps_it_finite() -> None:
    kl = compare_outputs(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))["kl"]
    e = KL_EPSILON
    assert kl == pytest.approx((1 - e) / (1 + e) * math.log(1 / e))
    assert math.isfinite(kl)


def test_compare_refuses_bad_inputs() -> None:
    with pytest.raises(InputError, match="differs from candidate shape"):
        compare_outputs(REF, CAND[:2])
    with pytest.raises(InputError, match="apply softmax"):
        compare_outputs(np.log(REF), CAND)
    with pytest.raises(InputError, match="non-empty"):
        compare_outputs(np.zeros((0, 3)), np.zeros((0, 3)))
    np.testing.assert_allclose(compare_outputs(softmax(np.log(REF)), REF)["kl"], 0.0, atol=1e-12)


def test_label_metrics_worked_example() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    m = label_metrics(one_hot([0, 1, 1, 1, 2, 0], 4, 0.7), labels, 4)
    np.testing.assert_array_equal(m["confusion"], [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1 = 2TP / (2TP + FP + FN): class 0 2/4, class 1 4/5, class 2 2/3; class 3 is in neither labels nor predictions
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    np.testing.assert_allclose(m["recall"][:3], [0.5, 1.0, 0.5])
    assert np.isnan(m["recall"][3])
    np.testing.assert_array_equal(m["support"], [2, 2, 2, 0])


def test_macro_f1_counts_a_class_only_predicted() -> None:
    m = label_metrics(one_hot([0, 2, 1], 3), [0, 0, 1], 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    np.testing.assert_array_equal(m["recall"], [0.5, 1.0, np.nan])


@pytest.mark.parametrize("labels, match", [([0, 1], "1-d sequence of 3"), ([0, 1, 5], "0..2"),
                                           ([0.0, 1.0, 2.0], "integer"), ([0, -1, 1], "0..2")])
def test_label_metrics_refuses_bad_labels(labels, match) -> None:
    with pytest.raises(InputError, match=match):
        label_metrics(one_hot([0, 1, 2], 3), labels, 3)


def test_ccc() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + 1.0) < 1.0
    assert ccc(x, 2.0 * x) < 1.0
    assert ccc(x, -x) == pytest.approx(-1.0 * 2 * 2 / (2 + 2 + 36))
    # textbook: means 3 and 3.6, population variances 2 and 2.24, covariance 2 -> 2*2 / (2 + 2.24 + 0.36)
    assert ccc(x, [2.0, 2.0, 4.0, 4.0, 6.0]) == pytest.approx(20 / 23)
    assert ccc([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert ccc([1.0, 1.0], [2.0, 2.0]) == 0.0
    with pytest.raises(InputError, match="equal length"):
        ccc([1.0, 2.0], [1.0, 2.0, 3.0])


def test_va_metrics_columns() -> None:
    target = np.array([[0.1, -0.5], [0.4, 0.2], [-0.3, 0.9], [0.8, 0.0]])
    pred = target.copy()
    pred[:, 1] += 0.3
    m = va_metrics(pred, target)
    assert m["ccc_valence"] == pytest.approx(1.0)
    assert m["ccc_arousal"] == pytest.approx(ccc(pred[:, 1], target[:, 1])) and m["ccc_arousal"] < 1.0
    with pytest.raises(InputError, match=r"\[n, 2\]"):
        va_metrics(pred[:, :1], target[:, :1])


def make_eval(n: int = 100, k: int = 4, wrong: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and reference probabilities that are right on all but the first ``wrong`` rows."""
    labels = np.random.default_rng(seed).integers(0, k, size=n)
    pred = labels.copy()
    pred[:wrong] = (labels[:wrong] + 1) % k
    return labels, one_hot(list(pred), k, 0.8)


def test_identical_candidate_passes() -> None:
    labels, ref = make_eval()
    result = gate(ref, ref.copy(), labels, 4, GateThresholds(), class_names=("a", "b", "c", "d"))
    assert result.passed and result.reasons == []
    m = result.metrics
    assert m["agreement"] == 1.0 and m["kl"] == 0.0 and m["accuracy_drop_pt"] == 0.0
    assert m["accuracy"] == m["accuracy_fp32"] == pytest.approx(0.9)
    assert {"max_abs_diff", "mean_abs_diff", "macro_f1", "recall_a", "recall_d", "n_eval"} <= set(m)
    assert all(isinstance(v, float) for v in m.values())


def test_constant_candidate_fails_with_both_reasons() -> None:
    labels, ref = make_eval()
    result = gate(ref, one_hot([0] * 100, 4, 0.9), labels, 4, GateThresholds())
    assert not result.passed
    assert len(result.reasons) == 2
    assert re.fullmatch(r"accuracy drop \d+\.\d pt > 1\.0 pt allowed", result.reasons[0])
    assert re.fullmatch(r"top-1 agreement \d+\.\d% < 97\.0%", result.reasons[1])
    assert result.metrics["accuracy_drop_pt"] > 50
    assert sum(map(sum, result.confusion)) == 100
    assert all(row[1:] == (0, 0, 0) for row in result.confusion)  # every prediction is class 0


def test_only_agreement_violated() -> None:
    labels, ref = make_eval()
    cand_pred = list(ref.argmax(axis=1))
    for i in range(5):  # change 5 wrong predictions into other wrong ones: accuracy stays
        cand_pred[i] = (labels[i] + 2) % 4
    result = gate(ref, one_hot(cand_pred, 4, 0.8), labels, 4, GateThresholds())
    assert result.metrics["accuracy_drop_pt"] == 0.0
    assert result.reasons == ["top-1 agreement 95.0% < 97.0%"]


def test_only_accuracy_violated_and_boundaries_pass() -> None:
    labels, ref = make_eval()
    pred = list(ref.argmax(axis=1))
    flipped = list(pred)
    flipped[50] = (labels[50] + 1) % 4
    assert gate(ref, one_hot(flipped, 4, 0.8), labels, 4, GateThresholds()).passed  # 1.0 pt drop is allowed
    flipped[51] = (labels[51] + 1) % 4
    flipped[52] = (labels[52] + 1) % 4
    at_limit = gate(ref, one_hot(flipped, 4, 0.8), labels, 4, GateThresholds(min_agreement=0.97))
    assert at_limit.metrics["agreement"] == 0.97 and at_limit.metrics["accuracy_drop_pt"] == 3.0
    assert at_limit.reasons == ["accuracy drop 3.0 pt > 1.0 pt allowed"]


def test_reason_shows_enough_digits_to_differ() -> None:
    labels, ref = make_eval(n=2500, wrong=0)
    pred = list(labels)
    for i in range(26):  # 26 / 2500 = 1.04 pt
        pred[i] = (labels[i] + 1) % 4
    result = gate(ref, one_hot(pred, 4, 0.8), labels, 4, GateThresholds(min_agreement=0.9))
    assert result.reasons == ["accuracy drop 1.04 pt > 1.00 pt allowed"]


def test_kl_and_abs_diff_thresholds() -> None:
    labels, ref = make_eval()
    smoothed = one_hot(list(ref.argmax(axis=1)), 4, 0.6)  # same decisions, flatter distributions
    loose = gate(ref, smoothed, labels, 4, GateThresholds())
    assert loose.passed
    strict = gate(ref, smoothed, labels, 4, GateThresholds(max_kl=0.01, max_abs_diff=0.1))
    assert [r.split()[0] for r in strict.reasons] == ["KL", "max"]
    assert strict.reasons[1] == "max abs diff 0.2 > 0.1 allowed"


def test_nonfinite_candidate_is_a_failure_not_an_error() -> None:
    labels, ref = make_eval()
    cand = ref.copy()
    cand[3, 1] = np.nan
    result = gate(ref, cand, labels, 4, GateThresholds())
    assert not result.passed
    assert result.reasons[0] == "1 of 100 candidate outputs are not finite"
    assert result.metrics["nonfinite_rows"] == 1.0


def test_valence_arousal_gate() -> None:
    labels, ref = make_eval(n=20, wrong=0)
    va = np.random.default_rng(1).uniform(-1, 1, size=(20, 2))
    ok = gate(ref, ref, labels, 4, GateThresholds(min_ccc=0.9), reference_va=va, candidate_va=va, target_va=va)
    assert ok.passed and ok.metrics["ccc_valence_vs_fp32"] == pytest.approx(1.0)
    assert {"ccc_valence", "ccc_arousal", "ccc_valence_fp32", "ccc_arousal_fp32"} <= set(ok.metrics)
    bad = gate(ref, ref, labels, 4, GateThresholds(min_ccc=0.9), reference_va=va, candidate_va=0.3 * va)
    assert [r.split()[0] for r in bad.reasons] == ["valence", "arousal"]
    assert "ccc_valence" not in bad.metrics  # no targets given
    with pytest.raises(InputError, match="together"):
        gate(ref, ref, labels, 4, GateThresholds(), reference_va=va)


def test_gate_refuses_bad_shapes() -> None:
    labels, ref = make_eval()
    with pytest.raises(InputError, match="4 columns for 3 classes"):
        gate(ref, ref, labels, 3, GateThresholds())
    with pytest.raises(InputError, match="shape"):
        gate(ref, ref[:10], labels, 4, GateThresholds())
    with pytest.raises(InputError, match="2 class names for 4"):
        gate(ref, ref, labels, 4, GateThresholds(), class_names=("a", "b"))


def test_to_precision_report() -> None:
    labels, ref = make_eval()
    failed = gate(ref, one_hot([0] * 100, 4), labels, 4, GateThresholds())
    report = failed.to_precision_report(1.5)
    assert isinstance(report, PrecisionReport)
    assert report.passed is False and report.cpu_latency_ms == 1.5
    assert report.reason == "; ".join(failed.reasons) and report.metrics == failed.metrics
    assert gate(ref, ref, labels, 4, GateThresholds()).to_precision_report(None).reason is None


@pytest.mark.parametrize("kwargs, match", [
    ({"max_accuracy_drop": -1.0}, "max_accuracy_drop"),
    ({"max_accuracy_drop": math.nan}, "max_accuracy_drop"),
    ({"min_agreement": 97.0}, "min_agreement must be a fraction"),
    ({"min_agreement": True}, "min_agreement"),
    ({"max_kl": -0.1}, "max_kl"),
    ({"max_abs_diff": "0.1"}, "max_abs_diff"),
    ({"min_ccc": 1.5}, "min_ccc"),
])
def test_threshold_validation(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        GateThresholds(**kwargs)


def test_thresholds_from_config_mapping() -> None:
    assert from_dict(GateThresholds, {"max_accuracy_drop": 2, "max_kl": 0.05}) == GateThresholds(2.0, 0.97, 0.05)
    with pytest.raises(ConfigError, match="unknown key min_agreemnt"):
        from_dict(GateThresholds, {"min_agreemnt": 0.9})


def _tiny_model(path: Path) -> ModelRef:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probs"], axis=1)], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ModelRef("tiny", "fp32", {"fp32": ModelFile(path, digest)})


def test_measure_latency_on_a_real_backend(tmp_path: Path) -> None:
    backend = create_backend(_tiny_model(tmp_path / "tiny.onnx"), BackendOptions(name="onnxruntime"))
    feeds = {"x": np.zeros((1, 3), np.float32)}
    with pytest.raises(BackendError, match="not loaded"):
        measure_latency(backend, feeds)
    with backend:
        latency = measure_latency(backend, feeds, warmup=2, iterations=10)
        with pytest.raises(ConfigError, match="iterations"):
            measure_latency(backend, feeds, iterations=0)
    assert 0 < latency["min_ms"] <= latency["p50_ms"] <= latency["p90_ms"] <= latency["max_ms"]
    assert latency["mean_ms"] > 0 and latency["iterations"] == 10
