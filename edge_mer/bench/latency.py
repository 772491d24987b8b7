"""Timing calls and summarising latency samples (the percentiles every benchmark report uses)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.config import require
from edge_mer.errors import BackendError

#: The percentiles reported for every latency: median, tail and worst case.
PERCENTILES = (50, 95, 99)


def summarize(samples_ms: np.ndarray | list[float]) -> dict[str, float | int]:
    """``p50``, ``p95``, ``p99``, ``max``, ``mean`` (ms) and the count ``n`` of ``samples_ms``.

    Percentiles interpolate linearly between order statistics (numpy's
    default), so with few samples p99 lies close to the maximum. An empty
    input gives ``{"n": 0}``.
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(values, PERCENTILES)
    return {"p50": round(float(p50), 4), "p95": round(float(p95), 4), "p99": round(float(p99), 4),
            "max": round(float(values.max()), 4), "mean": round(float(values.mean()), 4), "n": int(values.size)}


def time_calls(call: Callable[[], object], *, warmup: int, iterations: int) -> np.ndarray:
    """Wall-clock milliseconds of ``iterations`` calls of ``call`` after ``warmup`` untimed ones."""
    require(isinstance(warmup, int) and warmup >= 0, f"warmup must be an int >= 0, got {warmup!r}")
    require(isinstance(iterations, int) and iterations >= 1, f"iterations must be an int >= 1, got {iterations!r}")
    for _ in range(warmup):
        call()
    samples = np.empty(iterations, dtype=np.float64)
    for i in range(iterations):
        start = time.perf_counter_ns()
        call()
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return samples


def time_infer(backend: Backend, feeds: Mapping[str, np.ndarray], *, warmup: int = 10,
               iterations: int = 50) -> np.ndarray:
    """Milliseconds of single ``backend.infer(feeds)`` calls on a loaded backend (see :func:`time_calls`)."""
    if not backend.loaded:
        raise BackendError(f"{backend.name} backend for {backend.model.name!r} is not loaded; call load() first")
    return time_calls(lambda: backend.infer(feeds), warmup=warmup, iterations=iterations)
