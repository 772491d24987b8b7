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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from edge_mer.config import require
from edge_mer.errors import InputError
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.face_detect import FaceDetector
from edge_mer.preprocess.face_track import FaceTracker

if TYPE_CHECKING:
    from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
                  "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
#: Largest crop side a manifest may ask for (a batch of crops is allocated from it).
MAX_SIDE = 1024


@dataclass(frozen=True)
class FaceParams:
    """How a face crop becomes the encoder's input tensor.

    Pixels are scaled as ``(p / 255 - mean) / std`` per channel; ``margin`` is
    the fraction of the detected box's side added on each side before the
    square crop.  ``color`` is the model's input colour order (frames arrive
    as OpenCV BGR).
    """

    size: tuple[int, int] = (64, 64)
    color: Literal["gray", "bgr", "rgb"] = "gray"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    margin: float = 0.0
    interpolation: Literal["linear", "area", "cubic", "nearest"] = "linear"
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    def __post_init__(self) -> None:
        require(len(self.size) == 2 and all(8 <= s <= MAX_SIDE for s in self.size),
                f"size must be [width, height], each 8..{MAX_SIDE} pixels, got {list(self.size)[:4]}")
        channels = self.channels
        for name in ("mean", "std"):
            value = getattr(self, name)
            require(len(value) in (1, channels),
                    f"{name} needs 1 or {channels} values for color {self.color!r}, got {len(value)}")
            require(all(math.isfinite(v) for v in value), f"{name} must be finite numbers, got {list(value)}")
        require(all(s > 0 for s in self.std), f"std must be > 0, got {list(self.std)}")
        require(0.0 <= self.margin <= 1.0, f"margin must be in 0..1, got {self.margin}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        w, h = self.size
        if self.layout == "NCHW":
            return (batch, self.channels, h, w)
        return (batch, h, w, self.channels)


def square_crop(frame: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """A square crop centred on ``box``, its side ``max(w, h) * (1 + 2 * margin)``.

    Parts outside the frame are filled by replicating the border, so a face at
    the edge keeps its aspect ratio instead of being stretched.
    """
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise InputError(f"face box {list(box)} has no area; expected positive width and height")
    side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
    cx, cy = x + w / 2.0, y + h / 2.0
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
    interp = _INTERPOLATION[params.interpolation]
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
    """Frames -> detected, cropped, scaled face batch (one crop per frame with a face).

    Frames must come in time order: the face is tracked from one frame to the
    next (see :class:`~edge_mer.preprocess.face_detect.FaceDetectorOptions`).
    With ``timings``, each frame's detection and each batch's crop-and-scale
    time are recorded as ``face.detect`` and ``face.crop``.
    """

    def __init__(self, params: FaceParams, detector: FaceDetector, timings: StageTimes | None = None) -> None:
        self.params = params
        self.detector = detector
        self.tracker = FaceTracker(detector)
        self.timings = timings

    def find(self, frame: np.ndarray) -> Box | None:
        """The chosen face's box in ``frame``, or None."""
        started = time.perf_counter_ns()
        face = self.tracker.find(frame)
        if self.timings is not None:
            self.timings.add("face.detect", (time.perf_counter_ns() - started) / 1e6)
        return None if face is None else face.box

    def crops(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The chosen face's square crop from each frame that has one."""
        found = []
        for frame in frames:
            box = self.find(frame)
            if box is not None:
                found.append(square_crop(frame, box, self.params.margin))
        return found

    def prepare(self, frames: Sequence[np.ndarray], boxes: Sequence[Box]) -> np.ndarray:
        """The encoder batch for faces at ``boxes`` in ``frames`` (one crop each)."""
        started = time.perf_counter_ns()
        batch = prepare_crops([square_crop(f, b, self.params.margin) for f, b in zip(frames, boxes)], self.params)
        if self.timings is not None:
            self.timings.add("face.crop", (time.perf_counter_ns() - started) / 1e6)
        return batch

    def process(self, frames: Sequence[np.ndarray]) -> np.ndarray | Invalid:
        """A float32 batch ``[faces, ...]`` for the encoder, or ``Invalid(NO_FACE)``."""
        if len(frames) == 0:
            return Invalid(ReasonCode.NO_FRAMES)
        found = [(frame, box) for frame in frames if (box := self.find(frame)) is not None]
        if not found:
            return Invalid(ReasonCode.NO_FACE)
        return self.prepare([f for f, _ in found], [b for _, b in found])
