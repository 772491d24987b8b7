"""Reading the frames of a video file with OpenCV, skipping undecodable ones.

Shared by the live :class:`~edge_mer.sources.camera.CameraSource` (when its
device is a file) and the session replay's
:class:`~edge_mer.sessions.replay.VideoReplaySource`:

* :func:`read_capture`: one ``cap.read()``, an OpenCV exception turned into a
  one-line :class:`~edge_mer.errors.SensorError`;
* :class:`FileFrames`: the decodable frames of an open file with their index,
  a corrupt stretch skipped so that the frames after it keep their index;
* :func:`cv_error_line`: the first line of a (multi-line) OpenCV error.
"""
from __future__ import annotations

import logging
import math

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.errors import SensorError

log = logging.getLogger(__name__)

MAX_BAD_FRAMES = 250  # consecutive undecodable frames after which a video file counts as ended


def cv_error_line(exc: BaseException) -> str:
    """The first line of an OpenCV error (they span several lines), at most 160 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read_capture(cap: cv2.VideoCapture, name: str) -> tuple[bool, np.ndarray | None]:
    """``cap.read()``, with an OpenCV exception turned into a one-line SensorError naming ``name``."""
    try:
        ok, image = cap.read()
    except cv2.error as exc:
        raise SensorError(f"{name}: OpenCV failed to read a frame ({cv_error_line(exc)})") from None
    return bool(ok) and image is not None, image


class FileFrames:
    """The decodable frames of an open video file, in order, skipping undecodable ones.

    :meth:`next` gives ``(index, image)`` or None at the end. A failed read
    before the end is a bad frame, skipped and counted as one frame (OpenCV
    consumes one packet per failed read), so that the frames after a corrupt
    stretch keep their index. The end is a failed read once more reads than
    the container's frame count were made or, for files without a count (a
    recording that was killed), after ``max_bad`` failed reads in a row.
    """

    def __init__(self, cap: cv2.VideoCapture, name: str, max_bad: int = MAX_BAD_FRAMES) -> None:
        self.cap, self.name, self.max_bad = cap, name, max_bad
        try:
            count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        except cv2.error:
            count = 0.0
        self.count = int(count) if math.isfinite(count) and 0 < count < 2**40 else 0
        self.reads = 0  # reads so far, good and failed
        self.index = -1  # index of the last frame returned
        self.skipped = 0

    def next(self) -> tuple[int, np.ndarray] | None:
        """The next decodable frame and its index, or None at the end of the file."""
        failures = 0
        while True:
            ok, image = read_capture(self.cap, self.name)
            self.reads += 1
            if ok:
                if failures:
                    log.warning("%s: skipped %d undecodable frame(s) before frame %d", self.name, failures,
                                self.index + 1 + failures)
                self.index += 1 + failures
                self.skipped += failures
                return self.index, image  # type: ignore[return-value]
            failures += 1
            if self.count and self.reads > self.count:
                return None
            if failures >= self.max_bad:
                if self.count:  # fewer frames than the container says: cut short, or corrupt to the end
                    log.warning("%s: %d undecodable frames in a row after frame %d of %d; taking it as the end",
                                self.name, failures, self.index, self.count)
                return None
