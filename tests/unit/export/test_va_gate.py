"""The valence/arousal CCC gate (edge_mer_export.va): metrics, both drop criteria, merging with the accuracy gate."""
from __future__ import annotations

import numpy as np
import pytest

from edge_mer.bundle.schema import TensorInfo
from edge_mer.errors import ConfigError, InputError
from edge_mer_export.gate import GateThresholds, ccc, gate
from edge_mer_export.va import VaThresholds, merge_results, va_gate, va_output, va_summary_md


def _va(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.tanh(np.random.default_rng(seed).normal(size=(n, 2)))


def test_identical_outputs_pass_with_every_metric() -> None:
    ref = _va()
    target = np.clip(ref + np.random.default_rng(1).normal(0, 0.2, ref.shape), -1, 1)
    result = va_gate(ref, ref.copy(), target, VaThresholds())
    assert result.passed and result.reasons == []
    m = result.metrics
    assert m["n_va"] == 200 and m["ccc_valence_vs_fp32"] == pytest.approx(1.0) and m["ccc_mean_vs_fp32"] == 1.0
    assert m["ccc_valence"] == pytest.approx(ccc(ref[:, 0], target[:, 0]))
    assert m["ccc_mean"] == pytest.approx((m["ccc_valence"] + m["ccc_arousal"]) / 2)
    assert m["ccc_valence_fp32"] == m["ccc_valence"] and m["ccc_valence_drop"] == 0.0
    assert "ccc_valence" not in va_gate(ref, ref, None, VaThresholds()).metrics  # no targets: FP32 only


def test_a_shrunk_candidate_fails_against_fp32_and_the_labels() -> None:
    ref = _va()
    result = va_gate(ref, 0.3 * ref, ref, VaThresholds(max_ccc_drop=0.02))
    assert not result.passed
    assert result.reasons[0].startswith("valence CCC vs fp32 ") and "< 0.980 (max CCC drop 0.02)" in result.reasons[0]
    assert any(r.startswith("arousal CCC vs labels drops ") for r in result.reasons)
    assert result.metrics["ccc_arousal_drop"] == pytest.approx(1.0 - ccc(0.3 * ref[:, 1], ref[:, 1]))


def test_the_drop_threshold_and_a_candidate_better_than_fp32() -> None:
    target = _va(seed=2)
    ref = np.clip(target + np.random.default_rng(3).normal(0, 0.1, target.shape), -1, 1)
    cand = 0.97 * ref + 0.03 * target  # closer to the labels than fp32, within 0.02 of fp32
    result = va_gate(ref, cand, target, VaThresholds(max_ccc_drop=0.02))
    assert result.passed and result.metrics["ccc_valence_drop"] < 0
    loose = va_gate(ref, 0.8 * ref, target, VaThresholds(max_ccc_drop=1.0))
    assert loose.passed


def test_nonfinite_candidate_rows_fail_and_bad_shapes_raise() -> None:
    ref = _va(10)
    cand = ref.copy()
    cand[3, 1] = np.nan
    result = va_gate(ref, cand, None, VaThresholds())
    assert not result.passed and result.reasons[0] == "1 of 10 candidate valence/arousal outputs are not finite"
    for args, message in [((ref[:, :1], ref[:, :1], None), r"\[n, 2\]"), ((ref[:1], ref[:1], None), "n >= 2"),
                          ((ref, ref[:5], None), "candidate valence/arousal has shape"),
                          ((ref, ref, ref[:5]), "targets have shape")]:
        with pytest.raises(InputError, match=message):
            va_gate(*args, VaThresholds())
    with pytest.raises(ConfigError, match="max_ccc_drop must be in 0..2"):
        VaThresholds(max_ccc_drop=-0.1)


def test_merging_with_the_accuracy_gate() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 50)
    probs = np.eye(3)[labels] * 0.8 + 0.2 / 3
    classes = gate(probs, probs, labels, 3, GateThresholds(), class_names=("a", "b", "c"))
    ref = _va(50)
    va = va_gate(ref, 0.2 * ref, None, VaThresholds())
    both = merge_results(classes, va)
    assert not both.passed and both.reasons == va.reasons and both.confusion == classes.confusion
    assert both.metrics["n_eval"] == 50 and both.metrics["agreement"] == 1.0 and "ccc_valence_vs_fp32" in both.metrics
    only = merge_results(None, va)
    assert only.metrics["n_eval"] == 50 and only.reasons == va.reasons
    assert merge_results(classes, None) is classes
    with pytest.raises(InputError):
        merge_results(None, None)


def test_va_output_and_the_report_table() -> None:
    outputs = (TensorInfo("probs", ("N", 2), kind="probs", labels=("a", "b")),
               TensorInfo("va", ("N", 2), kind="valence_arousal"))
    assert va_output(outputs) is outputs[1] and va_output(outputs[:1]) is None
    assert va_summary_md([("face", "fp16", {"agreement": 1.0}, "pass")]) == []
    lines = va_summary_md([("face", "int8", {"ccc_valence_vs_fp32": 0.5, "ccc_valence": 0.25}, "**FAIL**")])
    assert lines[0] == "## Valence/arousal (CCC)"
    assert lines[-2] == "| face | int8 | 0.500 | – | 0.250 | – | – | **FAIL** |"
