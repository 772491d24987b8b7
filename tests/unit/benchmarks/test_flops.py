"""Tests for benchmarks/flops.py: hand-counted FLOPs of small ONNX graphs, shape errors, the default face encoder."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.errors import InputError

# benchmarks/ is a folder of scripts, not a package; its scripts import flops.py as a sibling the same way.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from flops import count_flops  # noqa: E402

Dims = Sequence[int | str]


def _model(node: onnx.NodeProto, inputs: dict[str, Dims], output: str = "Y",
           weights: dict[str, Sequence[int]] | None = None, opset: int = 17) -> onnx.ModelProto:
    """One node; ``inputs`` become graph inputs, ``weights`` zero initializers; shape inference finds the output's."""
    inits = [numpy_helper.from_array(np.zeros(shape, np.float32), name) for name, shape in (weights or {}).items()]
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims)) for name, dims in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model


def test_grouped_conv_with_bias() -> None:
    # X [1,4,8,8], W [6,2,3,3] in 2 groups, pad 1 -> Y [1,6,8,8] = 384 outputs of 2*3*3 = 18 MACs each, + bias.
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], group=2, pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    count = count_flops(_model(node, {"X": [1, 4, 8, 8]}, weights={"W": [6, 2, 3, 3], "B": [6]}), {})
    assert count.total == 2 * 384 * 18 + 384 == 14208
    assert count.by_op == {"Conv": 14208}
    assert count.uncounted == ()


def test_depthwise_strided_conv_without_bias() -> None:
    # X [2,3,10,10], depthwise 3x3 stride 2, no pad -> Y [2,3,4,4] = 96 outputs of 9 MACs.
    node = helper.make_node("Conv", ["X", "W"], ["Y"], group=3, strides=[2, 2])
    count = count_flops(_model(node, {"X": ["N", 3, 10, 10]}, weights={"W": [3, 1, 3, 3]}), {"X": [2, 3, 10, 10]})
    assert count.total == 2 * 96 * 9 == 1728


def test_conv_transpose() -> None:
    # X [1,4,3,3], W [4,2,2,2] stride 2 -> Y [1,2,6,6]; each of 36 inputs scatters 2*2*2 = 8 MACs.
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=[2, 2])
    count = count_flops(_model(node, {"X": [1, 4, 3, 3]}, weights={"W": [4, 2, 2, 2]}), {})
    assert count.total == 2 * 36 * 8 == 576


@pytest.mark.parametrize(("alpha", "beta", "expected"), [
    (1.0, 1.0, 2 * 4 * 5 * 8 + 20),        # [4,8] @ [8,5]: 320 + the C add
    (0.5, 1.0, 2 * 4 * 5 * 8 + 20 + 20),   # + alpha scaling
    (0.5, 2.0, 2 * 4 * 5 * 8 + 20 + 40),   # + beta scaling of C
])
def test_gemm_transposed_operands(alpha: float, beta: float, expected: int) -> None:
    node = helper.make_node("Gemm", ["A", "B", "C"], ["Y"], transA=1, transB=1, alpha=alpha, beta=beta)
    model = _model(node, {"A": [8, 4]}, weights={"B": [5, 8], "C": [5]})
    assert count_flops(model, {}).total == expected


@pytest.mark.parametrize(("a", "b"), [([2, 3, 4, 6], [6, 5]), ([3, 1, 4, 6], [2, 6, 5])])
def test_batched_broadcast_matmul(a: list[int], b: list[int]) -> None:
    # Both give Y with 2*3 batches of [4,5] = 120 dot products of length 6.
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    assert count_flops(_model(node, {"A": a, "B": b}), {}).total == 2 * 120 * 6 == 1440


def test_batchnorm_add_and_maxpool() -> None:
    bn = helper.make_node("BatchNormalization", ["X", "s", "b", "m", "v"], ["Y"])
    weights = {k: [3] for k in "sbmv"}
    assert count_flops(_model(bn, {"X": [2, 3, 4, 4]}, weights=weights), {}).total == 2 * 96

    add = helper.make_node("Add", ["X", "Z"], ["Y"])
    assert count_flops(_model(add, {"X": [2, 3, 4], "Z": [4]}), {}).total == 24

    # X [1,2,7,7], 3x3 kernel stride 2 -> Y [1,2,3,3] = 18 outputs, 9 operations each.
    pool = helper.make_node("MaxPool", ["X"], ["Y"], kernel_shape=[3, 3], strides=[2, 2])
    assert count_flops(_model(pool, {"X": [1, 2, 7, 7]}), {}).total == 162


