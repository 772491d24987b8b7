"""Per-modality ring buffers: bounded, newest wins, read as windows on the daemon clock.

Source threads push chunks; the scheduler reads windows ending at a tick.
Both sides hold the buffer's lock only for a copy, so a slow encoder never
stalls a sensor callback.
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

from edge_mer.errors import InputError
from edge_mer.sources.base import Chunk


class FrameBuffer:
    """The newest video frames with their times (at most ``capacity`` frames).

    Face frames are processed as they arrive (:class:`~edge_mer.pipeline.runners.FaceRunner`),
    so only the newest frame's time is read back: it tells when the camera last delivered.
    """

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise InputError(f"frame buffer capacity must be >= 1, got {capacity}")
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.pushed = 0

    def push(self, chunk: Chunk) -> None:
        with self._lock:
            self._frames.append((chunk.t_ns, chunk.data))
            self.pushed += 1

    @property
    def newest_t_ns(self) -> int | None:
        with self._lock:
            return self._frames[-1][0] if self._frames else None


class SampleBuffer:
    """A ring of the last ``capacity_s`` seconds of samples, ``[channels, n]``, with the newest sample's time."""

    def __init__(self, rate: float, channels: int, capacity_s: float) -> None:
        if rate <= 0 or channels < 1 or capacity_s <= 0:
            raise InputError(f"sample buffer needs rate > 0, channels >= 1, capacity > 0; got {rate}, {channels}, "
                             f"{capacity_s}")
        self.rate = float(rate)
        self.channels = channels
        self._data = np.zeros((channels, max(1, int(np.ceil(capacity_s * rate)))), dtype=np.float64)
        self._lock = threading.Lock()
        self._written = 0
        self._newest_t_ns: int | None = None

    @property
    def capacity(self) -> int:
        return self._data.shape[1]

    @property
    def newest_t_ns(self) -> int | None:
        with self._lock:
            return self._newest_t_ns

    @property
    def written(self) -> int:
        with self._lock:
            return self._written

    def push(self, chunk: Chunk) -> None:
        """Append a chunk of ``[n]`` (one channel) or ``[channels, n]`` samples."""
        data = chunk.data if chunk.data.ndim == 2 else chunk.data.reshape(1, -1)
        if data.shape[0] != self.channels:
            raise InputError(f"chunk has {data.shape[0]} channels, buffer expects {self.channels}")
        n = data.shape[1]
        if n == 0:
            return
        with self._lock:
            if n >= self.capacity:
                # Keep the ring's layout: the newest sample must end at position written % capacity.
                self._written += n
                self._data[:] = np.roll(data[:, -self.capacity:], self._written % self.capacity, axis=1)
            else:
                pos = self._written % self.capacity
                first = min(n, self.capacity - pos)
                self._data[:, pos:pos + first] = data[:, :first]
                self._data[:, :n - first] = data[:, first:]
                self._written += n
            self._newest_t_ns = chunk.t_ns

    def window(self, window_s: float) -> np.ndarray | None:
        """The newest ``window_s`` seconds as a new ``[channels, n]`` array, or None while filling."""
        n = int(round(window_s * self.rate))
        if n > self.capacity:
            raise InputError(f"window of {window_s} s exceeds the buffer's {self.capacity / self.rate:.1f} s")
        with self._lock:
            if self._written < n or n == 0:
                return None
            end = self._written % self.capacity
            if end >= n:
                return self._data[:, end - n:end].copy()
            return np.concatenate([self._data[:, self.capacity - (n - end):], self._data[:, :end]], axis=1)
