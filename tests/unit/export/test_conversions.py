"""FP16 and INT8 conversion of tiny hand-built models: types, Q/DQ placement, the calibration cache, refusals.

The real encoders on real data are in test_real_encoders.py.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from edge_mer_export import int8
from edge_mer_export.errors import ExportError, QdqLintError
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.int8 import QUANTIZED_OP_TYPES, make_int8
from edge_mer_export.onnx_checks import run_model
from edge_mer_export.qdq_lint import lint_qdq
from edge_mer_export.qdq_placement import stem_convs


def _inits(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array((rng.normal(size=s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]


def _save(path: Path, nodes: list, name: str, x: list, y: list, inits: list) -> Path:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, y)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def conv_model(path: Path) -> Path:
    """[N,3,16,16]: Conv-Relu, Conv + residual Add, Relu, MaxPool, GlobalAveragePool, Gemm, Softmax."""
    inits = _inits(np.random.default_rng(0), {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (8, 8, 3, 3), "B2": (8,),
                                              "G": (4, 8), "GB": (4,)})
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["r1", "c2"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["m"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G", "GB"], ["logits"], name="head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    return _save(path, nodes, "tiny_conv", ["N", 3, 16, 16], ["N", 4], inits)


def matmul_model(path: Path) -> Path:
    """[N,T,16]: MatMul + bias Add, Relu, mean over T, MatMul, Softmax (dynamic T)."""
    inits = _inits(np.random.default_rng(1), {"W1": (16, 32), "b1": (32,), "W2": (32, 5)})
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="proj"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["pooled"], name="mean_t", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W2"], ["logits"], name="head"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    return _save(path, nodes, "tiny_matmul", ["N", "T", 16], ["N", 5], inits)


def smooth_images(n: int, seed: int = 0) -> np.ndarray:
    """Image-like batches: low-frequency patterns plus noise, in [-1, 1] like the face crops."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16] / 16.0
    freq = rng.uniform(0.5, 3.0, (n, 3, 2, 1, 1))
    base = np.sin(2 * np.pi * (freq[:, :, 0] * yy + freq[:, :, 1] * xx))
    return np.clip(base + 0.2 * rng.normal(size=base.shape), -1, 1).astype(np.float32)


class ListReader(CalibrationDataReader):
    """A reader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


class CountingFactory:
    """reader_factory that counts how often a fresh reader was asked for."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds, self.calls = feeds, 0

    def __call__(self) -> ListReader:
        self.calls += 1
        return ListReader(self.feeds)


