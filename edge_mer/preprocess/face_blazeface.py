"""BlazeFace (MediaPipe's face detector) on the run's backend, decoded in numpy.

The network is a bundle model (``detectors.blazeface`` in the manifest: file,
sha256, input spec, anchor and decoding options), loaded by
``edge_mer.pipeline.face_models`` on the same backend as the encoders (ONNX
Runtime here, TensorRT on a Jetson) and handed in as a
:class:`~edge_mer.preprocess.detection.DetectorModel`. This module only
letterboxes frames into its input and decodes its outputs
(:mod:`edge_mer.preprocess.blazeface`).

Its input is a fixed 128x128 (192x192 for full range), so a frame of any
size costs the same; the tracker's region search letterboxes each region
straight into the input (no pre-scaling), several regions in one batch when
the model's batch axis allows.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge_mer.errors import ConfigError, InputError
from edge_mer.preprocess.blazeface import (BlazeFaceDecoding, Letterbox, LetterboxBuffer, RawDetection, decode,
                                           ssd_anchors)
from edge_mer.preprocess.detection import Detection, DetectorModel, FaceDetector, Region, check_frame, iou

if TYPE_CHECKING:
    from edge_mer.preprocess.face_detect import FaceDetectorOptions

log = logging.getLogger(__name__)

#: MediaPipe's options for the dense full-range model (``face_detection_full_range.pbtxt``): one 48x48 map.
FULL_RANGE = BlazeFaceDecoding(
    input_size=(192, 192), num_layers=1, strides=(4,), min_scale=0.1484375, max_scale=0.75,
    interpolated_scale_aspect_ratio=0.0, num_anchors=2304, scale=(192.0, 192.0, 192.0, 192.0),
    min_score_thresh=0.6)


class BlazeFaceDetector(FaceDetector):
    """BlazeFace short range (faces within about 2 m): boxes, scores and 6 keypoints."""

    kind = "blazeface"
    # Region search letterboxes a region whose side is ~2x the face into the input: the face fills half of it.
    track_face_px = 64
    needs_network = True
    # A network call costs the same for a region as for the frame: follow by template in between.
    detect_every = 3

    def __init__(self, options: FaceDetectorOptions, network: DetectorModel | None = None) -> None:
        super().__init__(options, network)
        if network is None:
            raise ConfigError(f"the {self.kind} detector runs a network: build it with "
                              "edge_mer.pipeline.face_models.build_detector (it loads the bundle's model)")
        decoding = network.decoding
        if not isinstance(decoding, BlazeFaceDecoding):
            raise ConfigError(f"the {self.kind} detector needs BlazeFace decoding options, got "
                              f"{type(decoding).__name__}")
        if options.score_threshold is not None:
            decoding = dataclasses.replace(decoding, min_score_thresh=options.score_threshold)
        if options.nms_threshold is not None:
            decoding = dataclasses.replace(decoding, min_suppression_threshold=options.nms_threshold)
        self.decoding = decoding
        self.anchors = ssd_anchors(decoding)
        self._buffers: dict[int, LetterboxBuffer] = {}
        self._empty = 0  # whole-frame passes in a row that found nothing
        self._regressors: str | None = None
        self._scores: str | None = None

    @property
    def face_scale(self) -> float:
        return self.decoding.face_scale

    @property
    def face_shift(self) -> float:
        return self.decoding.face_shift

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """All faces in ``frame``: letterboxed whole into the input (``detect_width`` does not apply), and,
        when that finds none, in overlapping tiles every ``tile_every``-th time (see FaceDetectorOptions)."""
        check_frame(frame)
        found = self._run([frame])[0]
        self._empty = 0 if found else self._empty + 1
        every = self.options.tile_every
        if not found and every and (self._empty - 1) % every == 0:
            # Only when the whole frame shows nothing: tiles every time find more background shapes too
            # (measured on a validation face video: 93% of frames on the true face against 99.7%).
            tiled = [d for faces in self.search(frame, _tiles(frame.shape), 0) for d in faces]
            found = _merge(tiled, self.decoding.min_suppression_threshold)
        return [d for d in found if min(d.box[2], d.box[3]) >= self.options.min_size]

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        return self._run([frame])[0]

    def search(self, frame: np.ndarray, regions: Sequence[Region], face_px: int) -> list[list[Detection]]:
        """Faces in each region, the regions letterboxed straight into the input (batched when possible)."""
        views = [frame[r.y0:r.y1, r.x0:r.x1] for r in regions]
        found = self._run(views)
        return [[_shift(d, r.x0, r.y0) for d in faces] for faces, r in zip(found, regions)]

    def _buffer(self, batch: int) -> LetterboxBuffer:
        buffer = self._buffers.get(batch)
        if buffer is None:
            buffer = self._buffers[batch] = LetterboxBuffer(self.decoding.input_size, batch, self.network.layout)
        return buffer

    def _run(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections for each image, in that image's pixel coordinates."""
        network: DetectorModel = self.network  # type: ignore[assignment]  # checked in __init__
        out: list[list[Detection]] = []
        step = max(1, network.max_batch)
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            buffer = self._buffer(len(chunk))
            boxes = [buffer.fill(image, slot) for slot, image in enumerate(chunk)]
            outputs = network.infer({network.input_name: buffer.batch(len(chunk))})
            regressors, scores = self._outputs(outputs)
            for slot, (image, letterbox) in enumerate(zip(chunk, boxes)):
                raw = decode(regressors[slot], scores[slot], self.anchors, self.decoding)
                out.append([self._to_image(r, letterbox, image.shape) for r in raw])
        return out

    def _outputs(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The regressors ``[n, anchors, coords]`` and score logits ``[n, anchors, 1]``, found by shape once."""
        if self._regressors is None:
            coords = self.decoding.num_coords
            by_last = {name: np.shape(v)[-1] for name, v in outputs.items() if np.ndim(v) == 3}
            self._regressors = next((n for n, last in by_last.items() if last == coords), None)
            self._scores = next((n for n, last in by_last.items() if last == 1), None)
            if self._regressors is None or self._scores is None:
                shapes = {n: list(np.shape(v)) for n, v in outputs.items()}
                raise InputError(f"detector outputs {shapes}: expected [n, {self.decoding.num_anchors}, {coords}] "
                                 f"boxes and [n, {self.decoding.num_anchors}, 1] scores")
        return outputs[self._regressors], outputs[self._scores]

    def _to_image(self, raw: RawDetection, letterbox: Letterbox, shape: tuple[int, ...]) -> Detection:
        size = self.decoding.input_size
        xmin, ymin, w, h = raw.box
        corners = letterbox.to_frame(np.array([[xmin, ymin], [xmin + w, ymin + h]], np.float32), size)
        ih, iw = shape[:2]
        x0, y0 = np.clip(corners[0], 0, (iw, ih))
        x1, y1 = np.clip(corners[1], 0, (iw, ih))
        marks = letterbox.to_frame(raw.keypoints, size)
        box = (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
        return Detection(box, raw.score, tuple((float(x), float(y)) for x, y in marks))


class BlazeFaceFullDetector(BlazeFaceDetector):
    """BlazeFace full range (faces up to about 5 m), from a model file the user converts (``training/blazeface.py``)."""

    kind = "blazeface_full"
    needs_model = True
    model_hint = "the dense full-range BlazeFace .onnx that `python training/blazeface.py --variant full` writes"


def _tiles(shape: tuple[int, ...]) -> list[Region]:
    """Six square tiles, side two thirds of the short side, overlapping by half a tile (3 x 2 on landscape)."""
    h, w = shape[:2]
    side = max(16, (2 * min(h, w)) // 3)
    xs = sorted({0, (w - side) // 2, max(0, w - side)})
    ys = sorted({0, max(0, h - side)})
    return [Region(x, y, min(w, x + side), min(h, y + side), side // 4) for y in ys for x in xs]


def _merge(found: list[Detection], threshold: float) -> list[Detection]:
    """One box per face from overlapping tiles: the best-scoring one of each overlapping group."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: -d.score):
        if all(iou(d.box, k.box) <= threshold for k in kept):
            kept.append(d)
    return kept


def _shift(d: Detection, x0: int, y0: int) -> Detection:
    x, y, w, h = d.box
    marks = None if d.landmarks is None else tuple((px + x0, py + y0) for px, py in d.landmarks)
    return Detection((x + x0, y + y0, w, h), d.score, marks)
