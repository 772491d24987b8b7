"""What every face detector shares: a detection, the detector interface, frame and model-file checks.

Detectors live one per module (:mod:`face_detect` holds Haar and YuNet,
:mod:`face_blazeface` BlazeFace) and are chosen by kind from
:data:`edge_mer.preprocess.face_detect.DETECTORS`.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.errors import ConfigError, InputError

if TYPE_CHECKING:
    from edge_mer.preprocess.face_detect import FaceDetectorOptions

log = logging.getLogger(__name__)

#: A detector model file larger than this is refused unread (YuNet is ~0.2 MB, a Haar cascade ~1 MB).
MAX_MODEL_BYTES = 64 << 20


@dataclass(frozen=True)
class Detection:
    """One face: box ``(x, y, w, h)`` in frame pixels, a score, optional 5 landmarks."""

    box: tuple[int, int, int, int]
    score: float
    #: Keypoints in frame pixels; the first two are the person's right and left eye (YuNet's 5 and
    #: BlazeFace's 6 both start so), which alignment levels.
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    @property
    def eyes(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The person's (right, left) eye in frame pixels, when the detector gives keypoints."""
        if self.landmarks is None or len(self.landmarks) < 2:
            return None
        return self.landmarks[0], self.landmarks[1]


@dataclass(frozen=True)
class Region:
    """Where the tracker looks for a face it follows: ``x0, y0, x1, y1`` in frame pixels (end exclusive)
    and the side of the face it expects there."""

    x0: int
    y0: int
    x1: int
    y1: int
    face_side: int


@dataclass(frozen=True)
class DetectorModel:
    """A detector network loaded on a backend: ``infer`` maps a feed dict to outputs by name.

    Built above this layer (``edge_mer.pipeline.face_models``) so the detector runs on the same
    backend protocol as the encoders without the preprocessing layer importing backends.
    """

    infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    input_name: str
    #: The decoding parameters from the manifest (:class:`~edge_mer.preprocess.blazeface.BlazeFaceDecoding`).
    decoding: Any
    #: Largest batch one call takes (1 when the model's batch axis is fixed).
    max_batch: int = 1
    #: The image input's layout: ``NHWC`` (TFLite's) or ``NCHW`` (tflite2onnx's conversion).
    layout: str = "NHWC"
    close: Callable[[], None] = lambda: None
    #: What ran: ``"<name> (<precision>) on <backend>"``, for logs and benchmark reports.
    description: str = ""


class FaceDetector(abc.ABC):
    """Finds faces in BGR or grey uint8 frames."""

    kind: ClassVar[str]
    #: Face size (pixels) the tracker scales its search region to, unless the options set one.
    track_face_px: ClassVar[int]
    #: Whether ``FaceDetectorOptions.model_path`` must name a model file, and what file.
    needs_model: ClassVar[bool] = False
    model_hint: ClassVar[str] = ""
    #: Whether the detector runs a network that must be loaded on a backend (a :class:`DetectorModel`).
    needs_network: ClassVar[bool] = False
    #: ``FaceDetectorOptions.detect_every`` when the options leave it 0.
    detect_every: ClassVar[int] = 1

    def __init__(self, options: FaceDetectorOptions, network: DetectorModel | None = None) -> None:
        self.options = options
        self.network = network

    @property
    def face_scale(self) -> float:
        """How many times its box's side a tight face crop is (1: the box is the face, as Haar's and YuNet's)."""
        return 1.0

    @property
    def face_shift(self) -> float:
        """How far above its box's centre a tight face's centre lies, in box sides (0 for Haar and YuNet)."""
        return 0.0

    def close(self) -> None:
        """Release the detector's network, if it has one."""
        if self.network is not None:
            self.network.close()

    def search(self, frame: np.ndarray, regions: Sequence[Region], face_px: int) -> list[list[Detection]]:
        """Faces inside each of ``regions`` of ``frame``, in frame coordinates, one list per region.

        Each region is scaled so its expected face is about ``face_px`` pixels
        (never enlarged more than 2x: there is no detail to gain) and searched
        with :meth:`detect_image`; detectors with a fixed input size override this.
        """
        out = []
        for r in regions:
            scale = min(2.0, face_px / max(1, r.face_side))
            size = (max(1, int(round((r.x1 - r.x0) * scale))), max(1, int(round((r.y1 - r.y0) * scale))))
            interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
            image = cv2.resize(frame[r.y0:r.y1, r.x0:r.x1], size, interpolation=interpolation)
            out.append([to_frame(d, scale, r.x0, r.y0) for d in self.detect_image(image)])
        return out

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


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def check_frame(frame: np.ndarray) -> None:
    """Raise InputError unless ``frame`` is a uint8 HxW or HxWx3 image."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise InputError(f"frame must be a uint8 HxW or HxWx3 image, got "
                         f"{getattr(frame, 'dtype', type(frame).__name__)} {list(getattr(frame, 'shape', []))}")


def to_frame(d: Detection, scale: float, x0: float, y0: float) -> Detection:
    """``d`` found in a region scaled by ``scale`` whose corner is ``(x0, y0)``, in frame pixels."""
    x, y, w, h = d.box
    marks = None if d.landmarks is None else tuple((x0 + px / scale, y0 + py / scale) for px, py in d.landmarks)
    box = (int(round(x0 + x / scale)), int(round(y0 + y / scale)), int(round(w / scale)), int(round(h / scale)))
    return Detection(box, d.score, marks)


def _rescale(d: Detection, s: float) -> Detection:
    x, y, w, h = d.box
    marks = None if d.landmarks is None else tuple((px * s, py * s) for px, py in d.landmarks)
    return Detection((int(round(x * s)), int(round(y * s)), int(round(w * s)), int(round(h * s))), d.score, marks)


def opencv_reason(exc: BaseException) -> str:
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
def opencv_quiet() -> Iterator[None]:
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


