"""Follow one face through consecutive frames by detecting near where it was.

A full-frame detection at 640x480 costs tens of milliseconds; searching a
region twice the face's side, scaled so the face is ~28 pixels (Haar; 40 for
YuNet), costs about a millisecond with the same detector. Every box the
tracker returns is a real detection in the current frame (nothing is carried
over from an earlier frame), so a frame counts as "face found" only when the
detector found one.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from edge_mer.preprocess.face_detect import Detection, FaceDetector, check_frame

log = logging.getLogger(__name__)


class FaceTracker:
    """The chosen face per frame, for frames given in time order (see FaceDetectorOptions.track)."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self.options = detector.options
        # Never below min_size: a region search that cannot find the face would only add cost.
        self.face_px = max(self.options.track_face_px or detector.track_face_px, self.options.min_size)
        self._last: Detection | None = None
        self._tracked = 0  # frames found by the region search since the last full-frame detection
        self.full_detections = 0
        self.region_searches = 0

    def reset(self) -> None:
        """Forget the last face (e.g. after a gap in the frames)."""
        self._last, self._tracked = None, 0

    def find(self, frame: np.ndarray) -> Detection | None:
        """The face in ``frame``: searched near the last one when possible, else in the whole frame."""
        check_frame(frame)
        if self.options.track and self._last is not None and self._tracked < self.options.redetect_every:
            near = self._search_near(frame, self._last)
            if near is not None:
                self._last = near
                self._tracked += 1
                return near
        self.full_detections += 1
        self._last = self.detector.best(frame)
        self._tracked = 0
        return self._last

    def _search_near(self, frame: np.ndarray, last: Detection) -> Detection | None:
        self.region_searches += 1
        x, y, w, h = last.box
        side = max(w, h)
        pad = int(round(side * self.options.track_margin))
        fh, fw = frame.shape[:2]
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(fw, x + w + pad), min(fh, y + h + pad)
        if x1 - x0 < side // 2 or y1 - y0 < side // 2:
            return None  # the face has left the frame
        # Scale so the face is about track_face_px; never enlarge more than 2x (no detail to gain).
        scale = min(2.0, self.face_px / side)
        size = (max(1, int(round((x1 - x0) * scale))), max(1, int(round((y1 - y0) * scale))))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        region = cv2.resize(frame[y0:y1, x0:x1], size, interpolation=interpolation)
        found = [_to_frame(d, scale, x0, y0) for d in self.detector.detect_image(region)]
        found = [d for d in found if min(d.box[2], d.box[3]) >= self.options.min_size]
        return self.detector.choose(found)


def _to_frame(d: Detection, scale: float, x0: int, y0: int) -> Detection:
    x, y, w, h = d.box
    marks = None if d.landmarks is None else tuple((x0 + px / scale, y0 + py / scale) for px, py in d.landmarks)
    box = (x0 + int(round(x / scale)), y0 + int(round(y / scale)), int(round(w / scale)), int(round(h / scale)))
    return Detection(box, d.score, marks)
