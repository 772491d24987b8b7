"""INT8 placement rules on tiny real graphs: float Adds that share a tensor with a quantized MatMul, and
normalised sums reached through element-wise ops with a constant operand (placement and lint alike).

Models are built with onnx.helper; quantization is the export's own make_int8 with real ONNX Runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_mer_calibration.ort_reader import FeedsReader
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import run_model
from edge_mer_export.qdq_lint import index_graph, lint_qdq, normaliser
from edge_mer_export.qdq_placement import float_nodes, normalised_adds

WIDTH = 8


def _model(nodes: list, inits: dict[str, np.ndarray], inputs: dict[str, list], outputs: dict[str, list]
           ) -> onnx.ModelProto:
    tensors = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "placement",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in outputs.items()],
                              initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def post_ln_residual(path: Path) -> Path:
    """x -> MatMul+bias -> Relu r; r -> MatMul(W1)+bias; Add(r, .) -> LayerNorm -> MatMul -> Softmax.

    ``r`` has two readers, the quantized MatMul ``ffn`` and the residual Add ``residual`` that the
    LayerNormalization normalises (kept float): ONNX Runtime hands both the one DequantizeLinear.
    """
    rng = np.random.default_rng(0)
    inits = {"W0": rng.normal(0, 0.5, (WIDTH, WIDTH)), "b0": rng.normal(0, 0.1, WIDTH),
             "W1": rng.normal(0, 0.5, (WIDTH, WIDTH)), "b1": rng.normal(0, 0.1, WIDTH),
             "gamma": np.ones(WIDTH), "beta": np.zeros(WIDTH), "W2": rng.normal(0, 0.8, (WIDTH, 4))}
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"], name="proj"),
             helper.make_node("Add", ["h", "b0"], ["hb"], name="proj_bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "W1"], ["m"], name="ffn"),
             helper.make_node("Add", ["m", "b1"], ["mb"], name="ffn_bias"),
             helper.make_node("Add", ["r", "mb"], ["s"], name="residual"),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["n"], name="norm", axis=-1),
             helper.make_node("MatMul", ["n", "W2"], ["logits"], name="classifier"),
             helper.make_node("Softmax", ["logits"], ["probs"], name="probs_softmax", axis=-1)]
    model = _model(nodes, inits, {"x": ["N", WIDTH]}, {"probs": ["N", 4]})
    onnx.save(model, str(path))
    return path


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, WIDTH)).astype(np.float32)


def test_a_float_residual_add_sharing_its_input_with_a_quantized_matmul_reads_the_float_tensor(
        tmp_path: Path) -> None:
    src = post_ln_residual(tmp_path / "residual.onnx")
    assert normalised_adds(onnx.load(str(src))) == ["residual"]
    calib = [{"x": row[None]} for row in _rows(64, seed=1)]
    dst = make_int8(src, tmp_path / "residual.int8.onnx", lambda: FeedsReader(calib))  # lints clean, or raises
    assert lint_qdq(dst) == []
    model = onnx.load(str(dst))
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    assert list(by_name["residual"].input) == ["r", "mb"]  # the Relu output itself, no DequantizeLinear
    dq = producers[by_name["ffn"].input[0]]  # the MatMul keeps its quantized input
    assert dq.op_type == "DequantizeLinear" and producers[dq.input[0]].op_type == "QuantizeLinear"
    assert producers[dq.input[0]].input[0] == "r"
    feed = {"x": _rows(200, seed=2)}
    reference, candidate = run_model(src, feed)["probs"], run_model(dst, feed)["probs"]
    assert float(np.mean(reference.argmax(1) == candidate.argmax(1))) >= 0.9


def _scaled_scores(op: str) -> onnx.ModelProto:
    """q, k, mask_bias -> scores = q·k^T; (scores + mask_bias) <op> constant -> Softmax -> attn·k."""
    inits = {"scale": np.array(0.25), "fill": np.array(-1.0e4), "one": np.array(1.0)}
    after = {"Mul": helper.make_node("Mul", ["masked", "scale"], ["ready"], name="rescale"),
             "Div": helper.make_node("Div", ["masked", "scale"], ["ready"], name="rescale"),
             "Sub": helper.make_node("Sub", ["one", "masked"], ["ready"], name="rescale"),
             "Where": helper.make_node("Where", ["keep", "masked", "fill"], ["ready"], name="rescale"),
             "Reciprocal": helper.make_node("Div", ["scale", "masked"], ["ready"], name="rescale"),
             "Live": helper.make_node("Mul", ["masked", "q_scores"], ["ready"], name="rescale")}[op]
    nodes = [helper.make_node("Transpose", ["k"], ["k_t"], name="key_t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "k_t"], ["q_scores"], name="scores"),
             helper.make_node("Add", ["q_scores", "mask_bias"], ["masked"], name="masked_scores"),
             helper.make_node("Cast", ["mask_bias"], ["keep"], name="keep", to=TensorProto.BOOL), after,
             helper.make_node("Softmax", ["ready"], ["attn"], name="attn_softmax", axis=-1),
             helper.make_node("MatMul", ["attn", "k"], ["context"], name="context")]
    shape = ["N", 2, WIDTH]
    return _model(nodes, inits, {"q": shape, "k": shape, "mask_bias": ["N", 1, 2]}, {"context": shape})


@pytest.mark.parametrize("op", ["Mul", "Div", "Sub", "Where"])
def test_a_sum_rescaled_by_a_constant_before_the_softmax_is_normalised(op: str) -> None:
    model = _scaled_scores(op)
    assert normaliser("masked", index_graph(model)).name == "attn_softmax"
    assert normalised_adds(model) == ["masked_scores"]
    assert "masked_scores" in float_nodes(model)


@pytest.mark.parametrize("op", ["Reciprocal", "Live"])
def test_a_sum_divided_into_a_constant_or_scaled_by_an_activation_is_not_followed(op: str) -> None:
    assert normalised_adds(_scaled_scores(op)) == []


def _quantized_mask_sum(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with a Q -> DQ pair on each input of the mask Add, as a careless quantizer would place it."""
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, dtype=np.float32), "s"),
                                    numpy_helper.from_array(np.array(0, dtype=np.int8), "z")])
    add = next(n for n in model.graph.node if n.name == "masked_scores")
    pairs = []
    for k, tensor in enumerate(list(add.input)):
        pairs += [helper.make_node("QuantizeLinear", [tensor, "s", "z"], [f"{tensor}_q"], name=f"{tensor}_Q"),
                  helper.make_node("DequantizeLinear", [f"{tensor}_q", "s", "z"], [f"{tensor}_dq"],
                                   name=f"{tensor}_DQ")]
        add.input[k] = f"{tensor}_dq"
    at = list(model.graph.node).index(add)
    for node in reversed(pairs):
        model.graph.node.insert(at, node)
    return model


