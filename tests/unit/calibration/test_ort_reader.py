"""FeedsReader with ONNX Runtime's calibrators, feeds_from_samples and feeds_digest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

from conftest import make_face_model
from edge_mer.errors import InputError
from edge_mer_calibration.ort_reader import FeedsReader, feeds_digest, feeds_from_samples
from edge_mer_calibration.samples import Sample


def _faces(n: int) -> list[Sample]:
    """Face-shaped samples [1, 64, 64] in the model's (p/255 - 0.5) * 2 range, from a fixed gradient."""
    ramp = np.linspace(-1.0, 1.0, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    return [Sample(np.ascontiguousarray(np.roll(ramp, 97 * i) * (0.5 + i / (2 * n))), "happy", f"f{i}")
            for i in range(n)]


def test_reader_serves_every_feed_then_none_and_rewinds() -> None:
    feeds = feeds_from_samples(_faces(5), "input_1", batch_size=2)
    assert [f["input_1"].shape for f in feeds] == [(2, 1, 64, 64), (2, 1, 64, 64), (1, 1, 64, 64)]
    reader = FeedsReader(feeds)
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 3
    served = list(iter(reader.get_next, None))
    assert len(served) == 3 and all(a is b or np.array_equal(a["input_1"], b["input_1"])
                                    for a, b in zip(served, feeds))
    assert reader.get_next() is None
    reader.rewind()
    assert np.array_equal(reader.get_next()["input_1"], feeds[0]["input_1"])
    reader.set_range(1, 10)
    assert len(reader) == 2 and np.array_equal(reader.get_next()["input_1"], feeds[1]["input_1"])


def test_reader_refuses_empty_or_inconsistent_feeds() -> None:
    with pytest.raises(InputError, match="no calibration feeds"):
        FeedsReader([])
    with pytest.raises(InputError, match="feed 1 names inputs \\['b'\\], feed 0 names \\['a'\\]"):
        FeedsReader([{"a": np.zeros(1)}, {"b": np.zeros(1)}])
    with pytest.raises(InputError, match="feed 0: entry 'a' is not a str name with a numpy array"):
        FeedsReader([{"a": [1.0]}])
    with pytest.raises(InputError, match="calibration range \\[3, 3\\) is empty"):
        FeedsReader([{"a": np.zeros(1)}]).set_range(3, 3)


@pytest.mark.parametrize("method", [CalibrationMethod.MinMax, CalibrationMethod.Entropy])
def test_onnxruntime_calibrator_collects_ranges_from_the_reader(tmp_path: Path, method: CalibrationMethod) -> None:
    model = make_face_model(tmp_path / "face.onnx")
    samples = _faces(6)
    calibrator = create_calibrator(model, augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   calibrate_method=method)
    reader = FeedsReader(feeds_from_samples(samples, "input_1", batch_size=1))
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    low, high = (float(np.asarray(v).reshape(-1)[0]) for v in ranges["input_1"].range_value)
    lowest = min(float(s.array.min()) for s in samples)
    highest = max(float(s.array.max()) for s in samples)
    if method == CalibrationMethod.MinMax:  # min/max over every served feed, 0 included
        assert low == pytest.approx(min(lowest, 0.0)) and high == pytest.approx(max(highest, 0.0))
    else:
        assert low < 0 < high and high <= max(abs(lowest), abs(highest)) + 1e-6
    assert "probs" in ranges


def test_digest_covers_names_shapes_dtypes_and_every_value() -> None:
    feeds = feeds_from_samples(_faces(3), "input_1")
    base = feeds_digest(feeds)
    assert base == feeds_digest([{k: v.copy() for k, v in f.items()} for f in feeds])
    changed = [{k: v.copy() for k, v in f.items()} for f in feeds]
    changed[2]["input_1"][0, 0, 31, 7] += np.float32(1e-3)
    assert feeds_digest(changed) != base
    assert feeds_digest([{"other": f["input_1"]} for f in feeds]) != base
    assert feeds_digest([{"input_1": f["input_1"].astype(np.float64)} for f in feeds]) != base
    assert feeds_digest([{"input_1": f["input_1"].reshape(1, 64, 64, 1)} for f in feeds]) != base
    assert feeds_digest(feeds[:2]) != base and len(base) == 64
