"""The embedding gate (edge_mer_export.embedding): cosine similarity with FP32 of every ``embedding`` output.

Pure verdicts on arrays, then the export's own judge() on a tiny real ONNX model (probs and an embedding
output) with a faithful FP16 candidate and a candidate whose embedding branch was changed, through to the
report's JSON and Markdown.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_mer.bundle.schema import TensorInfo
from edge_mer.errors import ConfigError, InputError
from edge_mer_export.cli import add_arguments, load_config
from edge_mer_export.config import ExportConfig
from edge_mer_export.embedding import (EmbeddingThresholds, embedding_gate, embedding_outputs, embedding_summary_md,
                                       row_cosines)
from edge_mer_export.evaluate import EvalSet, judge
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.gate import GateThresholds
from edge_mer_export.report import EncoderResult, ExportReport, write_report

EMBEDDING = TensorInfo("embedding", ("N", 6), kind="embedding")
PROBS = TensorInfo("probs", ("N", 3), kind="probs", labels=("a", "b", "c"))


def test_cosines_by_hand_and_all_zero_rows() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    b = np.array([[0.0, 3.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(row_cosines(a, b), [0.0, 1.0, 1.0, 0.0, -1.0])


def test_a_faithful_candidate_passes_with_mean_and_min_reported() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (50, 6))
    candidate = reference + rng.normal(0, 0.01, reference.shape)
    result = embedding_gate(reference, candidate, EMBEDDING, EmbeddingThresholds())
    m = result.metrics
    assert result.passed and set(m) == {"cosine_mean_embedding", "cosine_min_embedding"}
    assert 0.999 < m["cosine_mean_embedding"] <= 1.0 and m["cosine_min_embedding"] <= m["cosine_mean_embedding"]


def test_a_candidate_below_the_threshold_fails_naming_the_output_and_value() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, (40, 6))
    candidate = reference.copy()
    candidate[:10] = rng.normal(0, 1, (10, 6))  # a quarter of the rows point elsewhere
    result = embedding_gate(reference, candidate, EMBEDDING, EmbeddingThresholds(min_cosine=0.98))
    mean, lowest = result.metrics["cosine_mean_embedding"], result.metrics["cosine_min_embedding"]
    assert not result.passed and mean < 0.9
    assert result.reasons == [f"embedding mean cosine similarity with fp32 {mean:.4f} < 0.98 (lowest row {lowest:.4f})"]
    assert embedding_gate(reference, candidate, EMBEDDING, EmbeddingThresholds(min_cosine=0.0)).passed


def test_non_finite_candidates_fail_and_bad_shapes_are_input_errors() -> None:
    reference = np.ones((5, 6))
    candidate = reference.copy()
    candidate[2, 1] = np.inf
    result = embedding_gate(reference, candidate, EMBEDDING, EmbeddingThresholds(min_cosine=0.0))
    assert not result.passed and result.metrics["nonfinite_rows"] == 1
    assert result.reasons == ["1 of 5 candidate embedding outputs are not finite"]
    with pytest.raises(InputError, match=r"candidate embedding embeddings have shape \(4, 6\), reference \(5, 6\)"):
        embedding_gate(reference, reference[:4], EMBEDDING, EmbeddingThresholds())
    with pytest.raises(InputError, match="reference embedding embeddings contain non-finite values"):
        embedding_gate(candidate, reference, EMBEDDING, EmbeddingThresholds())


def _config(*argv: str) -> ExportConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_config(parser.parse_args(["b", "--out", "o", *argv]))


def test_the_min_embedding_cosine_flag_and_thresholds() -> None:
    assert _config().min_embedding_cosine == 0.98
    assert _config("--min-embedding-cosine", "0.9").min_embedding_cosine == 0.9
    for bad in ("-0.1", "1.5", "nan"):
        with pytest.raises(ConfigError, match="min_embedding_cosine must be in 0..1"):
            _config("--min-embedding-cosine", bad)
    for bad in (-0.1, 1.01, float("nan"), True):
        with pytest.raises(ConfigError, match="min_embedding_cosine must be in 0..1"):
            EmbeddingThresholds(min_cosine=bad)
    assert embedding_outputs([PROBS, EMBEDDING]) == (EMBEDDING,) and embedding_outputs([PROBS]) == ()


def _encoder(path: Path, embedding_weights: np.ndarray) -> Path:
    """x [N,4] -> Gemm -> Softmax ``probs`` [N,3]; x -> MatMul(E) -> Relu ``embedding`` [N,6]."""
    rng = np.random.default_rng(7)
    inits = {"W": rng.normal(0, 1.5, (4, 3)), "B": np.zeros(3), "E": embedding_weights}
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("MatMul", ["x", "E"], ["e"]),
             helper.make_node("Relu", ["e"], ["embedding"])]
    graph = helper.make_graph(nodes, "tiny_encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 6])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_judge_compares_every_embedding_output_and_the_report_shows_it(tmp_path: Path) -> None:
    weights = np.random.default_rng(8).normal(0, 1, (4, 6))
    fp32 = _encoder(tmp_path / "enc.onnx", weights)
    files = {"fp16": make_fp16(fp32, tmp_path / "enc.fp16.onnx"),
             "int8": _encoder(tmp_path / "enc.int8.onnx", weights[:, ::-1].copy())}  # same probs, other embedding
    x = np.random.default_rng(9).normal(0, 1, (64, 4)).astype(np.float32)
    labels = list(np.argmax(x[:, :3], axis=1))
    classes = EvalSet([{"x": x[i:i + 16]} for i in range(0, 64, 16)], labels=labels)
    cfg = ExportConfig(source=tmp_path, out=tmp_path / "out", latency_iterations=2, max_accuracy_drop=100.0,
                       min_agreement=0.0)
    judged = judge(cfg, "enc", fp32, files, (PROBS, None), classes, None, embedding_outputs([PROBS, EMBEDDING]))
    fp16, changed = judged.outcomes["fp16"].gate, judged.outcomes["int8"].gate
    assert fp16.passed and fp16.metrics["cosine_mean_embedding"] > 0.999 and fp16.metrics["agreement"] == 1.0
    assert changed.metrics["agreement"] == 1.0 and changed.metrics["cosine_mean_embedding"] < 0.98
    assert not changed.passed and changed.reasons == [
        f"embedding mean cosine similarity with fp32 {changed.metrics['cosine_mean_embedding']:.4f} < 0.98 "
        f"(lowest row {changed.metrics['cosine_min_embedding']:.4f})"]
    assert not files["int8"].exists() and files["fp16"].exists()  # a failed candidate's file is deleted
    assert judged.reports["int8"].metrics["cosine_mean_embedding"] == changed.metrics["cosine_mean_embedding"]

    result = EncoderResult(name="enc", modality="face", labels=PROBS.labels, n_eval=64, n_calib=0, calib_source="-",
                           eval_source="-", precisions=judged.outcomes, fp32_latency=judged.fp32_latency)
    report = ExportReport(encoders=[result], thresholds=GateThresholds(), host={}, created="2026-01-01T00:00:00+00:00",
                          min_embedding_cosine=0.98)
    json_path, md_path = write_report(tmp_path / "report", report)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["thresholds"]["min_embedding_cosine"] == 0.98
    metrics = data["encoders"]["enc"]["precisions"]["int8"]["metrics"]
    assert metrics["cosine_mean_embedding"] == pytest.approx(changed.metrics["cosine_mean_embedding"])
    assert "cosine_min_embedding" in metrics
    md = md_path.read_text(encoding="utf-8")
    assert "- embedding outputs: mean cosine similarity with fp32 at least 0.98" in md
    assert "## Embedding outputs (cosine similarity with fp32)" in md
    assert f"| enc | int8 | embedding | {changed.metrics['cosine_mean_embedding']:.4f} |" in md
    assert "| cosine_mean_embedding |" in md  # the per-precision metric table too


def test_embedding_summary_lists_each_output_row() -> None:
    lines = embedding_summary_md([("face", "int8", {"cosine_mean_embedding": 0.99, "cosine_min_embedding": 0.9},
                                   "pass"), ("face", "fp16", {"accuracy": 1.0}, "pass")])
    assert lines[4] == "| face | int8 | embedding | 0.9900 | 0.9000 | pass |" and len(lines) == 6
    assert embedding_summary_md([("face", "fp16", {"accuracy": 1.0}, "pass")]) == []
