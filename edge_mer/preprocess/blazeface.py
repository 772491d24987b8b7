"""BlazeFace's numbers in numpy: letterbox input, SSD anchors, box/keypoint decoding and weighted NMS.

This is the post-processing MediaPipe's face detection graph runs after the
model (``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator`` with a
sigmoid score, ``NonMaxSuppressionCalculator`` with the WEIGHTED algorithm,
``DetectionLetterboxRemovalCalculator``), with the parameters taken from the
bundle manifest (:class:`BlazeFaceDecoding`), so the short-range model (128x128,
896 anchors) and the dense full-range one (192x192, 2,304 anchors) share it.

Weighted NMS differs from the usual hard NMS: every box overlapping the best
remaining one by more than ``min_suppression_threshold`` is averaged into it,
weighted by score. That steadies boxes from frame to frame, which matters
for face crops that feed an expression model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_mer.config import require
from edge_mer.errors import InputError
from edge_mer.preprocess.opencv import cv2

#: Bounds on what a manifest may ask for (the anchor table is allocated from them).
MAX_INPUT_SIDE, MAX_LAYERS, MAX_ANCHORS = 1024, 16, 1 << 16


@dataclass(frozen=True)
class BlazeFaceDecoding:
    """MediaPipe's anchor and decoding options for one BlazeFace model (manifest ``detectors.*.decoding``)."""

    input_size: tuple[int, int] = (128, 128)  # width, height
    num_layers: int = 4
    strides: tuple[int, ...] = (8, 16, 16, 16)
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: tuple[float, float] = (0.5, 0.5)
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True
    num_anchors: int = 896
    num_coords: int = 16
    num_keypoints: int = 6
    #: Box and keypoints are divided by these (the input size in pixels) before the anchor offsets.
    scale: tuple[float, float, float, float] = (128.0, 128.0, 128.0, 128.0)  # x, y, w, h
    #: ``true``: each row is x, y, w, h (MediaPipe's ``reverse_output_order``); ``false``: y, x, h, w.
    reverse_output_order: bool = True
    score_clipping_thresh: float = 100.0
    min_score_thresh: float = 0.5
    min_suppression_threshold: float = 0.3
    #: A tight face crop (as in FER2013 or CK+48, what expression models learn from) is this many times
    #: the side of BlazeFace's box, which runs from the brows to the chin: 1.2 is the median ratio of the
    #: true face square to the detected box on the project's face video (benchmarks/make_face_video.py).
    face_scale: float = 1.2
    #: ... and its centre lies this many box sides above the box's (toward the brows); same measurement.
    face_shift: float = 0.13
    #: Keypoint order of the model: which two are the eyes (alignment levels them).
    keypoints: tuple[str, ...] = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                                  "left_ear_tragion")

    def __post_init__(self) -> None:
        require(len(self.input_size) == 2 and all(16 <= s <= MAX_INPUT_SIDE for s in self.input_size),
                f"input_size must be [width, height], each 16..{MAX_INPUT_SIDE}, got {list(self.input_size)[:4]}")
        require(1 <= self.num_layers <= MAX_LAYERS, f"num_layers must be 1..{MAX_LAYERS}, got {self.num_layers}")
        require(len(self.strides) == self.num_layers and all(1 <= s <= MAX_INPUT_SIDE for s in self.strides),
                f"strides needs num_layers ({self.num_layers}) values in 1..{MAX_INPUT_SIDE}, got "
                f"{list(self.strides)[:MAX_LAYERS + 1]}")
        require(0.0 < self.min_scale <= self.max_scale <= 4.0,
                f"min_scale/max_scale must satisfy 0 < min <= max <= 4, got {self.min_scale}, {self.max_scale}")
        require(len(self.aspect_ratios) >= 1 and all(0.0 < r <= 16.0 for r in self.aspect_ratios),
                f"aspect_ratios must be 1.. values in (0, 16], got {list(self.aspect_ratios)[:8]}")
        require(1 <= self.num_anchors <= MAX_ANCHORS, f"num_anchors must be 1..{MAX_ANCHORS}, got {self.num_anchors}")
        require(1 <= self.num_keypoints <= 32 and self.num_coords == 4 + 2 * self.num_keypoints,
                f"num_coords must be 4 + 2 * num_keypoints (1..32), got {self.num_coords} and {self.num_keypoints}")
        require(len(self.scale) == 4 and all(0.0 < s < math.inf for s in self.scale),
                f"scale must be 4 positive numbers (x, y, w, h), got {list(self.scale)[:5]}")
        require(0.0 < self.score_clipping_thresh < math.inf,
                f"score_clipping_thresh must be > 0, got {self.score_clipping_thresh}")
        require(0.0 <= self.min_score_thresh <= 1.0, f"min_score_thresh must be in 0..1, got {self.min_score_thresh}")
        require(0.0 < self.min_suppression_threshold <= 1.0,
                f"min_suppression_threshold must be in (0, 1], got {self.min_suppression_threshold}")
        require(0.5 <= self.face_scale <= 3.0, f"face_scale must be in 0.5..3, got {self.face_scale}")
        require(-1.0 <= self.face_shift <= 1.0, f"face_shift must be in -1..1, got {self.face_shift}")
        require(len(self.keypoints) == self.num_keypoints,
                f"keypoints must name num_keypoints ({self.num_keypoints}) points, got {len(self.keypoints)}")
        count = len(ssd_anchors(self))
        require(count == self.num_anchors, f"the anchor options give {count} anchors, not num_anchors "
                f"{self.num_anchors}; check strides, aspect_ratios and input_size")


