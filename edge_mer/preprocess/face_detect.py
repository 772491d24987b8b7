"""Face detector options and registry, and the OpenCV detectors: Haar cascade and YuNet.

BlazeFace (:mod:`edge_mer.preprocess.face_blazeface`), the default, runs a
model shipped in the bundle through the same backend as the encoders; the
Haar cascade ships inside the opencv-python 4.x wheel; YuNet
(``cv2.FaceDetectorYN``) needs a model path from the configuration.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.config import require
from edge_mer.errors import ConfigError
from edge_mer.names import AUTO, PRECISIONS
from edge_mer.preprocess.detection import (MAX_MODEL_BYTES, Detection, DetectorModel, FaceDetector,  # noqa: F401
                                           check_frame, check_model_file, opencv_quiet, opencv_reason)
from edge_mer.preprocess.face_blazeface import BlazeFaceDetector, BlazeFaceFullDetector

log = logging.getLogger(__name__)

HAAR_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceDetectorOptions:
    """Which detector, its model file and thresholds, and which face to keep.

    ``detect_width`` > 0 downscales frames wider than it before a full-frame
    detection (boxes are scaled back), trading small-face recall for speed:
    with the Haar cascade's 24-pixel window, 320 finds faces from about 48
    pixels wide in a 640x480 frame.

    ``track`` follows each face between full-frame detections: in the next
    frame the detector searches only the region around the last face
    (``track_margin`` of its side added on each side), scaled so the face is
    about ``track_face_px`` pixels (0: the detector's own size, 28 for Haar,
    whose window is 24, and 40 for YuNet, whose coarsest feature map has a
    32-pixel stride; BlazeFace letterboxes the region into its fixed input),
    and falls back to a full-frame detection when a face is not there or
    after ``redetect_every`` tracked frames (so a face entering the view is
    picked up). See :mod:`edge_mer.preprocess.face_track` for ids.
    """

    #: A key of :data:`DETECTORS`.
    kind: str = "blazeface"
    #: The detector's model file; for ``blazeface`` it replaces the bundle's model (same decoding).
    model_path: Path | None = None
    #: The precision of a detector network from the bundle: ``auto`` (the fastest that passed its gate),
    #: or one the bundle has. Its own, not the encoders' ``precision``: a bundle may quantize one and not the other.
    precision: str = "auto"
    select: Literal["largest", "confident"] = "largest"
    #: None: the detector's own (YuNet 0.6; BlazeFace the manifest's, MediaPipe's 0.5).
    score_threshold: float | None = None
    #: None: the detector's own (YuNet 0.3; BlazeFace the manifest's, MediaPipe's 0.3).
    nms_threshold: float | None = None
    min_size: int = 24
    detect_width: int = 320
    haar_scale_factor: float = 1.1
    haar_min_neighbors: int = 5
    track: bool = True
    redetect_every: int = 30
    track_face_px: int = 0
    track_margin: float = 0.5
    #: Run the detector on a followed face every this many frames and follow it by template matching in
    #: between (:mod:`edge_mer.preprocess.face_follow`); 0: the detector's own (BlazeFace 3, Haar and YuNet
    #: 1, whose region search is already cheap).
    detect_every: int = 0
    #: Frames a face that is not found keeps its id, so it is re-identified when it reappears nearby.
    keep_lost: int = 15
    #: Least IoU between a face's last box and a new detection for them to be the same face.
    match_iou: float = 0.3
    #: Least score for a detection to start following a new face (a followed face continues with any
    #: score above ``score_threshold``): face-like shapes in the background score lower than faces.
    new_face_score: float = 0.6
    #: BlazeFace only (its input is a fixed 128x128): on every ``tile_every``-th whole-frame pass in a row
    #: that shows no face, also search six overlapping tiles of two thirds of the frame's short side in one
    #: batch, so faces down to about half the size are found (at 640x480: from ~55 px instead of ~110 px),
    #: for ~6x one detection's cost; 0 never does.
    tile_every: int = 3

    def __post_init__(self) -> None:
        require(self.score_threshold is None or 0.0 <= self.score_threshold <= 1.0,
                f"score_threshold must be in 0..1, got {self.score_threshold}")
        require(self.nms_threshold is None or 0.0 < self.nms_threshold <= 1.0,
                f"nms_threshold must be in (0, 1], got {self.nms_threshold}")
        require(self.min_size >= 1, f"min_size must be >= 1 pixel, got {self.min_size}")
        require(self.detect_width == 0 or self.detect_width >= 64,
                f"detect_width must be 0 (full size) or >= 64 pixels, got {self.detect_width}")
        require(self.haar_scale_factor > 1.0, f"haar_scale_factor must be > 1, got {self.haar_scale_factor}")
        require(self.haar_min_neighbors >= 0, f"haar_min_neighbors must be >= 0, got {self.haar_min_neighbors}")
        require(self.redetect_every >= 1, f"redetect_every must be >= 1 frame, got {self.redetect_every}")
        require(self.track_face_px == 0 or self.track_face_px >= self.min_size,
                f"track_face_px must be 0 (the detector's own) or >= min_size ({self.min_size}), "
                f"got {self.track_face_px}")
        require(0.1 <= self.track_margin <= 2.0, f"track_margin must be in 0.1..2, got {self.track_margin}")
        require(0 <= self.tile_every <= 1000, f"tile_every must be 0..1000, got {self.tile_every}")
        require(0 <= self.detect_every <= 30, f"detect_every must be 0..30 frames, got {self.detect_every}")
        require(0 <= self.keep_lost <= 3600, f"keep_lost must be 0..3600 frames, got {self.keep_lost}")
        require(0.0 < self.match_iou <= 1.0, f"match_iou must be in (0, 1], got {self.match_iou}")
        require(0.0 <= self.new_face_score <= 1.0, f"new_face_score must be in 0..1, got {self.new_face_score}")
        require(self.precision in (AUTO, *PRECISIONS),
                f"precision: expected auto or one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        require(self.kind in DETECTORS, f"kind: expected one of {', '.join(map(repr, DETECTORS))}, got {self.kind!r}")
        require(not DETECTORS[self.kind].needs_model or self.model_path is not None,
                f"model_path is required for the {self.kind} detector ({DETECTORS[self.kind].model_hint})")


def haar_cascade_path() -> Path | None:
    """The frontal-face cascade shipped with this OpenCV, or None (OpenCV 5 ships none)."""
    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", None)
    if folder is None or not hasattr(cv2, "CascadeClassifier"):
        return None
    path = Path(folder) / HAAR_FILE
    return path if path.is_file() else None


class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones cascade; score is the cascade's final-stage weight squashed to 0..1."""

    kind = "haar"
    track_face_px = 28

    def __init__(self, options: FaceDetectorOptions, network: DetectorModel | None = None) -> None:
        super().__init__(options, network)
        expected = "an OpenCV Haar cascade XML file, e.g. " + HAAR_FILE
        path = (check_model_file(options.model_path, "Haar model_path", expected) if options.model_path
                else haar_cascade_path())
        if path is None:
            raise ConfigError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 wheels dropped them); "
                              "install opencv-python<5 or use the yunet detector with a model_path")
        try:
            with opencv_quiet():
                self._cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError) as exc:  # the binding raises SystemError wrapping cv2.error for bad XML
            raise ConfigError(f"Haar model_path {path} is not a cascade OpenCV can load "
                              f"({opencv_reason(exc)}); expected {expected}") from None
        if self._cascade.empty():
            raise ConfigError(f"Haar model_path {path} is not a cascade OpenCV can load "
                              f"(no cascade in it); expected {expected}")

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.options.haar_scale_factor, minNeighbors=self.options.haar_min_neighbors,
            minSize=(self.options.min_size, self.options.min_size), outputRejectLevels=True)
        return [Detection(tuple(int(v) for v in box), float(1.0 / (1.0 + np.exp(-w))))
                for box, w in zip(boxes, np.ravel(weights))]


