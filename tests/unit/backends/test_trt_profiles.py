"""Optimisation-profile shapes and ONNX axis names for the TensorRT backend."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edge_mer.backends.base import TensorSpec
from edge_mer.backends.options import TrtOptions
from edge_mer.backends.tensorrt.profiles import ShapeRange, onnx_io_specs, profile_shapes, with_symbols
from edge_mer.errors import BackendError

FACE = TensorSpec("face", ("N", 1, 64, 64), "float32")
AUDIO = TensorSpec("mel", ("N", 1, 64, "T"), "float32")


def test_face_spec_batch_range() -> None:
    (rng,) = profile_shapes([FACE], TrtOptions(opt_batch=4, max_batch=16))
    assert rng == ShapeRange("face", (1, 1, 64, 64), (4, 1, 64, 64), (16, 1, 64, 64))
    assert rng.dynamic


def test_audio_spec_uses_dynamic_dims_for_frames() -> None:
    options = TrtOptions(opt_batch=2, max_batch=8, dynamic_dims={"T": (98, 198, 998)})
    face, mel = profile_shapes([FACE, AUDIO], options)
    assert face.name == "face"
    assert mel == ShapeRange("mel", (1, 1, 64, 98), (2, 1, 64, 198), (8, 1, 64, 998))


def test_every_batch_symbol_counts_as_batch() -> None:
    specs = [TensorSpec("a", ("batch", 3), "float32"), TensorSpec("b", ("batch_size", 5), "float32")]
    a, b = profile_shapes(specs, TrtOptions(max_batch=2))
    assert (a.min, a.opt, a.max) == ((1, 3), (1, 3), (2, 3))
    assert (b.min, b.max) == ((1, 5), (2, 5))


def test_dynamic_dims_override_batch_default() -> None:
    (rng,) = profile_shapes([FACE], TrtOptions(dynamic_dims={"N": (2, 3, 5)}))
    assert (rng.min[0], rng.opt[0], rng.max[0]) == (2, 3, 5)


def test_fed_ranges_come_before_the_batch_default() -> None:
    fed = {"N": (1, 1, 4), "T": (101, 201, 3002)}
    face, mel = profile_shapes([FACE, AUDIO], TrtOptions(), fed)
    assert (face.min[0], face.opt[0], face.max[0]) == (1, 1, 4)
    assert (mel.min, mel.opt, mel.max) == ((1, 1, 64, 101), (1, 1, 64, 201), (4, 1, 64, 3002))


def test_config_narrows_a_fed_range() -> None:
    fed = {"N": (1, 1, 1), "T": (101, 201, 3002)}
    (mel,) = profile_shapes([AUDIO], TrtOptions(dynamic_dims={"T": (150, 201, 401)}), fed)
    assert (mel.min[3], mel.opt[3], mel.max[3]) == (150, 201, 401)


def test_config_range_that_leaves_out_what_the_run_feeds_is_refused() -> None:
    fed = {"N": (1, 1, 1), "T": (101, 2001, 3002)}
    with pytest.raises(BackendError) as info:
        profile_shapes([AUDIO], TrtOptions(dynamic_dims={"T": (101, 201, 401)}), fed)
    message = str(info.value)
    assert "dynamic_dims.T = [101, 201, 401] leaves out the size 2001 this run feeds" in message
    assert "derived range [101, 2001, 3002]" in message and "\n" not in message


def test_static_spec_gives_equal_shapes() -> None:
    (rng,) = profile_shapes([TensorSpec("eeg", (1, 8, 256), "float32")], TrtOptions())
    assert rng.min == rng.opt == rng.max == (1, 8, 256)
    assert not rng.dynamic


def test_symbol_without_range_names_input_axis_symbol_and_option() -> None:
    with pytest.raises(BackendError) as info:
        profile_shapes([FACE, AUDIO], TrtOptions())
    message = str(info.value)
    assert "input 'mel' axis 3" in message
    assert "'T'" in message
    assert "dynamic_dims.T = [min, opt, max]" in message
    assert "batch_symbols" in message
    assert "\n" not in message


def test_unnamed_dynamic_axis_is_refused() -> None:
    spec = TensorSpec("x", (-1, 3), "float32")
    with pytest.raises(BackendError, match=r"input 'x' axis 0 is dynamic \(-1\) but has no name.*dynamic_dims"):
        profile_shapes([spec], TrtOptions())


def test_contains_and_describe() -> None:
    rng = ShapeRange("mel", (1, 1, 64, 98), (2, 1, 64, 198), (8, 1, 64, 998))
    assert rng.contains((8, 1, 64, 998))
    assert rng.contains([1, 1, 64, 98])
    assert not rng.contains((9, 1, 64, 198))
    assert not rng.contains((1, 1, 64, 97))
    assert not rng.contains((1, 64, 98))
    assert rng.describe() == "mel min [1, 1, 64, 98] opt [2, 1, 64, 198] max [8, 1, 64, 998]"


def test_with_symbols_names_only_dynamic_axes() -> None:
    assert with_symbols("mel", (-1, 1, 64, -1), ("N", 1, 64, "T")) == ("N", 1, 64, "T")
    # An axis TensorRT fixed stays fixed even where ONNX had a name.
    assert with_symbols("x", (4, 7), ("N", 7)) == (4, 7)
    # Unnamed dynamic axes get the onnxruntime backend's "<tensor>:<axis>" names.
    assert with_symbols("y", (-1, 7), (-1, 7)) == ("y:0", 7)
    assert with_symbols("y", (-1, 7), None) == ("y:0", 7)
    assert with_symbols("y", (7, -1), ("N",)) == (7, "y:1")


def _write_model(path: Path) -> None:
    x = helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", 1, 64, "T"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    # Old exporters list initializers among the graph inputs; they are not model inputs.
    w_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT16, ["N", None, 64, "T"])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["mel", "w"], ["scaled"]), helper.make_node("Cast", ["scaled"], ["out"], to=10)],
        "g", [x, w_input], [y], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnx_io_specs_reads_axis_names(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _write_model(path)
    inputs, outputs = onnx_io_specs(path)
    assert inputs == (TensorSpec("mel", ("N", 1, 64, "T"), "float32"),)
    assert outputs == (TensorSpec("out", ("N", -1, 64, "T"), "float16"),)


def test_onnx_io_specs_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot read ONNX file"):
        onnx_io_specs(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xff\xffnot onnx")
    with pytest.raises(BackendError, match="is not a valid ONNX file"):
        onnx_io_specs(bad)
