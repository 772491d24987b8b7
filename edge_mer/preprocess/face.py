"""Face crops to model input: square crop with margin, colour, resize, scale.

The same functions prepare crops for the daemon (after detection) and for
calibration and evaluation readers (from image folders or FER rows), so the
arrays are identical byte for byte.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.errors import InputError
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.face_params import Box, FaceParams
from edge_mer.preprocess.detection import Detection, FaceDetector
from edge_mer.preprocess.face_track import FaceTracker, Primary, TrackedFace

if TYPE_CHECKING:
    from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)

#: FaceParams.interpolation -> the name of OpenCV's flag (looked up when used: cv2 loads lazily).
_INTERPOLATION = {"linear": "INTER_LINEAR", "area": "INTER_AREA", "cubic": "INTER_CUBIC", "nearest": "INTER_NEAREST"}

def square_crop(frame: np.ndarray, box: Box, margin: float, shift: float = 0.0) -> np.ndarray:
    """A square crop centred on ``box`` (moved up by ``shift`` of its side), its side ``max(w, h) * (1 + 2 * margin)``.

    Parts outside the frame are filled by replicating the border, so a face at
    the edge keeps its aspect ratio instead of being stretched.
    """
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise InputError(f"face box {list(box)} has no area; expected positive width and height")
    side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
    cx, cy = x + w / 2.0, y + h / 2.0 - shift * max(w, h)
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    x1, y1 = x0 + side, y0 + side
    fh, fw = frame.shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    if ix0 >= ix1 or iy0 >= iy1:
        raise InputError(f"face box {list(box)} lies outside the {fw}x{fh} frame")
    crop = frame[iy0:iy1, ix0:ix1]
    pads = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_REPLICATE)
    return crop


def eye_angle(eyes: tuple[tuple[float, float], tuple[float, float]]) -> float:
    """The head's roll in degrees: the angle of the line from the person's right eye to the left one."""
    (rx, ry), (lx, ly) = eyes
    return math.degrees(math.atan2(ly - ry, lx - rx))


def aligned_crop(frame: np.ndarray, box: Box, eyes: tuple[tuple[float, float], tuple[float, float]],
                 margin: float, side_px: int, shift: float = 0.0) -> np.ndarray:
    """The square crop of :func:`square_crop`, rotated about its centre so the eyes are level.

    ``shift`` moves the centre toward the top of the head (perpendicular to the eye line).

    One affine warp straight to ``side_px`` pixels (so no second resize is
    needed when that is the model's size); outside the frame the border is
    replicated, as in :func:`square_crop`.
    """
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise InputError(f"face box {list(box)} has no area; expected positive width and height")
    side = max(w, h) * (1.0 + 2.0 * margin)
    angle = eye_angle(eyes)
    up = (math.sin(math.radians(angle)), -math.cos(math.radians(angle)))  # image y points down
    cx, cy = x + w / 2.0 + shift * max(w, h) * up[0], y + h / 2.0 + shift * max(w, h) * up[1]
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, side_px / side)
    matrix[:, 2] += (side_px / 2.0 - cx, side_px / 2.0 - cy)
    return cv2.warpAffine(frame, matrix, (side_px, side_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _to_color(image: np.ndarray, color: str) -> np.ndarray:
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        gray = image.reshape(image.shape[:2])
        if color == "gray":
            return gray
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR if color == "bgr" else cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        if color == "gray":
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return image if color == "bgr" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise InputError(f"face image of shape {list(image.shape)}: expected HxW grey or HxWx3 BGR")


def prepare_crops(crops: Sequence[np.ndarray], params: FaceParams, out: np.ndarray | None = None) -> np.ndarray:
    """Stack crops into one float32 batch shaped by ``params`` (``params.input_shape``).

    Crops are uint8 grey or BGR images of any size.  ``out`` may be a
    preallocated array of the right shape, reused across calls on the hot path.
    """
    if len(crops) == 0:
        raise InputError("no face crops to prepare; expected at least one image")
    shape = params.input_shape(len(crops))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise InputError(f"output buffer is {out.dtype}{list(out.shape)}, expected float32{list(shape)}")
    interp = getattr(cv2, _INTERPOLATION[params.interpolation])
    mean = np.asarray(params.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(params.std, dtype=np.float32)
    for i, crop in enumerate(crops):
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8:
            raise InputError(f"face crop {i}: expected a uint8 numpy image, got "
                             f"{getattr(crop, 'dtype', type(crop).__name__)}")
        image = cv2.resize(_to_color(crop, params.color), params.size, interpolation=interp)
        scaled = (image.astype(np.float32) * np.float32(1.0 / 255.0) - mean) * inv_std
        scaled = scaled.reshape(params.size[1], params.size[0], params.channels)
        out[i] = scaled.transpose(2, 0, 1) if params.layout == "NCHW" else scaled
    return out


class FacePreprocessor:
    """Frames -> detected, cropped (eyes levelled), scaled faces for the encoder.

    Frames must come in time order: faces are tracked from one frame to the
    next (up to ``max_faces``, each with an id; see
    :mod:`~edge_mer.preprocess.face_track`). With ``align``, a face whose
    detection has eye keypoints is rotated so the eyes are level before it is
    scaled. With ``timings``, each frame's detection and each batch's
    crop-and-scale time are recorded as ``face.detect`` and ``face.crop``.
    """

    def __init__(self, params: FaceParams, detector: FaceDetector, timings: StageTimes | None = None,
                 align: bool = True, max_faces: int = 1, primary: Primary = "largest") -> None:
        self.params = params
        self.detector = detector
        self.tracker = FaceTracker(detector, max_faces, primary)
        self.timings = timings
        self.align = align
        self._side = max(params.size)
        # The model's margin is relative to a tight face; the detector's box may be smaller than one.
        self.margin = ((1.0 + 2.0 * params.margin) * detector.face_scale - 1.0) / 2.0
        self.shift = detector.face_shift

    def find_all(self, frame: np.ndarray) -> list[TrackedFace]:
        """Every followed face in ``frame`` with its id (the primary one is ``tracker.primary_id``)."""
        started = time.perf_counter_ns()
        faces = self.tracker.find_all(frame)
        if self.timings is not None:
            self.timings.add("face.detect", (time.perf_counter_ns() - started) / 1e6)
        return faces

    def find(self, frame: np.ndarray) -> Detection | None:
        """The primary face in ``frame``, or None."""
        faces = self.find_all(frame)
        return next((f.detection for f in faces if f.id == self.tracker.primary_id), None)

    def crop(self, frame: np.ndarray, face: Box | Detection) -> np.ndarray:
        """One face's crop: aligned when ``align`` is on and the detection has eyes, else square."""
        if isinstance(face, Detection):
            eyes = face.eyes if self.align else None
            if eyes is not None:
                return aligned_crop(frame, face.box, eyes, self.margin, self._side, self.shift)
            face = face.box
        return square_crop(frame, face, self.margin, self.shift)

    def crops(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The primary face's crop from each frame that has one."""
        return [self.crop(frame, face) for frame in frames if (face := self.find(frame)) is not None]

    def prepare(self, frames: Sequence[np.ndarray], faces: Sequence[Box | Detection]) -> np.ndarray:
        """The encoder batch for ``faces`` (boxes or detections) in ``frames``, one crop each."""
        started = time.perf_counter_ns()
        batch = prepare_crops([self.crop(f, b) for f, b in zip(frames, faces)], self.params)
        if self.timings is not None:
            self.timings.add("face.crop", (time.perf_counter_ns() - started) / 1e6)
        return batch

    def process(self, frames: Sequence[np.ndarray]) -> np.ndarray | Invalid:
        """A float32 batch ``[faces, ...]`` of the primary face per frame, or ``Invalid(NO_FACE)``."""
        if len(frames) == 0:
            return Invalid(ReasonCode.NO_FRAMES)
        found = [(frame, face) for frame in frames if (face := self.find(frame)) is not None]
        if not found:
            return Invalid(ReasonCode.NO_FACE)
        return self.prepare([f for f, _ in found], [d for _, d in found])
