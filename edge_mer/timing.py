"""Per-stage durations of the daemon's hot path, for ``edge-mer bench`` and diagnostics.

Stages are named ``"<group>.<what>"``: ``decode.face`` (reading and decoding
one video frame), ``face.detect``, ``face.crop``, ``speech.logmel``,
``eeg.features``, ``encoder.<name>``, ``fusion``, ``tick`` (one decision's
compute) and ``decision`` (end to end: from the timestamp of the newest sample a decision
examined to the decision having been handed to every output),
``age.<modality>`` and ``tick.delay`` (see the daemon). Each stage keeps its
newest ``capacity`` samples (16384: a few MB for all stages), so a long-running
daemon stays bounded.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from edge_mer.errors import InputError


class StageTimes:
    """Bounded per-stage samples in milliseconds; appends are safe from several threads (deque.append is atomic)."""

    def __init__(self, capacity: int = 16384) -> None:
        if capacity < 1:
            raise InputError(f"stage timing capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._samples: dict[str, deque[float]] = {}

    def add(self, stage: str, ms: float) -> None:
        """Record one duration of ``stage``."""
        samples = self._samples.get(stage)
        if samples is None:
            samples = self._samples.setdefault(stage, deque(maxlen=self.capacity))
        samples.append(ms)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Record the wall time of the ``with`` body as one sample of ``stage``."""
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter_ns() - started) / 1e6)

    def clear(self) -> None:
        """Forget every sample (e.g. after a warm-up)."""
        self._samples.clear()

    def stages(self) -> dict[str, np.ndarray]:
        """A copy of every stage's samples (ms), by stage name."""
        return {name: np.fromiter(list(samples), dtype=np.float64) for name, samples in sorted(self._samples.items())}