@pytest.fixture
def conv(tmp_path: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    images = smooth_images(48)
    return conv_model(tmp_path / "conv.onnx"), [{"x": images[i:i + 8]} for i in range(0, 48, 8)]


@pytest.fixture
def matmul(tmp_path: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(2)  # windows of different length, as speech windows are
    feeds = [{"x": rng.normal(size=(4, t, 16)).astype(np.float32)} for t in (20, 33, 20, 57, 41)]
    return matmul_model(tmp_path / "matmul.onnx"), feeds


def agreement(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    ref = np.concatenate([run_model(src, f)["probs"] for f in feeds])
    got = np.concatenate([run_model(dst, f)["probs"] for f in feeds])
    return float((ref.argmax(1) == got.argmax(1)).mean())


@pytest.mark.parametrize("which", ["conv", "matmul"])
def test_fp16_keeps_float32_io_and_softmax(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    src, feeds = request.getfixturevalue(which)
    dst = make_fp16(src, tmp_path / "out" / f"{which}.fp16.onnx")
    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    producers = {o: n for n in model.graph.node for o in n.output}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    cast = producers[softmax.input[0]]  # Softmax reads float32: a Cast back from float16 feeds it
    assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT
    for feed in feeds:
        np.testing.assert_allclose(run_model(dst, feed)["probs"], run_model(src, feed)["probs"], atol=2e-3)


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile"])
def test_int8_conv_places_qdq_for_tensorrt(method: str, conv: tuple, tmp_path: Path) -> None:
    src, feeds = conv
    dst = make_int8(src, tmp_path / "conv.int8.onnx", lambda: ListReader(feeds), method=method)
    assert lint_qdq(dst) == []
    model = onnx.load(str(dst))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    users = [u for n in model.graph.node if n.op_type == "DequantizeLinear"
             for u in model.graph.node if n.output[0] in u.input]
    assert {u.op_type for u in users} <= set(QUANTIZED_OP_TYPES)
    # The skip input of the residual Add is quantized; the branch from conv2 is not, so TensorRT fuses the Add.
    residual = next(n for n in model.graph.node if n.op_type == "Add")
    assert [producers[i].op_type for i in residual.input] == ["DequantizeLinear", "Conv"]
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            assert inits[node.input[2]].dtype == np.int8 and not inits[node.input[2]].any()
            source = producers.get(node.input[0])
            assert source is None or source.op_type not in ("Conv", "Gemm")  # no output Q/DQ on weighted ops
        if node.op_type in ("Conv", "Gemm"):
            weight_dq = producers[node.input[1]]
            weight = inits[producers[weight_dq.input[0]].input[0]]  # float weight behind a Q -> DQ pair
            assert inits[weight_dq.input[1]].shape == (weight.shape[0],)  # one scale per output channel
            assert producers[node.input[0]].op_type == "DequantizeLinear"
            assert inits[node.input[2]].dtype == np.float32  # bias stays float
    assert agreement(src, dst, feeds) >= 0.9


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile"])
def test_int8_matmul_with_windows_of_different_length(method: str, matmul: tuple, tmp_path: Path) -> None:
    src, feeds = matmul
    dst = make_int8(src, tmp_path / "matmul.int8.onnx", lambda: ListReader(feeds), method=method)
    assert lint_qdq(dst) == []
    model = onnx.load(str(dst))
    producers = {o: n for n in model.graph.node for o in n.output}
    bias = next(n for n in model.graph.node if n.name == "bias")
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in bias.input)
    assert [producers[n.input[1]].op_type for n in model.graph.node if n.op_type == "MatMul"] == \
           ["DequantizeLinear", "DequantizeLinear"]
    assert agreement(src, dst, feeds) >= 0.9


def test_int8_cache_skips_calibration_and_reproduces_the_model(conv: tuple, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    src, feeds = conv
    cache = tmp_path / "cache"
    first = CountingFactory(feeds)
    with caplog.at_level(logging.INFO, logger="edge_mer_export.int8"):
        a = make_int8(src, tmp_path / "a.onnx", first, method="entropy", cache_dir=cache)
    assert first.calls == 2  # one pass to key the cache, one to calibrate
    assert "calibrated conv.onnx (entropy) on 6 feeds" in caplog.text
    assert [p.suffix for p in cache.iterdir()] == [".json"]

    caplog.clear()
    second = CountingFactory(feeds)
    with caplog.at_level(logging.INFO, logger="edge_mer_export.int8"):
        b = make_int8(src, tmp_path / "b.onnx", second, method="entropy", cache_dir=cache)
    assert second.calls == 1
    assert "calibration cache hit" in caplog.text and "calibrated" not in caplog.text
    assert a.read_bytes() == b.read_bytes()

    changed = CountingFactory([{"x": f["x"] * 0.5} for f in feeds])
    make_int8(src, tmp_path / "c.onnx", changed, method="entropy", cache_dir=cache)
    other_method = CountingFactory(feeds)
    make_int8(src, tmp_path / "d.onnx", other_method, method="minmax", cache_dir=cache)
    assert (changed.calls, other_method.calls) == (2, 2)
    assert len(list(cache.iterdir())) == 3


def test_int8_refuses_to_calibrate_without_data(conv: tuple, tmp_path: Path) -> None:
    src, _ = conv
    dst = tmp_path / "none.onnx"
    with pytest.raises(ExportError, match="conv.onnx: no calibration data: the reader yielded no feeds"):
        make_int8(src, dst, lambda: ListReader([]), method="minmax", cache_dir=tmp_path / "cache")
    assert not dst.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: {"y": f["x"]}, r"calibration feed 0 has inputs \['y'\], expected \['x'\]"),
    (lambda f: {"x": f["x"].astype(np.float64)}, "calibration feed 0 input 'x' is float64, expected float32"),
    (lambda f: {"x": np.full_like(f["x"], np.nan)}, "calibration feed 0 input 'x' has NaN or infinite values"),
])
def test_int8_refuses_malformed_feeds(mutate: Callable, message: str, conv: tuple, tmp_path: Path) -> None:
    src, feeds = conv
    with pytest.raises(ExportError, match=message):
        make_int8(src, tmp_path / "bad.onnx", lambda: ListReader([mutate(f) for f in feeds]), method="minmax")


def test_int8_refuses_a_reader_that_changes_between_passes(conv: tuple, tmp_path: Path) -> None:
    src, feeds = conv
    passes = iter([feeds, feeds[:-1]])
    with pytest.raises(ExportError, match="different data on its second pass"):
        make_int8(src, tmp_path / "x.onnx", lambda: ListReader(next(passes)), method="minmax")


def test_int8_refuses_unknown_method_and_missing_modelopt(conv: tuple, tmp_path: Path) -> None:
    src, feeds = conv
    with pytest.raises(ExportError, match="calibration method 'kl': expected one of entropy, minmax, percentile"):
        make_int8(src, tmp_path / "x.onnx", lambda: ListReader(feeds), method="kl")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="quantizer 'tensorrt': expected one of auto, ort, modelopt"):
        make_int8(src, tmp_path / "x.onnx", lambda: ListReader(feeds), quantizer="tensorrt")  # type: ignore[arg-type]
    if importlib.util.find_spec("modelopt") is None:
        with pytest.raises(ExportError, match="needs NVIDIA ModelOpt"):
            make_int8(src, tmp_path / "x.onnx", lambda: ListReader(feeds), quantizer="modelopt")
        auto = make_int8(src, tmp_path / "auto.onnx", lambda: ListReader(feeds), quantizer="auto", method="minmax")
        assert lint_qdq(auto) == []


