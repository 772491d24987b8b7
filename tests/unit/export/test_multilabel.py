"""The multilabel gate (edge_mer_export.multilabel): its metrics against hand-computed values, and its verdicts.

Average precision and F1 themselves are tested in tests/unit/calibration/test_multilabel_metrics.py.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from edge_mer.bundle.schema import TensorInfo
from edge_mer.errors import ConfigError, InputError
from edge_mer_export.cli import add_arguments, load_config
from edge_mer_export.gate import GateResult, with_verdict
from edge_mer_export.multilabel import (MultilabelThresholds, multilabel_gate, multilabel_metrics, multilabel_output,
                                        multilabel_summary_md)

OUTPUT = TensorInfo("sets", ("N", 2), kind="multilabel", labels=("pos", "aroused"), thresholds=(0.5, 0.4))


def test_multilabel_metrics_by_hand() -> None:
    scores = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.1], [0.5, 0.45]])
    truth = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    metrics = multilabel_metrics(scores, truth, (0.5, 0.4), ("pos", "aroused"))
    # pos ranked 0.9(+) 0.6(-) 0.5(+) 0.3(+): 1/3 * (1 + 2/3 + 3/4); aroused 0.7(+) 0.45(+): 1.
    ap_pos = (1 + 2 / 3 + 3 / 4) / 3
    assert metrics == pytest.approx({"ml_ap_pos": ap_pos, "ml_ap_aroused": 1.0, "ml_f1_pos": 2 / 3,
                                     "ml_f1_aroused": 1.0, "ml_map": (ap_pos + 1.0) / 2, "ml_mean_f1": 5 / 6})


def test_metrics_match_scikit_learn_where_it_is_installed() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores, truth = np.round(rng.random((60, 3)), 1), (rng.random((60, 3)) < 0.4).astype(float)
    ours = multilabel_metrics(scores, truth, (0.5, 0.3, 0.7), ("a", "b", "c"))
    assert ours["ml_map"] == pytest.approx(sklearn.average_precision_score(truth, scores, average="macro"))
    expected_f1 = sklearn.f1_score(truth, scores >= np.array([0.5, 0.3, 0.7]), average=None)
    assert [ours[f"ml_f1_{k}"] for k in "abc"] == pytest.approx(list(expected_f1))


def _truth(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, 2)) < 0.4).astype(np.float32)
    scores = np.clip(0.65 * truth + rng.normal(0.2, 0.15, truth.shape), 0, 1)
    return scores, truth


def test_a_faithful_candidate_passes_and_reports_both_sides() -> None:
    reference, truth = _truth()
    candidate = np.clip(reference + np.random.default_rng(1).normal(0, 0.003, reference.shape), 0, 1)
    result = multilabel_gate(reference, candidate, truth, OUTPUT, MultilabelThresholds())
    m = result.metrics
    assert result.passed and result.reasons == []
    assert m["ml_n"] == 200 and m["ml_agreement"] > 0.97 and m["ml_max_abs_diff"] < 0.02
    assert 0.8 < m["ml_map_fp32"] <= 1.0 and abs(m["ml_map_drop"]) < 0.01
    assert {"ml_ap_pos", "ml_ap_aroused", "ml_f1_pos", "ml_f1_aroused", "ml_mean_f1", "ml_mean_f1_fp32"} <= set(m)


def test_a_candidate_losing_map_fails_with_the_drop_named() -> None:
    reference, truth = _truth()
    candidate = reference.copy()
    candidate[:, 0] = np.random.default_rng(2).permutation(candidate[:, 0])  # label 'pos' ranked at random
    result = multilabel_gate(reference, candidate, truth, OUTPUT, MultilabelThresholds(max_map_drop=0.02))
    assert not result.passed and result.metrics["ml_map_drop"] > 0.1
    assert result.reasons == [f"sets mAP drops {result.metrics['ml_map_drop']:.3f} > 0.02 "
                              f"(fp32 {result.metrics['ml_map_fp32']:.3f}, candidate {result.metrics['ml_map']:.3f})"]
    loose = multilabel_gate(reference, candidate, truth, OUTPUT, MultilabelThresholds(max_map_drop=1.0))
    assert loose.passed


def test_non_finite_candidates_fail_and_bad_inputs_are_input_errors() -> None:
    reference, truth = _truth(20)
    candidate = reference.copy()
    candidate[3, 1] = np.nan
    result = multilabel_gate(reference, candidate, truth, OUTPUT, MultilabelThresholds())
    assert not result.passed and result.reasons[0] == "1 of 20 candidate sets outputs are not finite"
    with pytest.raises(InputError, match=r"label sets row \d+ column \d+ is 0.5; expected 0 or 1"):
        multilabel_gate(reference, reference, truth * 0.5, OUTPUT, MultilabelThresholds())
    with pytest.raises(InputError, match=r"label sets have shape \(20, 1\), scores \(20, 2\)"):
        multilabel_gate(reference, reference, truth[:, :1], OUTPUT, MultilabelThresholds())
    with pytest.raises(InputError, match="has 3 columns for 2 labels"):
        multilabel_gate(np.ones((20, 3)) / 2, np.ones((20, 3)) / 2, None, OUTPUT, MultilabelThresholds())


def test_without_label_sets_only_the_fp32_comparison_is_reported() -> None:
    reference, _ = _truth(30)
    result = multilabel_gate(reference, reference, None, OUTPUT, MultilabelThresholds())
    assert result.passed and set(result.metrics) == {"ml_n", "ml_agreement", "ml_max_abs_diff"}


def test_merging_keeps_the_class_verdict_and_adds_the_multilabel_one() -> None:
    classes = GateResult(True, [], {"n_eval": 200.0, "accuracy": 0.8}, class_names=("a", "b"),
                         confusion=((1, 0), (0, 1)))
    ml = GateResult(False, ["sets mAP drops 0.100 > 0.02"], {"ml_n": 200.0, "ml_map": 0.7})
    merged = with_verdict(classes, ml)
    assert not merged.passed and merged.reasons == ["sets mAP drops 0.100 > 0.02"]
    assert merged.metrics == {"n_eval": 200.0, "accuracy": 0.8, "ml_n": 200.0, "ml_map": 0.7}
    assert merged.confusion == ((1, 0), (0, 1)) and merged.class_names == ("a", "b")
    lines = multilabel_summary_md([("fusion_head.compound", "int8", merged.metrics, "**FAIL**"),
                                   ("face", "int8", {"accuracy": 0.9}, "pass")])
    assert lines[0] == "## Multilabel outputs (mAP, per-label F1)" and len(lines) == 6
    assert lines[4].startswith("| fusion_head.compound | int8 | 0.700 | – |")
    assert multilabel_summary_md([("face", "int8", {"accuracy": 0.9}, "pass")]) == []


def test_multilabel_output_and_thresholds() -> None:
    assert multilabel_output([TensorInfo("p", ("N", 2), kind="probs", labels=("a", "b")), OUTPUT]) is OUTPUT
    assert multilabel_output([TensorInfo("p", ("N", 2), kind="probs", labels=("a", "b"))]) is None
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match="max_map_drop must be in 0..1"):
            MultilabelThresholds(max_map_drop=bad)


def _config(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_config(parser.parse_args(["b", "--out", "o", *argv]))


def test_the_max_map_drop_flag() -> None:
    assert _config().max_map_drop == 0.02
    assert _config("--max-map-drop", "0.1").max_map_drop == 0.1
    for bad in ("-0.01", "1.5", "nan"):
        with pytest.raises(ConfigError, match="max_map_drop must be in 0..1"):
            _config("--max-map-drop", bad)


def test_label_sets_without_any_positive_row_fail_instead_of_passing_ungated() -> None:
    reference, _ = _truth(30)
    result = multilabel_gate(reference, reference, np.zeros((30, 2)), OUTPUT, MultilabelThresholds())
    assert not result.passed and "ml_map" not in result.metrics
    assert result.reasons == ["sets: the label sets have no positive row for any label (pos, aroused); mAP is "
                              "undefined, so the output cannot be gated"]


def test_a_label_without_positives_is_left_out_of_map_and_mean_f1_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    reference, truth = _truth(40)
    truth[:, 1] = 0.0  # 'aroused' never true
    candidate = reference.copy()
    candidate[:, 1] = 0.9  # ... and the candidate turns it on everywhere: its F1 there is 0
    with caplog.at_level("WARNING", logger="edge_mer_export.multilabel"):
        result = multilabel_gate(reference, candidate, truth, OUTPUT, MultilabelThresholds())
    m = result.metrics
    assert "no positive row for aroused" in caplog.text
    assert m["ml_f1_aroused"] == 0.0 and "ml_ap_aroused" not in m
    # FP32 and candidate mean F1 both average over 'pos' alone (the labels with a positive row).
    assert m["ml_mean_f1"] == pytest.approx(m["ml_f1_pos"])
    assert m["ml_mean_f1_fp32"] == pytest.approx(multilabel_metrics(reference, truth, OUTPUT.thresholds,
                                                                    OUTPUT.labels)["ml_f1_pos"])
    assert m["ml_map"] == pytest.approx(m["ml_ap_pos"])


def test_candidate_scores_outside_zero_one_fail() -> None:
    reference, truth = _truth(20)
    candidate = reference.copy()
    candidate[2, 0], candidate[5, 1], candidate[5, 0] = 1.02, -0.01, 1.5
    result = multilabel_gate(reference, candidate, truth, OUTPUT, MultilabelThresholds(max_map_drop=1.0))
    assert not result.passed and result.metrics["ml_out_of_range_rows"] == 2
    assert result.reasons == ["2 of 20 candidate sets outputs have a score outside [0, 1], which the runtime refuses"]
    exact = reference.copy()
    exact[0] = (0.0, 1.0)  # the bounds themselves are scores the runtime accepts
    assert multilabel_gate(reference, exact, truth, OUTPUT, MultilabelThresholds(max_map_drop=1.0)).passed
