"""The Q/DQ lint: a clean hand-built model passes; each TensorRT rule it breaks is reported by node name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from edge_mer_export.errors import ExportError, QdqLintError
from edge_mer_export.qdq_lint import check_qdq, lint_qdq


def qdq_model(classes: int = 4) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv (int8 per-channel weight behind a DQ) -> Relu -> GAP -> Flatten -> Softmax."""
    rng = np.random.default_rng(0)
    w_scale = rng.uniform(0.01, 0.02, classes).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
        numpy_helper.from_array(rng.integers(-127, 128, (classes, 4, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(classes, np.int8), "w_zp"),
        numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["x_dq", "w", "bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Softmax", ["f"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def replace_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return model
    raise KeyError(name)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def set_attr(model: onnx.ModelProto, node_name: str, **attrs: int) -> onnx.ModelProto:
    target = node(model, node_name)
    kept = [a for a in target.attribute if a.name not in attrs]
    del target.attribute[:]
    target.attribute.extend(kept + [helper.make_attribute(k, v) for k, v in attrs.items()])
    return model


def test_clean_model_passes(tmp_path: Path) -> None:
    path = tmp_path / "clean.onnx"
    onnx.save(qdq_model(), str(path))
    assert lint_qdq(path) == []
    check_qdq(path)


def test_asymmetric_zero_point_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "asym.onnx"
    onnx.save(replace_init(qdq_model(), "x_zp", np.array(3, np.int8)), str(path))
    problems = lint_qdq(path)
    assert any("QuantizeLinear 'x_Q'" in p and "zero point 'x_zp' is [3], expected 0" in p for p in problems)
    assert any("DequantizeLinear 'x_DQ'" in p and "zero point" in p for p in problems)
    with pytest.raises(QdqLintError, match=r"asym\.onnx: 2 Q/DQ problem\(s\): QuantizeLinear 'x_Q'"):
        check_qdq(path)


def test_uint8_types_are_caught() -> None:
    problems = lint_qdq(replace_init(qdq_model(), "x_zp", np.array(0, np.uint8)))
    assert [p for p in problems if "quantized type is uint8, expected int8" in p] == [
        "QuantizeLinear 'x_Q': quantized type is uint8, expected int8 (TensorRT explicit INT8 is signed)",
        "DequantizeLinear 'x_DQ': quantized type is uint8, expected int8 (TensorRT explicit INT8 is signed)"]


def test_quantize_without_zero_point_defaults_to_uint8() -> None:
    model = qdq_model()
    for name in ("x_Q", "x_DQ"):
        del node(model, name).input[2]
    problems = lint_qdq(model)
    assert any(p.startswith("QuantizeLinear 'x_Q': quantized type is uint8") for p in problems)


@pytest.mark.parametrize("scale", [-0.05, 0.0, np.nan, np.inf])
def test_bad_scales_are_caught(scale: float) -> None:
    problems = lint_qdq(replace_init(qdq_model(), "x_scale", np.array(scale, np.float32)))
    assert any("'x_Q'" in p and "expected positive finite scales" in p for p in problems)


def test_weight_axis_must_match_the_scales_and_the_output_channels() -> None:
    wrong_channel = lint_qdq(set_attr(qdq_model(), "w_DQ", axis=1))
    assert wrong_channel == ["DequantizeLinear 'w_DQ': per-channel axis 1 of weight 'w_q', but 'conv' needs "
                             "its output-channel axis 0"]
    out_of_range = lint_qdq(set_attr(qdq_model(), "w_DQ", axis=4))
    assert out_of_range == ["DequantizeLinear 'w_DQ': axis 4 is out of range for weight 'w_q' of shape [4, 4, 3, 3]"]
    count = lint_qdq(replace_init(qdq_model(), "w_scale", np.full(3, 0.01, np.float32)))
    assert any("3 scales for axis 0 of weight 'w_q' of shape [4, 4, 3, 3]" in p for p in count)


def test_per_channel_activation_is_caught() -> None:
    model = replace_init(qdq_model(), "x_scale", np.full(4, 0.05, np.float32))
    model = replace_init(model, "x_zp", np.zeros(4, np.int8))
    problems = lint_qdq(model)
    assert "QuantizeLinear 'x_Q': per-channel quantization of activation 'x'; TensorRT quantizes activations " \
           "per tensor" in problems


def test_mismatched_pair_is_caught() -> None:
    model = qdq_model()
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.07, np.float32), "other_scale"))
    node(model, "x_DQ").input[1] = "other_scale"
    assert lint_qdq(model) == ["DequantizeLinear 'x_DQ': scale, zero point or axis differ from its QuantizeLinear "
                               "'x_Q'; a Q -> DQ pair must share them"]


def test_qdq_around_softmax_is_caught() -> None:
    model = qdq_model()
    softmax = node(model, "softmax")
    softmax.input[0] = "f_dq"
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node(
        "QuantizeLinear", ["f", "x_scale", "x_zp"], ["f_q"], name="f_Q"))
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node(
        "DequantizeLinear", ["f_q", "x_scale", "x_zp"], ["f_dq"], name="f_DQ"))
    problems = lint_qdq(model)
    assert len(problems) == 1 and problems[0].startswith("DequantizeLinear 'f_DQ': feeds Softmax node 'softmax'")


def test_scale_from_a_graph_input_is_caught() -> None:
    model = qdq_model()
    model.graph.input.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, []))
    node(model, "x_Q").input[1] = "s"
    node(model, "x_DQ").input[1] = "s"
    problems = lint_qdq(model)
    assert any("QuantizeLinear 'x_Q': scale 's' is not a constant" in p for p in problems)


def test_a_float_model_is_not_an_int8_model() -> None:
    model = qdq_model()
    del model.graph.node[:3]
    assert lint_qdq(model) == ["the model has no QuantizeLinear/DequantizeLinear nodes; expected an explicitly "
                               "quantized model"]
    assert issubclass(QdqLintError, ExportError)


class _Reader(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self._feeds = iter([{"x": rng.normal(size=(2, 4, 8, 8)).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def test_ort_asymmetric_uint8_output_is_refused(tmp_path: Path) -> None:
    """ONNX Runtime's CPU-style defaults (uint8 asymmetric activations) are not TensorRT INT8."""
    model = qdq_model()
    float_model = tmp_path / "float.onnx"
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w = weights["w_q"].astype(np.float32) * weights["w_scale"][:, None, None, None]
    del model.graph.node[:3]
    node(model, "conv").input[:] = ["x", "w", "bias"]
    del model.graph.initializer[:]
    model.graph.initializer.extend([numpy_helper.from_array(w, "w"), numpy_helper.from_array(weights["bias"], "bias")])
    onnx.save(model, str(float_model))
    out = tmp_path / "uint8.onnx"
    quantize_static(str(float_model), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    problems = lint_qdq(out)
    assert any("quantized type is uint8, expected int8" in p for p in problems)
    assert any("expected 0 (TensorRT INT8 is symmetric)" in p for p in problems)
    with pytest.raises(QdqLintError, match="uint8.onnx"):
        check_qdq(out)