def ssd_anchors(d: BlazeFaceDecoding) -> np.ndarray:
    """The ``[num_anchors, 4]`` anchor table (x_center, y_center, w, h; relative), as MediaPipe's SSD anchors.

    Consecutive layers with the same stride share one feature map; each adds
    one anchor per aspect ratio, plus one for the interpolated scale.
    """
    rows: list[np.ndarray] = []
    width, height = d.input_size
    layer = 0
    while layer < d.num_layers:
        sizes: list[tuple[float, float]] = []
        last = layer
        while last < d.num_layers and d.strides[last] == d.strides[layer]:
            scale = _scale(d, last)
            for ratio in d.aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if d.interpolated_scale_aspect_ratio > 0.0:
                following = 1.0 if last == d.num_layers - 1 else _scale(d, last + 1)
                mixed = math.sqrt(scale * following)
                r = d.interpolated_scale_aspect_ratio
                sizes.append((mixed * math.sqrt(r), mixed / math.sqrt(r)))
            last += 1
        stride = d.strides[layer]
        fw, fh = math.ceil(width / stride), math.ceil(height / stride)
        ys, xs = np.meshgrid((np.arange(fh) + d.anchor_offset[1]) / fh, (np.arange(fw) + d.anchor_offset[0]) / fw,
                             indexing="ij")
        per_cell = len(sizes)
        table = np.empty((fh, fw, per_cell, 4), np.float32)
        table[..., 0] = xs[..., None]
        table[..., 1] = ys[..., None]
        for k, (w, h) in enumerate(sizes):
            table[:, :, k, 2:] = (1.0, 1.0) if d.fixed_anchor_size else (w, h)
        rows.append(table.reshape(-1, 4))
        layer = last
    return np.concatenate(rows) if rows else np.empty((0, 4), np.float32)


def _scale(d: BlazeFaceDecoding, layer: int) -> float:
    if d.num_layers == 1:
        return (d.min_scale + d.max_scale) * 0.5
    return d.min_scale + (d.max_scale - d.min_scale) * layer / (d.num_layers - 1.0)


@dataclass(frozen=True)
class Letterbox:
    """Where a frame went inside the model input: its scale per axis and the padding (input pixels) before it."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_frame(self, xy: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
        """Relative input coordinates ``[..., 2]`` -> frame pixels."""
        size = np.asarray(input_size, np.float32)
        return (xy * size - (self.pad_x, self.pad_y)) / (self.scale_x, self.scale_y)


class LetterboxBuffer:
    """Letterboxes BGR or grey frames into preallocated uint8 canvases, then makes the float32 batch
    (RGB in [-1, 1], NHWC or NCHW) in one pass.

    :meth:`fill` resizes straight into a slot's canvas (nothing else is
    allocated); :meth:`batch` turns the filled slots into the model input:
    for NCHW one ``cv2.dnn.blobFromImages`` call (mean, scale, BGR->RGB and
    the transpose in one C++ pass), for NHWC one colour conversion and one
    scaling pass into a preallocated array. The padding is 0 in the float
    input, as MediaPipe's ``BORDER_ZERO`` pads its tensor (mid grey, not black).
    """

    def __init__(self, input_size: tuple[int, int], batch: int = 1, layout: str = "NHWC") -> None:
        if layout not in ("NHWC", "NCHW"):
            raise InputError(f"layout must be NHWC or NCHW, got {layout!r}")
        if not 1 <= batch <= 256:
            raise InputError(f"batch must be 1..256, got {batch}")
        self.input_size = input_size
        self.layout = layout
        width, height = input_size
        self._canvases = [np.zeros((height, width, 3), np.uint8) for _ in range(batch)]
        self._placed: list[tuple[int, int, int, int]] = [(0, 0, width, height)] * batch
        self._nhwc = np.zeros((batch, height, width, 3), np.float32) if layout == "NHWC" else None
        self._rgb = np.zeros((height, width, 3), np.uint8)

    def fill(self, image: np.ndarray, slot: int = 0) -> Letterbox:
        """Letterbox ``image`` (uint8 HxW or HxWx3 BGR) into slot ``slot``; returns where it went."""
        if image.ndim not in (2, 3) or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
            raise InputError(f"image must be a non-empty uint8 HxW or HxWx3 array, got {image.dtype}{list(image.shape)}")
        width, height = self.input_size
        ih, iw = image.shape[:2]
        scale = min(width / iw, height / ih)
        nw, nh = max(1, min(width, int(round(iw * scale)))), max(1, min(height, int(round(ih * scale))))
        x0, y0 = (width - nw) // 2, (height - nh) // 2
        target = self._canvases[slot][y0:y0 + nh, x0:x0 + nw]
        # Bilinear, as MediaPipe's ImageToTensor samples (INTER_AREA would blur faces differently).
        if image.ndim == 2 or image.shape[2] == 1:
            cv2.cvtColor(cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR, dst=target)
        else:
            cv2.resize(image, (nw, nh), dst=target, interpolation=cv2.INTER_LINEAR)
        self._placed[slot] = (x0, y0, nw, nh)
        # The real scale per axis after rounding: boxes map back to the frame through these.
        return Letterbox(nw / iw, nh / ih, float(x0), float(y0))

    def batch(self, n: int = 1) -> np.ndarray:
        """The model input for the first ``n`` filled slots, ``[n, 3, H, W]`` or ``[n, H, W, 3]``."""
        if self.layout == "NCHW":
            args = (1.0 / 127.5, None, (127.5, 127.5, 127.5), True, False)  # scale, size, mean, swapRB, crop
            out = (cv2.dnn.blobFromImage(self._canvases[0], *args) if n == 1
                   else cv2.dnn.blobFromImages(self._canvases[:n], *args))
            for i, (x0, y0, nw, nh) in enumerate(self._placed[:n]):
                image = out[i]  # [3, H, W]: pads are contiguous rows, and column blocks
                image[:, :y0] = 0.0
                image[:, y0 + nh:] = 0.0
                image[:, :, :x0] = 0.0
                image[:, :, x0 + nw:] = 0.0
            return out
        out = self._nhwc[:n]
        for i, (x0, y0, nw, nh) in enumerate(self._placed[:n]):
            cv2.cvtColor(self._canvases[i], cv2.COLOR_BGR2RGB, dst=self._rgb)
            np.multiply(self._rgb, np.float32(2.0 / 255.0), out=out[i])
            out[i] -= np.float32(1.0)
            image = out[i]
            image[:y0] = 0.0
            image[y0 + nh:] = 0.0
            image[:, :x0] = 0.0
            image[:, x0 + nw:] = 0.0
        return out


@dataclass(frozen=True)
class RawDetection:
    """One decoded face in relative input coordinates: box (xmin, ymin, w, h), score, keypoints ``[k, 2]``."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray


