"""Face-detector calibration and evaluation data: video frames, letterboxed as the runtime does.

Frames come from the daemon's :class:`VideoReplaySource` (every ``every_n``-th,
at most ``limit``); :func:`detector_feeds` turns them into the detector
network's feed dicts with the runtime's own
:class:`~edge_mer.preprocess.blazeface.LetterboxBuffer`, so INT8 scales are
fitted to exactly what the detector sees on the device.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_mer.errors import InputError, SensorError
from edge_mer.preprocess.blazeface import BlazeFaceDecoding, LetterboxBuffer
from edge_mer.sessions.format import Session
from edge_mer.sessions.replay import VideoReplaySource

log = logging.getLogger(__name__)

#: Frames one reader call may hold (640x480 BGR: ~0.9 MB each).
MAX_FRAMES = 5000


def read_frames(path: str | Path, every_n: int = 10, limit: int = 300) -> list[np.ndarray]:
    """Every ``every_n``-th frame of the video at ``path``, at most ``limit`` (1..MAX_FRAMES)."""
    path = Path(path)
    if isinstance(every_n, bool) or not isinstance(every_n, int) or every_n < 1:
        raise InputError(f"every_n must be an integer >= 1, got {every_n!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_FRAMES:
        raise InputError(f"limit must be an integer in 1..{MAX_FRAMES}, got {limit!r}")
    if not path.is_file():
        raise InputError(f"video {path} does not exist; expected a video file")
    frames: list[np.ndarray] = []
    try:
        with VideoReplaySource(Session(root=path.parent, video=path.name), pace=False) as source:
            for chunk in source:
                if chunk.meta["frame_index"] % every_n == 0:
                    frames.append(chunk.data)
                    if len(frames) >= limit:
                        break
    except SensorError as exc:
        raise InputError(f"video {path}: {exc}") from None
    if not frames:
        raise InputError(f"video {path} has no readable frames")
    log.info("%s: %d frames (every %d)", path, len(frames), every_n)
    return frames


def detector_feeds(frames: Sequence[np.ndarray], input_name: str, decoding: BlazeFaceDecoding,
                   layout: str) -> list[dict[str, np.ndarray]]:
    """One feed dict per frame (batch 1), letterboxed into the detector's input."""
    buffer = LetterboxBuffer(decoding.input_size, 1, layout)
    feeds = []
    for frame in frames:
        buffer.fill(frame)
        feeds.append({input_name: buffer.batch(1).copy()})  # NHWC batches reuse one array
    return feeds

