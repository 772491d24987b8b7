"""Face detectors behind one interface: OpenCV Haar cascade and YuNet.

The Haar cascade ships inside the opencv-python 4.x wheel, so a fresh default
install can find faces with no extra file; YuNet (``cv2.FaceDetectorYN``) is
more accurate and needs a model path from the configuration.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np

from edge_mer.config import require
from edge_mer.errors import ConfigError, InputError

log = logging.getLogger(__name__)

HAAR_FILE = "haarcascade_frontalface_default.xml"
#: A detector model file larger than this is refused unread (YuNet is ~0.2 MB, a Haar cascade ~1 MB).
MAX_MODEL_BYTES = 64 << 20


@dataclass(frozen=True)
class Detection:
    """One face: box ``(x, y, w, h)`` in frame pixels, a score, optional 5 landmarks."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class FaceDetectorOptions:
    """Which detector, its model file and thresholds, and which face to keep.

    ``detect_width`` > 0 downscales frames wider than it before a full-frame
    detection (boxes are scaled back), trading small-face recall for speed:
    with the Haar cascade's 24-pixel window, 320 finds faces from about 48
    pixels wide in a 640x480 frame.

    ``track`` follows the face between full-frame detections: in the next
    frame the detector searches only the region around the last face
    (``track_margin`` of its side added on each side), scaled so the face is
    about ``track_face_px`` pixels (0: the detector's own size, 28 for Haar,
    whose window is 24, and 40 for YuNet, whose coarsest feature map has a
    32-pixel stride), and falls back to a full-frame detection
    when the face is not there or after ``redetect_every`` tracked frames
    (so a second, larger face entering the view is picked up).
    """

    #: A key of :data:`DETECTORS`.
    kind: str = "haar"
    model_path: Path | None = None
    select: Literal["largest", "confident"] = "largest"
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    min_size: int = 24
    detect_width: int = 320
    haar_scale_factor: float = 1.1
    haar_min_neighbors: int = 5
    track: bool = True
    redetect_every: int = 30
    track_face_px: int = 0
    track_margin: float = 0.5

    def __post_init__(self) -> None:
        require(0.0 <= self.score_threshold <= 1.0, f"score_threshold must be in 0..1, got {self.score_threshold}")
        require(0.0 < self.nms_threshold <= 1.0, f"nms_threshold must be in (0, 1], got {self.nms_threshold}")
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
        require(self.kind in DETECTORS, f"kind: expected one of {', '.join(map(repr, DETECTORS))}, got {self.kind!r}")
        require(not DETECTORS[self.kind].needs_model or self.model_path is not None,
                f"model_path is required for the {self.kind} detector ({DETECTORS[self.kind].model_hint})")


class FaceDetector(abc.ABC):
    """Finds faces in BGR or grey uint8 frames."""

    kind: ClassVar[str]
    #: Face size (pixels) the tracker scales its search region to, unless the options set one.
    track_face_px: ClassVar[int]
    #: Whether ``FaceDetectorOptions.model_path`` must name a model file, and what file.
    needs_model: ClassVar[bool] = False
    model_hint: ClassVar[str] = ""

    def __init__(self, options: FaceDetectorOptions) -> None:
        self.options = options

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """All faces in ``frame`` (uint8, HxW or HxWx3 BGR), in frame coordinates."""
        check_frame(frame)
        scale = 1.0
        small = frame
        width = frame.shape[1]
        if self.options.detect_width and width > self.options.detect_width:
            scale = width / self.options.detect_width
            size = (self.options.detect_width, max(1, int(round(frame.shape[0] / scale))))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        found = self._detect(small)
        if scale != 1.0:
            found = [_rescale(d, scale) for d in found]
        return [d for d in found if min(d.box[2], d.box[3]) >= self.options.min_size]

    def detect_image(self, image: np.ndarray) -> list[Detection]:
        """All faces in ``image`` as it is (no downscaling, no size filter), in its own coordinates.

        For searching a small region that the caller has already cropped and scaled.
        """
        check_frame(image)
        return self._detect(image)

    def best(self, frame: np.ndarray) -> Detection | None:
        """The face chosen by ``options.select`` (largest area or highest score), or None."""
        return self.choose(self.detect(frame))

    def choose(self, faces: list[Detection]) -> Detection | None:
        """The face ``options.select`` prefers among ``faces``, or None when there are none."""
        if not faces:
            return None
        if self.options.select == "largest":
            return max(faces, key=lambda d: (d.area, d.score))
        return max(faces, key=lambda d: (d.score, d.area))

    @abc.abstractmethod
    def _detect(self, frame: np.ndarray) -> list[Detection]: ...