def decode(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray,
           d: BlazeFaceDecoding) -> list[RawDetection]:
    """Boxes above ``min_score_thresh`` from one image's raw outputs, after weighted NMS (best first).

    ``regressors`` is ``[num_anchors, num_coords]`` and ``scores``
    ``[num_anchors]`` or ``[num_anchors, 1]`` (logits), both for one image.
    """
    raw = np.asarray(regressors, np.float32).reshape(-1, d.num_coords)
    logits = np.asarray(scores, np.float32).reshape(-1)
    if raw.shape[0] != d.num_anchors or logits.shape[0] != d.num_anchors:
        raise InputError(f"detector outputs have {raw.shape[0]} boxes and {logits.shape[0]} scores; "
                         f"expected {d.num_anchors} of each")
    clipped = np.clip(logits, -d.score_clipping_thresh, d.score_clipping_thresh)
    prob = 0.5 * (1.0 + np.tanh(0.5 * clipped))  # the sigmoid, without exp's float32 overflow
    keep = np.flatnonzero(prob >= d.min_score_thresh)
    if keep.size == 0:
        return []
    rows, anchor = raw[keep], anchors[keep]
    sx, sy, sw, sh = d.scale
    cx_i, cy_i = (0, 1) if d.reverse_output_order else (1, 0)
    w_i, h_i = (2, 3) if d.reverse_output_order else (3, 2)
    cx = rows[:, cx_i] / sx * anchor[:, 2] + anchor[:, 0]
    cy = rows[:, cy_i] / sy * anchor[:, 3] + anchor[:, 1]
    w = rows[:, w_i] / sw * anchor[:, 2]
    h = rows[:, h_i] / sh * anchor[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    kp = rows[:, 4:].reshape(-1, d.num_keypoints, 2)
    kx = kp[..., 0] / sx * anchor[:, 2:3] + anchor[:, 0:1]
    ky = kp[..., 1] / sy * anchor[:, 3:4] + anchor[:, 1:2]
    keypoints = np.stack([kx, ky], axis=-1)
    return weighted_nms(boxes, prob[keep], keypoints, d.min_suppression_threshold)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y1 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                 threshold: float) -> list[RawDetection]:
    """MediaPipe's WEIGHTED non-maximum suppression: overlapping boxes merge into their score-weighted mean.

    The merged detection keeps the best box's score.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    remaining = np.arange(len(scores))
    out: list[RawDetection] = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining])
        members = remaining[overlap > threshold]
        members = members if members.size else remaining[:1]
        weights = scores[members][:, None]
        total = float(weights.sum())
        box = (boxes[members] * weights).sum(axis=0) / total
        kps = (keypoints[members] * weights[:, :, None]).sum(axis=0) / total
        out.append(RawDetection(box.astype(np.float32), float(scores[best]), kps.astype(np.float32)))
        remaining = remaining[overlap <= threshold]
        if best in remaining:  # a zero-area best box overlaps nothing, not even itself
            remaining = remaining[remaining != best]
    return out
