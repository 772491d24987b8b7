"""Build, run and cache a real TensorRT engine (needs TensorRT >= 10, pycuda and a CUDA GPU)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_mer.backends.base import ModelFile, ModelRef, TensorSpec
from edge_mer.backends.options import BackendOptions, TrtOptions
from edge_mer.errors import InputError

pytestmark = pytest.mark.trt

IN_DIM, OUT_DIM = 16, 8


def _tiny_model(path: Path) -> ModelFile:
    """MatMul + Softmax with a dynamic batch axis named N."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((0.25 * rng.standard_normal((IN_DIM, OUT_DIM))).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN_DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT_DIM])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime and TensorRT parsers of the last few years
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return ModelFile(path, hashlib.sha256(path.read_bytes()).hexdigest())


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def _backend(model_file: ModelFile, cache_dir: Path, precision: str = "fp32", file: ModelFile | None = None):
    from edge_mer.backends.tensorrt import TensorRTBackend

    ref = ModelRef("tiny", precision, {"fp32": model_file, precision: file or model_file})
    options = BackendOptions(name="tensorrt", tensorrt=TrtOptions(cache_dir=cache_dir, opt_batch=2, max_batch=4,
                                                                  workspace_mib=256))
    return TensorRTBackend(ref, options)


@pytest.fixture()
def tiny(tmp_path: Path) -> ModelFile:
    return _tiny_model(tmp_path / "tiny.onnx")


def test_build_run_and_engine_cache(tiny: ModelFile, tmp_path: Path) -> None:
    cache_dir = tmp_path / "engines"
    x = (0.5 * np.random.default_rng(1).standard_normal((3, IN_DIM))).astype(np.float32)
    expected = _reference(tiny.path, x)

    with _backend(tiny, cache_dir) as first:
        assert first.input_specs == (TensorSpec("x", ("N", IN_DIM), "float32"),)
        assert first.output_specs == (TensorSpec("y", ("N", OUT_DIM), "float32"),)
        assert first.engine_from_cache is False
        got = first.infer({"x": x})["y"]
        np.testing.assert_allclose(got, expected, atol=1e-3)
        # A different batch size in the profile reuses the grown buffers correctly.
        np.testing.assert_allclose(first.infer({"x": x[:1]})["y"], expected[:1], atol=1e-3)
        engine_file = first.engine_path
    assert engine_file is not None and engine_file.is_file()
    assert any(p.name.startswith("timing-") for p in cache_dir.iterdir())

    with _backend(tiny, cache_dir) as second:
        assert second.engine_from_cache is True
        assert second.engine_path == engine_file
        np.testing.assert_allclose(second.infer({"x": x})["y"], expected, atol=1e-3)


def test_batch_outside_profile_is_an_input_error(tiny: ModelFile, tmp_path: Path) -> None:
    with _backend(tiny, tmp_path / "engines") as backend:
        with pytest.raises(InputError, match="outside the engine profile"):
            backend.infer({"x": np.zeros((5, IN_DIM), np.float32)})


def test_corrupt_cached_engine_is_rebuilt(tiny: ModelFile, tmp_path: Path) -> None:
    cache_dir = tmp_path / "engines"
    with _backend(tiny, cache_dir) as backend:
        engine_file = backend.engine_path
    assert engine_file is not None
    engine_file.write_bytes(engine_file.read_bytes()[:100])
    with _backend(tiny, cache_dir) as backend:
        assert backend.engine_from_cache is False
        assert backend.infer({"x": np.zeros((1, IN_DIM), np.float32)})["y"].shape == (1, OUT_DIM)


def test_fp16_is_built_strongly_typed_from_the_fp16_export(tiny: ModelFile, tmp_path: Path) -> None:
    from edge_mer_export.fp16 import make_fp16

    half = tmp_path / "tiny.fp16.onnx"
    make_fp16(tiny.path, half)
    half_file = ModelFile(half, hashlib.sha256(half.read_bytes()).hexdigest())
    x = (0.5 * np.random.default_rng(2).standard_normal((2, IN_DIM))).astype(np.float32)
    with _backend(tiny, tmp_path / "engines", precision="fp16", file=half_file) as backend:
        assert backend.plan is not None and backend.plan.onnx_key == "fp16"
        # The fp16 export keeps float32 inputs and outputs, so callers feed and read float32 as before.
        assert backend.input_specs[0].dtype == "float32" and backend.output_specs[0].dtype == "float32"
        np.testing.assert_allclose(backend.infer({"x": x})["y"], _reference(tiny.path, x), atol=1e-2)