def check_frame(frame: np.ndarray) -> None:
    """Raise InputError unless ``frame`` is a uint8 HxW or HxWx3 image."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise InputError(f"frame must be a uint8 HxW or HxWx3 image, got "
                         f"{getattr(frame, 'dtype', type(frame).__name__)} {list(getattr(frame, 'shape', []))}")


def _rescale(d: Detection, s: float) -> Detection:
    x, y, w, h = d.box
    marks = None if d.landmarks is None else tuple((px * s, py * s) for px, py in d.landmarks)
    return Detection((int(round(x * s)), int(round(y * s)), int(round(w * s)), int(round(h * s))), d.score, marks)


def _opencv_reason(exc: BaseException) -> str:
    """OpenCV's own words from a ``cv2.error`` (its text carries source paths and C++ signatures)."""
    cause = exc.__cause__ if isinstance(exc, SystemError) and exc.__cause__ is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()] or [type(cause).__name__]
    match = re.search(r"error: \([-\d]+:([^)]*)\) ?(.*)", lines[0])
    if match is None:
        return lines[0]
    reason = re.sub(r"\s*in function .*$", "", match.group(2)).strip()
    detail = next((line.lstrip("> ").strip() for line in lines[1:]), "")  # e.g. "DNN/Gemm: Invalid dimension ..."
    return reason or detail or match.group(1)


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    # OpenCV logs its own multi-line diagnosis to stderr before raising; the ConfigError says it in one line.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def check_model_file(path: Path, what: str, expected: str) -> Path:
    """``path`` if it is a readable file of at most :data:`MAX_MODEL_BYTES`, else one ConfigError line.

    ``what`` names the option in messages (``"YuNet model_path"``).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        is_file = path.is_file()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; expected {expected}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({exc}); expected {expected}") from None
    if not is_file:
        raise ConfigError(f"{what} {path} is not a file; expected {expected}")
    if size > MAX_MODEL_BYTES:
        raise ConfigError(f"{what} {path} has {size} bytes, more than the {MAX_MODEL_BYTES} "
                          f"a detector model may have; expected {expected}")
    return path


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

    def __init__(self, options: FaceDetectorOptions) -> None:
        super().__init__(options)
        expected = "an OpenCV Haar cascade XML file, e.g. " + HAAR_FILE
        path = (check_model_file(options.model_path, "Haar model_path", expected) if options.model_path
                else haar_cascade_path())
        if path is None:
            raise ConfigError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 wheels dropped them); "
                              "install opencv-python<5 or use the yunet detector with a model_path")
        try:
            with _opencv_quiet():
                self._cascade = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError) as exc:  # the binding raises SystemError wrapping cv2.error for bad XML
            raise ConfigError(f"Haar model_path {path} is not a cascade OpenCV can load "
                              f"({_opencv_reason(exc)}); expected {expected}") from None
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

    def __init__(self, options: FaceDetectorOptions) -> None:
        super().__init__(options)
        if options.model_path is None:
            raise ConfigError(f"YuNet model_path is not set; expected {self.model_hint}")
        path = check_model_file(options.model_path, "YuNet model_path", self.model_hint)
        if path.suffix.lower() != ".onnx":  # OpenCV picks the framework by suffix (.xml would mean OpenVINO)
            raise ConfigError(f"YuNet model_path {path} does not end in .onnx; expected {self.model_hint}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ConfigError(f"OpenCV {cv2.__version__} has no FaceDetectorYN; need OpenCV >= 4.5.4")
        self._size: tuple[int, int] = (320, 320)
        try:
            with _opencv_quiet():
                self._net = cv2.FaceDetectorYN.create(str(path), "", self._size, options.score_threshold,
                                                      options.nms_threshold, 50)
                # Any ONNX file loads; only running it shows whether it has YuNet's outputs.
                self._net.detect(np.zeros((*self._size, 3), np.uint8))
        except (cv2.error, SystemError) as exc:
            raise ConfigError(f"YuNet model_path {path} is not a YuNet model OpenCV can run "
                              f"({_opencv_reason(exc)}); expected {self.model_hint}") from None

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
    HaarDetector.kind: HaarDetector,
    YuNetDetector.kind: YuNetDetector,
}


def create_detector(options: FaceDetectorOptions | None = None) -> FaceDetector:
    """A detector of ``options.kind`` (Haar by default)."""
    options = options or FaceDetectorOptions()
    return DETECTORS[options.kind](options)
