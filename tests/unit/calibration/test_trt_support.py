"""TensorRT implicit-calibration support by version, and the batching the calibrator serves (no TensorRT needed)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_mer.errors import BackendError, InputError
from edge_mer_calibration.trt_support import calibration_batches, implicit_calibration_supported


@pytest.mark.parametrize(("version", "supported"), [
    ("10.0.1", True), ("10.3.0.30", True), ("10.13.3.9", True), ("11.0.0", False), ("11.4.1", False),
    ("12.0", False), ("8.6.1", False), ("9.3.0", False)])
def test_implicit_calibrators_exist_in_tensorrt_10_only(version: str, supported: bool) -> None:
    assert implicit_calibration_supported(version) is supported


def test_an_unreadable_version_is_refused() -> None:
    with pytest.raises(BackendError, match="cannot read TensorRT version 'ten'"):
        implicit_calibration_supported("ten")


def _feeds(sizes: list[int], name: str = "x", shape: tuple[int, ...] = (1, 4, 4)) -> list[dict[str, np.ndarray]]:
    start, feeds = 0, []
    for n in sizes:
        count = n * int(np.prod(shape))
        feeds.append({name: np.arange(start, start + count, dtype=np.float64).reshape((n, *shape))})
        start += count
    return feeds


def test_feeds_are_recut_into_full_contiguous_float32_batches_in_order(caplog: pytest.LogCaptureFixture) -> None:
    feeds = _feeds([1, 3, 2, 1, 4])  # 11 samples
    with caplog.at_level(logging.INFO):
        batches = calibration_batches(feeds, 4)
    assert len(batches) == 2 and "last 3 of 11 samples dropped" in caplog.text
    everything = np.concatenate([f["x"] for f in feeds])
    for i, batch in enumerate(batches):
        assert list(batch) == ["x"]
        x = batch["x"]
        assert x.shape == (4, 1, 4, 4) and x.dtype == np.float32 and x.flags.c_contiguous
        np.testing.assert_array_equal(x, everything[4 * i:4 * (i + 1)].astype(np.float32))
    assert [b["x"].shape[0] for b in calibration_batches(feeds, 1)] == [1] * 11


def test_several_inputs_stay_aligned() -> None:
    feeds = [{"a": a["x"], "b": b["x"]} for a, b in zip(_feeds([2, 2]), _feeds([2, 2], shape=(3,)))]
    batches = calibration_batches(feeds, 3)
    assert len(batches) == 1 and set(batches[0]) == {"a", "b"}
    assert batches[0]["a"].shape == (3, 1, 4, 4) and batches[0]["b"].shape == (3, 3)


def test_bad_feeds_are_refused_with_the_reason() -> None:
    with pytest.raises(InputError, match="no calibration feeds"):
        calibration_batches([], 1)
    with pytest.raises(InputError, match="batch_size must be an integer >= 1, got 0"):
        calibration_batches(_feeds([2]), 0)
    with pytest.raises(InputError, match="3 calibration samples are fewer than one batch of 8"):
        calibration_batches(_feeds([3]), 8)
    with pytest.raises(InputError, match="feed 1 names inputs \\['y'\\], feed 0 names \\['x'\\]"):
        calibration_batches(_feeds([1]) + _feeds([1], name="y"), 1)
    with pytest.raises(InputError, match="feed 1: x has shape \\[1, 1, 5, 5\\]"):
        calibration_batches(_feeds([1]) + _feeds([1], shape=(1, 5, 5)), 1)
    with pytest.raises(InputError, match="x is int64; expected floating point data"):
        calibration_batches([{"x": np.zeros((2, 3), dtype=np.int64)}], 1)
