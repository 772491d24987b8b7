from __future__ import annotations

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer.pipeline.buffers import FrameBuffer, SampleBuffer
from edge_mer.sources.base import Chunk


def _push(buf: SampleBuffer, values: range, t: int = 0) -> None:
    buf.push(Chunk(t, np.array(values, dtype=np.float64)))


def test_sample_window_is_the_newest_samples_across_the_wrap() -> None:
    buf = SampleBuffer(rate=10, channels=1, capacity_s=1.0)  # 10 samples
    assert buf.window(0.4) is None  # filling
    _push(buf, range(0, 7))
    _push(buf, range(7, 13))
    np.testing.assert_array_equal(buf.window(0.4)[0], [9, 10, 11, 12])
    np.testing.assert_array_equal(buf.window(1.0)[0], np.arange(3, 13))


def test_a_chunk_larger_than_the_ring_keeps_its_layout() -> None:
    buf = SampleBuffer(rate=10, channels=1, capacity_s=1.0)
    _push(buf, range(0, 3))
    _push(buf, range(3, 15))  # 12 samples into a 10-sample ring
    np.testing.assert_array_equal(buf.window(0.4)[0], [11, 12, 13, 14])
    _push(buf, range(15, 16))
    np.testing.assert_array_equal(buf.window(0.4)[0], [12, 13, 14, 15])


def test_multichannel_and_errors() -> None:
    buf = SampleBuffer(rate=4, channels=2, capacity_s=2.0)
    buf.push(Chunk(5, np.arange(10, dtype=np.float64).reshape(2, 5)))
    assert buf.newest_t_ns == 5 and buf.window(1.0).shape == (2, 4)
    with pytest.raises(InputError, match="chunk has 3 channels, buffer expects 2"):
        buf.push(Chunk(6, np.zeros((3, 2))))
    with pytest.raises(InputError, match="exceeds the buffer"):
        buf.window(5.0)


def test_frame_buffer_keeps_the_newest_frames_and_their_time() -> None:
    buf = FrameBuffer(capacity=2)
    assert buf.newest_t_ns is None
    for i in range(10):
        buf.push(Chunk(i * 100, np.full((2, 2), i, np.uint8)))
    assert buf.newest_t_ns == 900 and buf.pushed == 10
