"""The face path per video frame on one core: detection (or tracking), crop and the face encoder.

Frames are decoded outside the timed region (decoding is the camera's or the
codec's cost, reported separately by the pipeline benchmark). Several
detector configurations can be timed on the same frames in one run, so the
speed-up of an optimisation is a ratio measured under identical conditions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.backends.options import BackendOptions, OrtOptions
from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bundle.feeds import feed_ranges
from edge_mer.bench.latency import summarize
from edge_mer.bundle.loader import Bundle
from edge_mer.errors import EdgeMerError, SensorError
from edge_mer.preprocess.face import FacePreprocessor
from edge_mer.pipeline.face_models import build_detector
from edge_mer.preprocess.face_detect import FaceDetectorOptions

log = logging.getLogger(__name__)

#: Frames decoded ahead and shared by every variant (bounded memory: 64 x 640x480x3 = 59 MB).
_CHUNK = 64


@contextlib.contextmanager
def one_core(cpu: int | None = None) -> Iterator[int | None]:
    """Pin the calling thread to one CPU and OpenCV to one thread for the ``with`` block; yields the CPU.

    Where affinity cannot be set (not Linux), yields None and only limits OpenCV's threads.
    """
    import cv2

    threads = cv2.getNumThreads()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    chosen = None
    try:
        cv2.setNumThreads(1)
        if before:
            chosen = cpu if cpu is not None else max(before)
            if chosen not in before:
                raise EdgeMerError(f"cpu {chosen} is not available to this process (allowed: {sorted(before)})")
            os.sched_setaffinity(0, {chosen})
        yield chosen
    finally:
        if before:
            os.sched_setaffinity(0, before)
        cv2.setNumThreads(threads)


def _frames(video: Path, limit: int) -> Iterator[list[np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SensorError(f"video {video}: OpenCV cannot open it")
    try:
        count = 0
        while not limit or count < limit:
            chunk = []
            while len(chunk) < _CHUNK and (not limit or count < limit):
                ok, frame = cap.read()
                if not ok:
                    break
                chunk.append(frame)
                count += 1
            if not chunk:
                return
            yield chunk
    finally:
        cap.release()


@dataclasses.dataclass
class _Variant:
    label: str
    options: FaceDetectorOptions
    preprocessor: FacePreprocessor
    times_ms: list[float] = dataclasses.field(default_factory=list)
    found: int = 0


def bench_face_path(video: Path, bundle: Bundle, variants: Sequence[tuple[str, FaceDetectorOptions]], *,
                    encoder: str = "face", precision: str = "fp32", backend: str = "auto", max_frames: int = 0,
                    cpu: int | None = None, align: bool = True, max_faces: int = 1) -> dict[str, Any]:
    """Time detection + crop + encoder (batch 1) per frame of ``video`` for each ``(label, options)``.

    Returns ``{"video", "frames", "cpu", "variants": {label: {"fps", "found_ratio", "frame_ms": {...}, ...}}}``;
    ``fps`` is frames over the summed per-frame time. ONNX Runtime runs with one intra- and inter-op thread.
    """
    if not Path(video).is_file():
        raise SensorError(f"face-path video {video} does not exist; expected a video file")
    spec = bundle.encoder(encoder)
    options = BackendOptions(name=resolve_backend_name(backend),
                             onnxruntime=OrtOptions(intra_op_threads=1, inter_op_threads=1))
    input_name, frames = spec.inputs[0].name, 0
    with contextlib.ExitStack() as stack:
        runs = []
        for label, opts in variants:
            detector = build_detector(opts, bundle, options)
            stack.callback(detector.close)
            runs.append(_Variant(label, opts, FacePreprocessor(spec.preprocessing, detector, align=align,
                                                               max_faces=max_faces)))
        ref = dataclasses.replace(bundle.model_ref(encoder, precision),
                                  dim_ranges=feed_ranges(spec.inputs, batch=(1, 1, max_faces)))
        model = stack.enter_context(create_backend(ref, options))
        core = stack.enter_context(one_core(cpu))
        warm = np.zeros(spec.preprocessing.input_shape(1), dtype=np.float32)
        for _ in range(5):  # first calls allocate: not part of any variant's time
            model.infer({input_name: warm})
        for chunk in _frames(Path(video), max_frames):
            frames += len(chunk)
            for variant in runs:
                _time_chunk(variant, chunk, model, input_name)
    if frames == 0:
        raise SensorError(f"face-path video {video} has no readable frames")
    return {"video": str(video), "frames": frames, "cpu": core, "encoder": encoder, "precision": precision,
            "variants": {v.label: _variant_result(v, frames) for v in runs}}


def _time_chunk(variant: _Variant, chunk: list[np.ndarray], model: Any, input_name: str) -> None:
    pre = variant.preprocessor
    for frame in chunk:
        started = time.perf_counter_ns()
        faces = pre.find_all(frame)
        if faces:
            # Every face of the frame in one encoder batch, as the face runner does.
            model.infer({input_name: pre.prepare([frame] * len(faces), [f.detection for f in faces])})
            variant.found += 1
        variant.times_ms.append((time.perf_counter_ns() - started) / 1e6)


def pre_network(pre: FacePreprocessor) -> str | None:
    """What the detector's network is and where it ran, or None for detectors without one."""
    network = pre.detector.network
    return None if network is None else network.description


def _variant_result(v: _Variant, frames: int) -> dict[str, Any]:
    total_s = sum(v.times_ms) / 1e3
    d = v.options
    return {"fps": round(frames / total_s, 1) if total_s > 0 else None,
            "found_ratio": round(v.found / frames, 4),
            "frame_ms": summarize(v.times_ms),
            "detector": {"kind": d.kind, "detect_width": d.detect_width, "track": d.track,
                         "redetect_every": d.redetect_every,
                         "model": pre_network(v.preprocessor)},
            "full_detections": v.preprocessor.tracker.full_detections,
            "region_searches": v.preprocessor.tracker.region_searches,
            "template_matches": v.preprocessor.tracker.template_matches}
