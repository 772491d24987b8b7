"""EntropyCalibrator on a real GPU: an INT8 engine is built from a tiny model and the cache file is written.

Needs TensorRT 10.x and pycuda (skipped elsewhere, and on TensorRT 11, which has no implicit calibrators).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from conftest import make_face_model
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer_calibration.face import read_face_folder
from edge_mer_calibration.ort_reader import feeds_from_samples
from edge_mer_calibration.trt_support import implicit_calibration_supported

pytestmark = [pytest.mark.trt, pytest.mark.shared]


def _feeds(shared_dir: Path, n: int) -> list:
    params = load_bundle(default_bundle_path()).encoder("face").preprocessing
    samples = itertools.islice(read_face_folder(shared_dir / "data" / "face" / "ckplus48", params), n)
    return feeds_from_samples(samples, "input_1", batch_size=1)


def test_int8_engine_build_writes_the_calibration_cache(tmp_path: Path, shared_dir: Path) -> None:
    import tensorrt as trt

    if not implicit_calibration_supported(trt.__version__):
        pytest.skip(f"TensorRT {trt.__version__} has no implicit INT8 calibrators")
    from edge_mer_calibration.trt_calibrator import EntropyCalibrator, write_calibration_cache

    model = make_face_model(tmp_path / "face.onnx")
    feeds = _feeds(shared_dir, 20)
    cache = write_calibration_cache(model, feeds, tmp_path / "face.int8.calib", batch_size=4)
    assert cache.is_file() and cache.stat().st_size > 0
    assert b"input_1" in cache.read_bytes() or b"probs" in cache.read_bytes()

    with EntropyCalibrator(feeds, cache, batch_size=8) as calibrator:
        assert calibrator.get_batch_size() == 8 and len(calibrator.batches) == 2  # 20 samples: 4 dropped
        assert calibrator.read_calibration_cache() == cache.read_bytes()
        pointers = [calibrator.get_batch(["input_1"]) for _ in range(3)]
        assert all(isinstance(p, int) and p > 0 for p in pointers[0]) and pointers[0] == pointers[1]
        assert pointers[2] is None