@pytest.mark.parametrize("op", ["Mul", "Where"])
def test_the_lint_refuses_qdq_on_a_sum_normalised_through_a_constant_rescale(op: str) -> None:
    problems = lint_qdq(_quantized_mask_sum(_scaled_scores(op)))
    refused = [p for p in problems if "feeds Add node 'masked_scores', whose sum Softmax node 'attn_softmax' "
                                      "normalises" in p]
    assert [p.split(":")[0] for p in refused] == ["DequantizeLinear 'q_scores_DQ'", "DequantizeLinear 'mask_bias_DQ'"]
    live = lint_qdq(_quantized_mask_sum(_scaled_scores("Live")))
    assert not any("feeds Add node 'masked_scores'" in p for p in live)


TOKENS = 3


def cls_readout(select: str) -> onnx.ModelProto:
    """tokens -> MatMul+bias -> Relu r; Add(r, MatMul(r)+bias) -> ``select`` token 0 -> LayerNorm -> MatMul -> Softmax.

    The last residual Add of a pre-LN transformer: its sum reaches the final LayerNormalization only through the
    selection of the [CLS] token (``Gather``/``Slice`` with constant indices; ``LiveGather``: indices an input).
    """
    rng = np.random.default_rng(3)
    inits = {"W0": rng.normal(0, 0.5, (WIDTH, WIDTH)), "b0": rng.normal(0, 0.1, WIDTH),
             "W1": rng.normal(0, 0.5, (WIDTH, WIDTH)), "b1": rng.normal(0, 0.1, WIDTH),
             "gamma": np.ones(WIDTH), "beta": np.zeros(WIDTH), "W2": rng.normal(0, 0.8, (WIDTH, 4))}
    tensors = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()]
    tensors += [numpy_helper.from_array(np.array(v, dtype=np.int64), k)
                for k, v in {"cls": 0, "start": [0], "stop": [1], "axis": [1]}.items()]
    chosen = {"Gather": helper.make_node("Gather", ["s", "cls"], ["token"], name="select", axis=1),
              "Slice": helper.make_node("Slice", ["s", "start", "stop", "axis"], ["token"], name="select"),
              "LiveGather": helper.make_node("Gather", ["s", "index"], ["token"], name="select", axis=1)}[select]
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h"], name="proj"),
             helper.make_node("Add", ["h", "b0"], ["hb"], name="proj_bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "W1"], ["m"], name="ffn"),
             helper.make_node("Add", ["m", "b1"], ["mb"], name="ffn_bias"),
             helper.make_node("Add", ["r", "mb"], ["s"], name="last_residual"), chosen,
             helper.make_node("LayerNormalization", ["token", "gamma", "beta"], ["n"], name="norm", axis=-1),
             helper.make_node("MatMul", ["n", "W2"], ["logits"], name="classifier"),
             helper.make_node("Softmax", ["logits"], ["probs"], name="probs_softmax", axis=-1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", TOKENS, WIDTH])]
    if select == "LiveGather":
        inputs.append(helper.make_tensor_value_info("index", TensorProto.INT64, []))
    shape = ["N", 1, 4] if select == "Slice" else ["N", 4]  # Gather of a scalar index drops the token axis
    output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "cls_readout", inputs, [output], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("select", ["Gather", "Slice"])
def test_the_last_residual_add_whose_cls_token_the_final_norm_reads_stays_float(select: str, tmp_path: Path) -> None:
    model = cls_readout(select)
    assert normaliser("s", index_graph(model)).name == "norm"
    assert "last_residual" in normalised_adds(model)
    src = tmp_path / "cls.onnx"
    onnx.save(model, str(src))
    calib = [{"x": np.random.default_rng(i).normal(0, 1, (1, TOKENS, WIDTH)).astype(np.float32)} for i in range(32)]
    dst = make_int8(src, tmp_path / "cls.int8.onnx", lambda: FeedsReader(calib))  # lints clean, or raises
    by_name = {n.name: n for n in onnx.load(str(dst)).graph.node}
    assert list(by_name["last_residual"].input) == ["r", "mb"]  # both summands float, no DequantizeLinear
    assert by_name["ffn"].input[0] != "r"  # the FFN MatMul still reads a quantized r


def test_a_selection_by_live_indices_is_not_followed() -> None:
    assert normalised_adds(cls_readout("LiveGather")) == []
