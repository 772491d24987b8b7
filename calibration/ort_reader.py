"""Prepared feed dicts for ONNX Runtime's static quantization, and a digest of them for cache keys.

:class:`FeedsReader` is an ``onnxruntime.quantization.CalibrationDataReader``
over a fixed list of ``{input name: array}`` dicts, so calibration (and a
second pass after :meth:`~FeedsReader.rewind`) sees exactly the arrays the
readers produced through the runtime's preprocessing.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

import edge_mer.backends.onnxrt  # noqa: F401 - first: it turns ONNX Runtime's telemetry off before onnxruntime loads
from edge_mer.errors import InputError
from onnxruntime.quantization import CalibrationDataReader  # noqa: E402
from edge_mer_calibration.samples import Sample, batched_feeds

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


def _validated(feeds: Sequence[Mapping[str, np.ndarray]]) -> list[Feed]:
    """Copies of the feed dicts (arrays C-contiguous); every feed must name the same inputs."""
    out: list[Feed] = []
    names: set[str] | None = None
    for i, feed in enumerate(feeds):
        if not isinstance(feed, Mapping) or not feed:
            raise InputError(f"feed {i}: expected a non-empty dict of input name -> numpy array, got {feed!r:.60}")
        bad = [k for k, v in feed.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
        if bad:
            raise InputError(f"feed {i}: entry {bad[0]!r} is not a str name with a numpy array")
        if names is None:
            names = set(feed)
        elif set(feed) != names:
            raise InputError(f"feed {i} names inputs {sorted(feed)}, feed 0 names {sorted(names)}")
        out.append({k: np.ascontiguousarray(v) for k, v in feed.items()})
    return out


class FeedsReader(CalibrationDataReader):
    """ONNX Runtime calibration data from prepared feed dicts (batch 1 or small batches).

    :meth:`get_next` returns the next dict or None at the end; :meth:`rewind`
    starts over; :meth:`set_range` restricts iteration to ``feeds[start:end]``
    (ONNX Runtime's strided calibration uses it).
    """

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._feeds = _validated(feeds)
        if not self._feeds:
            raise InputError("no calibration feeds; expected at least one {input name: array} dict")
        self._start, self._end = 0, len(self._feeds)
        self._next = 0

    def get_next(self) -> Feed | None:
        """The next feed dict, or None when the range is exhausted."""
        if self._next >= self._end:
            return None
        feed = self._feeds[self._next]
        self._next += 1
        return feed

    def rewind(self) -> None:
        """Start again at the first feed of the current range."""
        self._next = self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        """Iterate over ``feeds[start_index:end_index]`` from its start (clipped to the feeds)."""
        start, end = max(0, int(start_index)), min(len(self._feeds), int(end_index))
        if start >= end:
            raise InputError(f"calibration range [{start_index}, {end_index}) is empty for {len(self._feeds)} feeds")
        self._start, self._end, self._next = start, end, start

    def __len__(self) -> int:
        return self._end - self._start


def feeds_from_samples(samples: Iterable[Sample], input_name: str, batch_size: int = 1) -> list[Feed]:
    """``{input_name: batch}`` dicts of up to ``batch_size`` samples (samples of one shape per batch)."""
    return [feed for feed, _ in batched_feeds(samples, input_name, batch_size)]


def feeds_digest(feeds: Iterable[Mapping[str, np.ndarray]]) -> str:
    """sha256 hex over every feed's input names, shapes, dtypes and bytes, in order (a calibration cache key)."""
    h = hashlib.sha256()
    count = 0
    for feed in feeds:
        count += 1
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            header = json.dumps([name, array.dtype.str, list(array.shape)])
            h.update(f"{len(header)}:{header}".encode())
            h.update(array.tobytes())
        h.update(b"|")
    h.update(f"feeds={count}".encode())
    return h.hexdigest()
