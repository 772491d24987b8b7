"""edge_mer.bench.latency: the percentile summary every report uses, and timing calls and real inference."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bench.latency import PERCENTILES, summarize, time_calls, time_infer
from edge_mer.bundle import load_bundle
from edge_mer.errors import BackendError, ConfigError

# ----------------------------------------------------------------------------- summarize


def test_summarize_known_values() -> None:
    s = summarize(np.arange(1, 101, dtype=np.float64))  # 1..100 ms
    assert s == {"p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0, "mean": 50.5, "n": 100}


@pytest.mark.parametrize("samples", [
    [3.0],
    [1.0, 2.0],
    [0.25, 0.5, 4.0, 100.0, 0.75],
    list(np.random.default_rng(0).lognormal(0.0, 1.0, 1000)),
    np.random.default_rng(1).exponential(2.0, 37),
])
def test_summarize_equals_numpy(samples) -> None:
    values = np.asarray(samples, dtype=np.float64)
    s = summarize(samples)
    expected = dict(zip(("p50", "p95", "p99"), np.percentile(values, PERCENTILES)))
    for key, value in expected.items():
        assert s[key] == round(float(value), 4), key
    assert s["max"] == round(float(values.max()), 4)
    assert s["mean"] == round(float(values.mean()), 4)
    assert s["n"] == values.size and isinstance(s["n"], int)
    assert s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert all(type(s[k]) is float for k in ("p50", "p95", "p99", "max", "mean"))  # JSON-ready, not numpy


def test_summarize_empty() -> None:
    assert summarize([]) == {"n": 0}
    assert summarize(np.array([], dtype=np.float64)) == {"n": 0}


def test_percentiles_are_median_and_tails() -> None:
    assert PERCENTILES == (50, 95, 99)


# ----------------------------------------------------------------------------- time_calls


def test_time_calls_makes_warmup_plus_iterations_calls_and_times_only_the_iterations() -> None:
    calls: list[int] = []
    samples = time_calls(lambda: calls.append(1), warmup=3, iterations=12)
    assert len(calls) == 15
    assert samples.shape == (12,) and samples.dtype == np.float64
    assert (samples >= 0).all()
    calls.clear()
    assert time_calls(lambda: calls.append(1), warmup=0, iterations=1).shape == (1,)
    assert len(calls) == 1


def test_time_calls_reports_milliseconds() -> None:
    samples = time_calls(lambda: time.sleep(0.002), warmup=0, iterations=3)
    assert (samples >= 2.0).all()  # a 2 ms sleep lasts at least 2 (ms), not 0.002 (s)


def test_time_calls_lets_the_calls_exceptions_through() -> None:
    def fails() -> None:
        raise RuntimeError("inference failed")

    with pytest.raises(RuntimeError, match="inference failed"):
        time_calls(fails, warmup=0, iterations=5)


@pytest.mark.parametrize("warmup, iterations, message", [
    (-1, 10, "warmup must be an int >= 0, got -1"),
    (1.5, 10, "warmup must be an int >= 0, got 1.5"),
    (0, 0, "iterations must be an int >= 1, got 0"),
    (0, -5, "iterations must be an int >= 1, got -5"),
    (0, 2.0, "iterations must be an int >= 1, got 2.0"),
    (0, "10", "iterations must be an int >= 1, got '10'"),
])
def test_time_calls_validation(warmup, iterations, message: str) -> None:
    calls: list[int] = []
    with pytest.raises(ConfigError, match=f"^{message}$"):
        time_calls(lambda: calls.append(1), warmup=warmup, iterations=iterations)
    assert calls == []  # refused before calling anything


# ----------------------------------------------------------------------------- time_infer on a real backend


@pytest.fixture
def tiny_backend(tiny_bundle: Path):
    """An unloaded ONNX Runtime backend for the tiny [N,1,64,64] -> [N,7] face model of conftest."""
    ref = load_bundle(tiny_bundle).model_ref("face", "fp32")
    return create_backend(ref, BackendOptions(name="onnxruntime"))


def test_time_infer_refuses_an_unloaded_backend(tiny_backend) -> None:
    feeds = {"input_1": np.zeros((1, 1, 64, 64), np.float32)}
    with pytest.raises(BackendError, match=r"onnxruntime backend for 'face' is not loaded; call load\(\) first"):
        time_infer(tiny_backend, feeds, warmup=1, iterations=5)
    tiny_backend.load()
    tiny_backend.close()  # closed again: as unloaded as before
    with pytest.raises(BackendError, match="is not loaded"):
        time_infer(tiny_backend, feeds, warmup=1, iterations=5)


def test_time_infer_times_real_inference(tiny_backend) -> None:
    feeds = {"input_1": np.random.default_rng(0).normal(size=(4, 1, 64, 64)).astype(np.float32)}
    with tiny_backend.load() as backend:
        probs = backend.infer(feeds)["probs"]
        assert probs.shape == (4, 7)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # it really ran the model
        samples = time_infer(backend, feeds, warmup=2, iterations=25)
        assert samples.shape == (25,) and (samples > 0).all()
        s = summarize(samples)
        assert s["n"] == 25 and s["p50"] <= s["p99"] <= s["max"]
        assert time_infer(backend, feeds).shape == (50,)  # defaults: 10 warm-up calls, 50 timed


def test_time_infer_validation_comes_from_time_calls(tiny_backend) -> None:
    with tiny_backend.load() as backend:
        with pytest.raises(ConfigError, match="iterations must be an int >= 1, got 0"):
            time_infer(backend, {"input_1": np.zeros((1, 1, 64, 64), np.float32)}, iterations=0)
