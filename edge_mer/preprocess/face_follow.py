"""Following a face between detections by template matching (normalised cross-correlation).

A detector with a fixed input (BlazeFace: 128x128) costs the same for a
small search region as for the whole frame, so running it on every frame
is what bounds the face path. Between its runs (``detect_every``), each face
is found again by matching a small grey template of its last detected box
(the inner 80%, 32x32 pixels) against the region around it, scaled the
same way: about 0.1 ms instead of a network call. The template is taken
afresh at every detection, and a match below ``MIN_CORRELATION`` hands the
face back to the detector in that same frame, so a face that turns away or
is covered is not followed onto the background.
"""
from __future__ import annotations

from dataclasses import dataclass

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.preprocess.detection import Detection

TEMPLATE_PX = 32
#: Share of the box's side kept for the template (the border holds background, which moves differently).
INNER = 0.8
#: How far around its last box a face is looked for, as a share of its side (faces move a few px a frame).
SEARCH = 0.3
MIN_CORRELATION = 0.6


@dataclass(frozen=True)
class Template:
    """A face's grey template and the box it was cut from."""

    patch: np.ndarray
    box: tuple[int, int, int, int]


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _inner(box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    x, y, w, h = box
    side = max(1, int(round(min(w, h) * INNER)))
    return int(round(x + (w - side) / 2)), int(round(y + (h - side) / 2)), side


def capture(frame: np.ndarray, box: tuple[int, int, int, int]) -> Template | None:
    """The template of the face at ``box`` in ``frame``, or None when too little of it is inside."""
    x0, y0, side = _inner(box)
    fh, fw = frame.shape[:2]
    if side < 8 or x0 < 0 or y0 < 0 or x0 + side > fw or y0 + side > fh:
        return None
    patch = cv2.resize(_grey(frame[y0:y0 + side, x0:x0 + side]), (TEMPLATE_PX, TEMPLATE_PX),
                       interpolation=cv2.INTER_AREA)
    return Template(patch, box)


def _peak_offset(line: np.ndarray, i: int) -> float:
    """Sub-pixel position of the correlation peak at ``i`` along ``line`` (a parabola through 3 points):
    one template pixel is several frame pixels, so the integer peak alone would jitter the box."""
    if i <= 0 or i >= len(line) - 1:
        return 0.0
    left, mid, right = float(line[i - 1]), float(line[i]), float(line[i + 1])
    curve = left - 2.0 * mid + right
    return 0.0 if curve >= 0 else max(-0.5, min(0.5, 0.5 * (left - right) / curve))


def follow(frame: np.ndarray, template: Template, last: Detection) -> Detection | None:
    """``last`` moved to where ``template`` matches best near it in ``frame``, or None below MIN_CORRELATION."""
    ix, iy, side = _inner(last.box)
    pad = int(round(side * SEARCH))
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, ix - pad), max(0, iy - pad)
    x1, y1 = min(fw, ix + side + pad), min(fh, iy + side + pad)
    if x1 - x0 < side or y1 - y0 < side:
        return None  # at the frame's edge: let the detector decide
    scale = TEMPLATE_PX / side
    size = (max(TEMPLATE_PX, int(round((x1 - x0) * scale))), max(TEMPLATE_PX, int(round((y1 - y0) * scale))))
    region = cv2.resize(_grey(frame[y0:y1, x0:x1]), size, interpolation=cv2.INTER_AREA)
    scores = cv2.matchTemplate(region, template.patch, cv2.TM_CCOEFF_NORMED)
    _, best, _, (mx, my) = cv2.minMaxLoc(scores)
    if not np.isfinite(best) or best < MIN_CORRELATION:
        return None
    fx, fy = mx + _peak_offset(scores[my, :], mx), my + _peak_offset(scores[:, mx], my)
    dx = int(round(x0 + fx / scale)) - ix
    dy = int(round(y0 + fy / scale)) - iy
    x, y, w, h = last.box
    marks = None if last.landmarks is None else tuple((px + dx, py + dy) for px, py in last.landmarks)
    return Detection((x + dx, y + dy, w, h), last.score, marks)