def test_int8_output_that_fails_the_lint_is_not_written(conv: tuple, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ONNX Runtime's asymmetric defaults restored the zero points are not 0: refused, nothing written."""
    src, feeds = conv
    monkeypatch.setitem(int8.TRT_OPTIONS, "ActivationSymmetric", False)
    monkeypatch.setitem(int8.CALIBRATOR_OPTIONS, "symmetric", False)
    dst = tmp_path / "asym.onnx"
    with pytest.raises(QdqLintError, match=r"INT8 model of .*conv\.onnx: \d+ Q/DQ problem\(s\): .*expected 0"):
        make_int8(src, dst, lambda: ListReader(feeds), method="minmax")
    assert not dst.exists()


def test_stem_convs_are_the_convs_before_the_nth_residual_add(conv: tuple, tmp_path: Path) -> None:
    src, feeds = conv
    model = onnx.load(str(src))
    assert stem_convs(model, blocks=1) == ["conv1", "conv2"]
    assert stem_convs(model, blocks=2) == ["conv1", "conv2"]  # one Add only: every Conv is stem


def test_int8_keep_float_leaves_those_convs_unquantized(conv: tuple, tmp_path: Path) -> None:
    src, feeds = conv
    dst = make_int8(src, tmp_path / "conv.int8.onnx", lambda: ListReader(feeds), keep_float=["conv1"])
    assert lint_qdq(dst) == []
    model = onnx.load(str(dst))
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    # conv1 reads the raw input and its float weight; conv2 still reads DequantizeLinear outputs.
    assert by_name["conv1"].input[0] == "x" and by_name["conv1"].input[1] == "W1"
    assert producers[by_name["conv2"].input[0]].op_type == "DequantizeLinear"
    assert agreement(src, dst, feeds) >= 0.9


def shared_input_model(path: Path) -> Path:
    """[N,3,16,16]: the input feeds a Conv and, beside it, parameter-free statistics (ReduceMean, Sub)."""
    inits = _inits(np.random.default_rng(3), {"W": (3, 3, 3, 3), "B": (3,), "G": (4, 3), "GB": (4,)})
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["x"], ["mean"], name="stats_mean", axes=[1, 2, 3], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="stats_centre"),
        helper.make_node("Add", ["c", "centred"], ["s"], name="join"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G", "GB"], ["logits"], name="head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    return _save(path, nodes, "shared_input", ["N", 3, 16, 16], ["N", 4], inits)


def test_int8_unquantized_readers_of_a_quantized_input_read_it_in_float(tmp_path: Path) -> None:
    """ORT shares one Q/DQ pair among all readers of a graph input; ReduceMean and Sub read the float input."""
    src = shared_input_model(tmp_path / "shared.onnx")
    images = smooth_images(24, seed=4)
    feeds = [{"x": images[i:i + 8]} for i in range(0, 24, 8)]
    dst = make_int8(src, tmp_path / "shared.int8.onnx", lambda: ListReader(feeds))
    assert lint_qdq(dst) == []
    model = onnx.load(str(dst))
    producers = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    assert by_name["stats_mean"].input[0] == "x" and by_name["stats_centre"].input[0] == "x"
    assert producers[by_name["conv"].input[0]].op_type == "DequantizeLinear"
    assert agreement(src, dst, feeds) >= 0.9
