"""The face runner: every tracked face per frame through the encoder, the primary one into fusion.

Frames are detected, cropped and encoded as they arrive (in the source's
thread, through :meth:`FaceRunner.on_chunk`), at most one every ``window_s /
max_frames`` seconds, all faces of a frame in one encoder batch; a tick only
averages the results inside its window. So the per-frame work, an
occasional full-frame detection included, is never on a decision's critical
path, and each frame is paid for once however many overlapping windows
contain it.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.names import ReasonCode
from edge_mer.pipeline.buffers import FrameBuffer
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.face_models import build_detector
from edge_mer.pipeline.runner_base import ModalityRunner
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.detection import FaceDetector
from edge_mer.preprocess.face import FacePreprocessor
from edge_mer.preprocess.face_track import Primary
from edge_mer.results import FaceResult, ModalityResult
from edge_mer.sources.base import Chunk, StreamInfo
from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FrameFaces:
    """One processed frame: each found face's box and encoder row by id, the primary id, and lost faces."""

    t_ns: int
    boxes: dict[int, Box] = field(default_factory=dict)
    rows: dict[int, np.ndarray] = field(default_factory=dict)
    primary: int | None = None
    lost: dict[int, Box] = field(default_factory=dict)
    #: Set when the frame failed as a whole (model error); then there are no rows.
    error: Invalid | None = None


class FaceRunner(ModalityRunner):
    """Face evidence of the last ``window_s`` seconds: up to ``max_frames`` frames, up to ``max_faces`` each."""

    modality = "face"

    @classmethod
    def from_config(cls, name: str, spec: EncoderSpec, backend: Backend, config: RunConfig, info: StreamInfo,
                    timings: StageTimes | None = None, bundle: Bundle | None = None) -> FaceRunner:
        c = config.face
        detector = build_detector(c.detector, bundle, config.backend)
        try:
            return cls(name, spec, backend, detector, c.window_s, c.stale_s, c.max_frames, timings=timings,
                       max_faces=c.max_faces, primary=c.primary, align=c.align)
        except BaseException:
            detector.close()
            raise

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, detector: FaceDetector,
                 window_s: float, stale_s: float, max_frames: int, capacity: int = 2,
                 timings: StageTimes | None = None, max_faces: int = 1, primary: Primary = "largest",
                 align: bool = True) -> None:
        super().__init__(name, spec, backend, window_s, stale_s, timings)
        self.buffer = FrameBuffer(capacity)  # frames are processed on arrival: only the newest's time is read
        self.max_frames = max_frames
        self.detector = detector
        self.preprocessor = FacePreprocessor(spec.preprocessing, detector, self.timings, align=align,
                                             max_faces=max_faces, primary=primary)
        # 10% slack: a 30 fps camera's frames 100 ms apart must not miss the 0.1 s spacing by jitter.
        self._spacing_ns = int(0.9e9 * window_s / max_frames)
        self._last_ns: int | None = None
        self._results: deque[FrameFaces] = deque(maxlen=4 * max_frames)
        self._lock = threading.Lock()
        self._faces: tuple[FaceResult, ...] = ()

    def close(self) -> None:
        """Release the encoder's and the detector's backends."""
        try:
            super().close()
        finally:
            self.detector.close()

    def on_chunk(self, chunk: Chunk) -> None:
        """Process ``chunk``'s frame if it is due (called after it entered the buffer)."""
        if self._last_ns is not None and chunk.t_ns - self._last_ns < self._spacing_ns:
            return
        self._last_ns = chunk.t_ns
        try:
            result = self._process(chunk.t_ns, chunk.data)
        except Exception as exc:  # noqa: BLE001 - one bad frame (cv2.error included) costs that frame, not the camera
            log.warning("%s: frame at %d ns failed: %s: %s", self.name, chunk.t_ns, type(exc).__name__, exc)
            result = FrameFaces(chunk.t_ns, error=Invalid(ReasonCode.MODEL_ERROR, f"error: {exc}"))
        with self._lock:
            self._results.append(result)

    def _process(self, t_ns: int, frame: np.ndarray) -> FrameFaces:
        faces = self.preprocessor.find_all(frame)
        tracker = self.preprocessor.tracker
        lost = {f.id: f.box for f in tracker.lost}
        if not faces:
            return FrameFaces(t_ns, lost=lost)
        # One batch for every face of the frame: one encoder call however many people are in view.
        probs = self._infer(self.preprocessor.prepare([frame] * len(faces), [f.detection for f in faces]))
        return FrameFaces(t_ns, {f.id: f.box for f in faces}, {f.id: probs[i] for i, f in enumerate(faces)},
                          tracker.primary_id, lost)

    def _evidence(self, now_ns: int, newest_ns: int) -> tuple[np.ndarray | Invalid, int]:
        start = now_ns - int(self.window_s * 1e9)
        with self._lock:
            # The spacing's slack can let one frame more than max_frames into a window: keep the newest.
            inside = [r for r in self._results if start < r.t_ns <= now_ns][-self.max_frames:]
        self._faces = self._per_face(inside)
        if not inside:
            return Invalid(ReasonCode.NO_FRAMES), newest_ns
        primary = next((r.primary for r in reversed(inside) if r.primary is not None), None)
        rows = [r.rows[primary] for r in inside if primary in r.rows]
        if rows:
            return np.stack(rows), inside[-1].t_ns
        newest = inside[-1]
        return (newest.error or Invalid(ReasonCode.NO_FACE)), newest.t_ns

    def _per_face(self, inside: list[FrameFaces]) -> tuple[FaceResult, ...]:
        """Each face of the newest frame (found or kept while lost) with its evidence over the window."""
        if not inside:
            return ()
        newest = inside[-1]
        out = []
        for face_id, box in sorted(newest.boxes.items()):
            rows = np.stack([r.rows[face_id] for r in inside if face_id in r.rows])
            out.append(FaceResult(face_id, box, True, self.canonical(rows), primary=face_id == newest.primary))
        for face_id, box in sorted(newest.lost.items()):
            out.append(FaceResult(face_id, box, False, reason=ReasonCode.FACE_LOST.text, code=ReasonCode.FACE_LOST))
        return tuple(out)

    def _finish(self, result: ModalityResult) -> ModalityResult:
        faces, self._faces = self._faces, ()
        if not faces:
            return result
        return dataclasses.replace(result, faces=faces)
