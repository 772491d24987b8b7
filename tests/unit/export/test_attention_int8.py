"""INT8 of an attention head: Q/DQ on every attention MatMul input, Softmax/LayerNorm and the mask path float.

The head is tiny and real (attention_models.make_attention_head), prepared
and quantized by the export's own steps with real ONNX Runtime; the lint is
run on the result and on hand-broken copies of it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from attention_models import ATTENTION_INPUTS, make_attention_head, multi_head_rows
from edge_mer_calibration.ort_reader import FeedsReader
from edge_mer_export.errors import QdqLintError
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import prepare_model, run_model
from edge_mer_export.qdq_lint import check_qdq, lint_qdq
from edge_mer_export.qdq_placement import float_path_adds, named, normalised_adds

NAMES = [t.name for t in ATTENTION_INPUTS]


def _feeds(n: int, seed: int, batch: int) -> list[dict[str, np.ndarray]]:
    rows = multi_head_rows(n, seed)
    return [{k: rows[k][i:i + batch] for k in NAMES} for i in range(0, n, batch)]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("attention")
    prepared = prepare_model(make_attention_head(root / "attention.onnx"), root / "attention.prepared.onnx")
    calib = _feeds(160, seed=2, batch=1)
    return prepared, make_int8(prepared, root / "attention.int8.onnx", lambda: FeedsReader(calib),
                               float_inputs=("mask",))


def _index(model: onnx.ModelProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def _by_name(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def test_every_attention_matmul_input_is_quantized(quantized: tuple[Path, Path]) -> None:
    _, int8 = quantized
    model = onnx.load(str(int8))
    producers, _ = _index(model)
    for name in ("query", "key", "value", "scores", "context", "out_proj"):
        matmul = _by_name(model, name)
        for tensor in matmul.input:
            dq = producers[tensor]
            assert dq.op_type == "DequantizeLinear", (name, tensor)
            source = producers.get(dq.input[0])
            assert source is not None and source.op_type == "QuantizeLinear", (name, tensor)
    # Q·K^T reads the scaled query and the transposed keys; attn·V the attention weights and the values.
    assert producers[producers[producers[_by_name(model, "scores").input[1]].input[0]].input[0]].op_type == "Transpose"
    assert producers[producers[producers[_by_name(model, "context").input[0]].input[0]].input[0]].op_type == "Softmax"
    classifier = _by_name(model, "classifier")
    assert producers[classifier.input[0]].op_type == "DequantizeLinear"


def test_softmax_layernorm_and_the_mask_path_stay_float(quantized: tuple[Path, Path]) -> None:
    _, int8 = quantized
    model = onnx.load(str(int8))
    producers, consumers = _index(model)
    for node in model.graph.node:
        if node.op_type in ("Softmax", "LayerNormalization"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    # The only Q reading a Softmax or LayerNorm output is the attention weights' pair in front of attn·V.
    quantized_outputs = [producers[q.input[0]].name for q in model.graph.node
                         if q.op_type == "QuantizeLinear" and q.input[0] in producers
                         and producers[q.input[0]].op_type in ("Softmax", "LayerNormalization")]
    assert quantized_outputs == ["attn_softmax"]
    attn_q = next(q for q in model.graph.node if q.op_type == "QuantizeLinear" and q.input[0] == "attn")
    assert [u.name for dq in consumers[attn_q.output[0]] for u in consumers[dq.output[0]]] == ["context"]
    for add in ("masked_scores", "residual"):  # the mask bias + scores, the residual before the LayerNorm
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                   for i in _by_name(model, add).input)
    mask_readers = {n.op_type for n in consumers["mask"]}
    assert "QuantizeLinear" not in mask_readers


def test_the_int8_head_agrees_with_fp32_and_passes_the_lint(quantized: tuple[Path, Path]) -> None:
    prepared, int8 = quantized
    assert lint_qdq(int8) == []
    check_qdq(int8)
    feed = _feeds(300, seed=1, batch=300)[0]
    reference, candidate = run_model(prepared, feed)["probs"], run_model(int8, feed)["probs"]
    assert float(np.mean(reference.argmax(1) == candidate.argmax(1))) >= 0.97
    assert float(np.abs(reference - candidate).max()) < 0.15


def test_placement_rules_name_the_adds_kept_float(quantized: tuple[Path, Path]) -> None:
    prepared, _ = quantized
    model = named(onnx.load(str(prepared)))
    assert normalised_adds(model) == ["masked_scores", "residual"]
    chained = onnx.load(str(prepared))  # a mask-only Add (two mask-derived terms summed) is on the float path
    chained.graph.node.append(helper.make_node("Add", ["mask", "mask_off"], ["mask_twice"], name="mask_twice"))
    assert float_path_adds(chained, ["mask"]) == ["mask_twice"]
    assert float_path_adds(chained, []) == []


def _insert_pair(model: onnx.ModelProto, tensor: str, reader: str, scale: str) -> None:
    """Put a fresh Q -> DQ pair on ``tensor`` for node ``reader`` only (reusing an existing scale)."""
    zero = next(i for i in model.graph.initializer if i.name.endswith("zero_point") and not i.dims).name
    q = helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{tensor}_forced_q"], name=f"{tensor}_forced_Q")
    dq = helper.make_node("DequantizeLinear", [f"{tensor}_forced_q", scale, zero], [f"{tensor}_forced_dq"],
                          name=f"{tensor}_forced_DQ")
    node = _by_name(model, reader)
    node.input[list(node.input).index(tensor)] = dq.output[0]
    at = list(model.graph.node).index(node)
    model.graph.node.insert(at, dq)
    model.graph.node.insert(at, q)


def _activation_scale(model: onnx.ModelProto) -> str:
    return next(n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "attn")


def test_qdq_forced_around_softmax_is_refused(quantized: tuple[Path, Path], tmp_path: Path) -> None:
    _, int8 = quantized
    model = onnx.load(str(int8))
    scale = _activation_scale(model)
    _insert_pair(model, "masked_scores", "attn_softmax", scale)  # into the attention Softmax
    _insert_pair(model, "logits", "probs_softmax", scale)        # into the output Softmax
    broken = tmp_path / "softmax_qdq.onnx"
    onnx.save(model, str(broken))
    problems = lint_qdq(broken)
    assert any(p.startswith("DequantizeLinear 'masked_scores_forced_DQ': feeds Softmax node 'attn_softmax'")
               for p in problems)
    assert any(p.startswith("DequantizeLinear 'logits_forced_DQ': feeds Softmax node 'probs_softmax'")
               for p in problems)
    with pytest.raises(QdqLintError, match=r"softmax_qdq\.onnx: \d+ Q/DQ problem\(s\): .*feeds Softmax node"):
        check_qdq(broken)


def test_qdq_on_a_softmax_or_layernorm_output_other_than_the_attention_weights_is_refused(
        quantized: tuple[Path, Path]) -> None:
    _, int8 = quantized
    model = onnx.load(str(int8))
    scale = _activation_scale(model)
    _insert_pair(model, "normed", "keep_valid", scale)  # LayerNorm output into the masking Mul
    problems = lint_qdq(model)
    assert problems == ["QuantizeLinear 'normed_forced_Q': quantizes the output of LayerNormalization node 'norm' "
                        "for a layer other than a Conv/Gemm/MatMul; a normalisation's output is quantized only as "
                        "a weighted layer's input"]
    model = onnx.load(str(int8))
    probs_reader = helper.make_node("Identity", ["probs"], ["probs_copy"], name="copy")
    model.graph.node.append(probs_reader)
    model.graph.output.append(helper.make_tensor_value_info("probs_copy", onnx.TensorProto.FLOAT, ["N", 8]))
    _insert_pair(model, "probs", "copy", scale)
    assert any(p.startswith("QuantizeLinear 'probs_forced_Q': quantizes the output of Softmax node 'probs_softmax'")
               for p in lint_qdq(model))


def test_an_unquantized_attention_matmul_input_is_refused(quantized: tuple[Path, Path], tmp_path: Path) -> None:
    _, int8 = quantized
    model = onnx.load(str(int8))
    _by_name(model, "scores").input[1] = "k_t"  # the keys' float tensor, past their Q/DQ pair
    broken = tmp_path / "float_keys.onnx"
    onnx.save(model, str(broken))
    problems = lint_qdq(broken)
    assert problems == ["MatMul 'scores': attention MatMul input 'k_t' (both inputs are activations) has no "
                        "QuantizeLinear -> DequantizeLinear; TensorRT runs it in INT8 only with both operands "
                        "quantized"]
    with pytest.raises(QdqLintError, match="float_keys.onnx: 1 Q/DQ problem.*attention MatMul input 'k_t'"):
        check_qdq(broken)


def test_a_quantized_mask_bias_is_refused(quantized: tuple[Path, Path]) -> None:
    _, int8 = quantized
    model = onnx.load(str(int8))
    _insert_pair(model, "mask_bias", "masked_scores", _activation_scale(model))
    problems = lint_qdq(model)
    assert len(problems) == 1 and problems[0].startswith(
        "DequantizeLinear 'mask_bias_forced_DQ': feeds Add node 'masked_scores', whose sum Softmax node "
        "'attn_softmax' normalises; the additive attention mask and the residual stream")
