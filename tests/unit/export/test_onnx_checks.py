"""prepare_model: checker, shape inference and folding keep the signature and the outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_mer.bundle import default_bundle_path
from edge_mer_export.errors import ExportError
from edge_mer_export.onnx_checks import io_signature, prepare_model, run_model, sample_feed

BUNDLE = default_bundle_path()
ENCODERS = {
    "face": BUNDLE / "face" / "mini_xception_fer2013.onnx",
    "speech": BUNDLE / "speech" / "speech_cnn.onnx",
    "eeg": BUNDLE / "eeg" / "eeg_de_linear.onnx",
    "eeg_cyton": BUNDLE / "eeg" / "eeg_cyton_de_linear.onnx",
}


def conv_bn_model(path: Path, seed: int = 0) -> Path:
    """[N,3,H,W] -> Conv -> BatchNormalization -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in {
        "W": rng.normal(size=(4, 3, 3, 3)), "B": rng.normal(size=4),
        "gamma": rng.uniform(0.5, 1.5, 4), "beta": rng.normal(size=4), "mean": rng.normal(size=4),
        "var": rng.uniform(0.5, 2.0, 4), "G": rng.normal(size=(3, 4)), "GB": rng.normal(size=3)}.items()]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G", "GB"], ["logits"], name="head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_prepare_folds_batchnorm_and_keeps_signature(tmp_path: Path) -> None:
    src = conv_bn_model(tmp_path / "tiny.onnx")
    dst = prepare_model(src, tmp_path / "out" / "tiny.prepared.onnx", dims={"H": 12, "W": 20})
    before, after = onnx.load(str(src)), onnx.load(str(dst))
    assert [n.op_type for n in after.graph.node].count("BatchNormalization") == 0
    assert io_signature(after) == io_signature(before)
    assert {o.domain for o in after.opset_import} == {""}
    for hw in ((8, 8), (17, 31)):
        feed = {"x": np.random.default_rng(1).normal(size=(3, 3, *hw)).astype(np.float32)}
        np.testing.assert_allclose(run_model(after, feed)["probs"], run_model(before, feed)["probs"],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_prepare_real_encoders_keep_outputs_and_dynamic_axes(name: str, tmp_path: Path) -> None:
    src = ENCODERS[name]
    dst = prepare_model(src, tmp_path / f"{name}.onnx")
    before, after = onnx.load(str(src)), onnx.load(str(dst))
    onnx.checker.check_model(after, full_check=True)
    old, new = io_signature(before), io_signature(after)
    assert [r[:3] for r in new] == [r[:3] for r in old]  # names, kinds, element types
    assert new[0][3] == old[0][3]  # the input keeps its axes, dynamic ones by name
    sizes = [{"T": 101}, {"T": 437}] if name == "speech" else [{}]
    for dims in sizes:
        feed = sample_feed(before, {"N": 3, **dims}, seed=7)
        np.testing.assert_allclose(run_model(after, feed)["probs"], run_model(before, feed)["probs"],
                                   rtol=1e-5, atol=1e-5)


def test_prepare_keeps_speech_time_axis_dynamic(tmp_path: Path) -> None:
    dst = prepare_model(ENCODERS["speech"], tmp_path / "speech.onnx")
    dims = onnx.load(str(dst)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, 64, "T"]


def test_prepare_refuses_a_model_that_fails_the_checker(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bad))
    with pytest.raises(ExportError, match=r"bad\.onnx fails the ONNX checker: No Op registered for NoSuchOp"):
        prepare_model(bad, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_prepare_refuses_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model\xff")
    with pytest.raises(ExportError, match="garbage.onnx fails the ONNX checker"):
        prepare_model(garbage, tmp_path / "out.onnx")
    with pytest.raises(ExportError, match="missing.onnx does not exist"):
        prepare_model(tmp_path / "missing.onnx", tmp_path / "out.onnx")
