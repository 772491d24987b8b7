"""StageTimes: bounded per-stage samples in milliseconds, recorded by hand or around a ``with`` block."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer.timing import StageTimes


def test_add_keeps_samples_per_stage_in_order_and_stages_sorts_the_names() -> None:
    times = StageTimes()
    times.add("fusion", 0.5)
    times.add("face.detect", 2.0)
    times.add("fusion", 0.25)
    stages = times.stages()
    assert list(stages) == ["face.detect", "fusion"]
    assert stages["fusion"].dtype == np.float64
    np.testing.assert_array_equal(stages["fusion"], [0.5, 0.25])
    np.testing.assert_array_equal(stages["face.detect"], [2.0])


def test_stages_is_a_copy() -> None:
    times = StageTimes()
    times.add("tick", 1.0)
    snapshot = times.stages()
    snapshot["tick"][0] = 99.0
    times.add("tick", 2.0)
    np.testing.assert_array_equal(snapshot["tick"], [99.0])  # later adds do not reach an earlier snapshot
    np.testing.assert_array_equal(times.stages()["tick"], [1.0, 2.0])  # nor did writing into the snapshot


def test_empty_and_clear() -> None:
    times = StageTimes()
    assert times.stages() == {}
    times.add("a", 1.0)
    times.add("b", 2.0)
    times.clear()
    assert times.stages() == {}
    times.add("a", 3.0)  # usable again after a clear (e.g. after the bench warm-up)
    np.testing.assert_array_equal(times.stages()["a"], [3.0])


def test_capacity_keeps_the_newest_samples_of_each_stage() -> None:
    times = StageTimes(capacity=3)
    for value in range(10):
        times.add("decode.face", float(value))
    times.add("fusion", 7.0)
    stages = times.stages()
    np.testing.assert_array_equal(stages["decode.face"], [7.0, 8.0, 9.0])
    np.testing.assert_array_equal(stages["fusion"], [7.0])  # the bound is per stage
    one = StageTimes(capacity=1)
    one.add("x", 1.0)
    one.add("x", 2.0)
    np.testing.assert_array_equal(one.stages()["x"], [2.0])


@pytest.mark.parametrize("capacity", [0, -1])
def test_bad_capacity_is_an_input_error(capacity: int) -> None:
    with pytest.raises(InputError, match=f"capacity must be >= 1, got {capacity}"):
        StageTimes(capacity=capacity)


def test_time_records_the_wall_time_of_the_body_in_ms() -> None:
    times = StageTimes()
    started = time.perf_counter()
    with times.time("speech.logmel"):
        time.sleep(0.02)
    outer_ms = (time.perf_counter() - started) * 1e3
    samples = times.stages()["speech.logmel"]
    assert samples.shape == (1,)
    # In milliseconds (not seconds or ns): at least the 20 ms slept, at most the time measured around it.
    assert 20.0 <= samples[0] <= outer_ms


def test_time_records_even_when_the_body_raises() -> None:
    times = StageTimes()
    with pytest.raises(ValueError, match="boom"):
        with times.time("eeg.features"):
            time.sleep(0.005)
            raise ValueError("boom")
    samples = times.stages()["eeg.features"]
    assert samples.shape == (1,) and samples[0] >= 5.0


def test_adds_from_several_threads_are_all_kept() -> None:
    times = StageTimes()

    def work(stage: str) -> None:
        for i in range(2000):
            times.add(stage, float(i))
            times.add("shared", 1.0)

    threads = [threading.Thread(target=work, args=(f"s{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stages = times.stages()
    assert len(stages["shared"]) == 8000
    for k in range(4):
        np.testing.assert_array_equal(stages[f"s{k}"], np.arange(2000.0))