class YuNetDetector(FaceDetector):
    """YuNet through ``cv2.FaceDetectorYN``: boxes, scores and 5 landmarks."""

    kind = "yunet"
    track_face_px = 40
    needs_model = True
    model_hint = "a YuNet .onnx file, e.g. face_detection_yunet_2023mar.onnx"

    def __init__(self, options: FaceDetectorOptions, network: DetectorModel | None = None) -> None:
        super().__init__(options, network)
        if options.model_path is None:
            raise ConfigError(f"YuNet model_path is not set; expected {self.model_hint}")
        path = check_model_file(options.model_path, "YuNet model_path", self.model_hint)
        if path.suffix.lower() != ".onnx":  # OpenCV picks the framework by suffix (.xml would mean OpenVINO)
            raise ConfigError(f"YuNet model_path {path} does not end in .onnx; expected {self.model_hint}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ConfigError(f"OpenCV {cv2.__version__} has no FaceDetectorYN; need OpenCV >= 4.5.4")
        self._size: tuple[int, int] = (320, 320)
        try:
            with opencv_quiet():
                score = 0.6 if options.score_threshold is None else options.score_threshold
                nms = 0.3 if options.nms_threshold is None else options.nms_threshold
                self._net = cv2.FaceDetectorYN.create(str(path), "", self._size, score, nms, 50)
                # Any ONNX file loads; only running it shows whether it has YuNet's outputs.
                self._net.detect(np.zeros((*self._size, 3), np.uint8))
        except (cv2.error, SystemError) as exc:
            raise ConfigError(f"YuNet model_path {path} is not a YuNet model OpenCV can run "
                              f"({opencv_reason(exc)}); expected {self.model_hint}") from None

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        image = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(image)
        if faces is None:
            return []
        out = []
        for row in faces:
            x, y, w, h = (int(round(v)) for v in row[:4])
            marks = tuple((float(row[4 + 2 * i]), float(row[5 + 2 * i])) for i in range(5))
            out.append(Detection((x, y, w, h), float(row[14]), marks))
        return out


#: Detector kind (``face.detector.kind``) -> class. A new detector is a :class:`FaceDetector` plus one line here.
DETECTORS: dict[str, type[FaceDetector]] = {
    BlazeFaceDetector.kind: BlazeFaceDetector,
    BlazeFaceFullDetector.kind: BlazeFaceFullDetector,
    HaarDetector.kind: HaarDetector,
    YuNetDetector.kind: YuNetDetector,
}


def create_detector(options: FaceDetectorOptions | None = None, network: DetectorModel | None = None) -> FaceDetector:
    """A detector of ``options.kind`` (BlazeFace by default); ``network`` is the loaded model of a detector
    that runs one (``needs_network``; see ``edge_mer.pipeline.face_models.build_detector``)."""
    options = options or FaceDetectorOptions()
    return DETECTORS[options.kind](options, network)