def test_chain_sums_by_op_and_lists_unformulated_ops(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"]),                 # [3,4] @ [4,2]: 2*6*4 = 48
        helper.make_node("Relu", ["h"], ["r"]),                         # 6 * 1
        helper.make_node("Reshape", ["r", "shape"], ["f"]),             # free
        helper.make_node("Softmax", ["f"], ["s"], axis=-1),             # 6 * 5
        helper.make_node("Einsum", ["s", "s"], ["Y"], equation="i,i->"),  # no formula
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((4, 2), np.float32), "W"),
         numpy_helper.from_array(np.array([6], np.int64), "shape")])
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    count = count_flops(path, {"X": [3, 4]})
    assert count.by_op == {"MatMul": 48, "Relu": 6, "Softmax": 30}
    assert count.total == 84
    assert count.uncounted == ("Einsum",)


def _dynamic_model() -> onnx.ModelProto:
    return _model(helper.make_node("Relu", ["logmel"], ["Y"]), {"logmel": ["N", 1, 64, "T"]})


def test_unresolved_dynamic_dim_names_input_and_dim() -> None:
    with pytest.raises(InputError, match=r"input 'logmel' has dynamic dimension 'N' \(axis 0\)"):
        count_flops(_dynamic_model(), {})


@pytest.mark.parametrize(("shape", "message"), [
    ([1, 1, 64, 0], r"input 'logmel': dimension 'T' \(axis 3\) must be a positive int, got 0"),
    ([1, 1, 64], r"input 'logmel': shape \[1, 1, 64\] has rank 3, the model's has 4"),
    ([1, 1, 32, 100], r"input 'logmel': axis 2 is fixed at 64 in the model, got 32"),
    ([1, 1, 64, 10.5], r"dimension 'T' \(axis 3\) must be a positive int, got 10.5"),
])
def test_bad_input_shapes(shape: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        count_flops(_dynamic_model(), {"logmel": shape})


def test_unknown_input_name_and_wrong_model_type() -> None:
    with pytest.raises(InputError, match=r"input_shapes names 'mel', which is not a model input \(inputs: logmel\)"):
        count_flops(_dynamic_model(), {"mel": [1, 1, 64, 10]})
    with pytest.raises(InputError, match="model must be an onnx.ModelProto or a path, got dict"):
        count_flops({}, {})  # type: ignore[arg-type]


def test_input_model_is_not_modified() -> None:
    model = _dynamic_model()
    count_flops(model, {"logmel": [1, 1, 64, 10]})
    assert model.graph.input[0].type.tensor_type.shape.dim[3].dim_param == "T"


# mini-XCEPTION (Arriaga et al. 2017) at 64x64, written out layer by layer without ONNX shape inference:
# (output height, output width, output channels, MACs per output = Cin/group * kh * kw).
MINI_XCEPTION_64 = [
    (62, 62, 8, 1 * 9), (60, 60, 8, 8 * 9),                     # two valid 3x3 convs
    (60, 60, 8, 9), (60, 60, 16, 8), (60, 60, 16, 9), (60, 60, 16, 16), (30, 30, 16, 8),      # block 1 + residual
    (30, 30, 16, 9), (30, 30, 32, 16), (30, 30, 32, 9), (30, 30, 32, 32), (15, 15, 32, 16),   # block 2
    (15, 15, 32, 9), (15, 15, 64, 32), (15, 15, 64, 9), (15, 15, 64, 64), (8, 8, 64, 32),     # block 3
    (8, 8, 64, 9), (8, 8, 128, 64), (8, 8, 128, 9), (8, 8, 128, 128), (4, 4, 128, 64),        # block 4
    (4, 4, 7, 128 * 9),                                         # 3x3 classifier conv to 7 classes (with bias)
]


def test_default_face_encoder_matches_a_layer_by_layer_estimate() -> None:
    bundle = load_bundle(default_bundle_path(), verify_hashes=False)
    path = bundle.model_ref("face").file.path
    count = count_flops(path, {"input_1": [1, 1, 64, 64]})
    macs = sum(h * w * c * k for h, w, c, k in MINI_XCEPTION_64)
    assert macs == 10_163_392
    assert count.by_op["Conv"] == 2 * macs + 4 * 4 * 7  # + the classifier's bias adds
    # BatchNorm, ReLU, pooling and the residual adds cost a few percent on top of the convolutions.
    assert 2 * macs < count.total < 1.1 * 2 * macs
    assert count.uncounted == ()
    batch4 = count_flops(path, {"input_1": [4, 1, 64, 64]})
    assert batch4.total == 4 * count.total
