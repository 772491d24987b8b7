"""``edge-mer bench``: its configuration and the order of its measurements.

The pipeline runs first, so its peak RSS is the daemon's own footprint and
not that of the encoder sweep; then every encoder at every precision; then
every fusion rule's per-tick cost and every shipped fusion head at every
precision it ships; then the face path on one core. ``compare`` adds, in the same run, the
configurations the optimisations replaced (timer ticks, full-frame detection
on every frame), so before/after figures are ratios under one set of
conditions.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import resolve_backend_name
from edge_mer.bench.encoders import bench_encoders
from edge_mer.bench.face_path import bench_face_path
from edge_mer.bench.fusion import bench_heads, bench_rules
from edge_mer.bench.host import host_info
from edge_mer.bench.pipeline import bench_pipeline
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.precision import resolve_precision
from edge_mer.config import require, to_dict
from edge_mer.errors import ConfigError
from edge_mer.names import PRECISIONS, PrecisionChoice
from edge_mer.pipeline.config import FaceConfig, RunConfig
from edge_mer.preprocess.face_detect import FaceDetectorOptions
from edge_mer.sessions.format import demo_session_path

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BenchConfig:
    """What ``edge-mer bench`` measures and how; every field has a flag of the same meaning.

    ``session`` (default: the packaged demo session) is replayed in real time
    with decisions at ``rate_hz``; ``duration_s`` 0 replays it to the end.
    ``face_video`` (default: the session's video) feeds the face path,
    ``face_frames`` 0 meaning every frame; ``cpu`` is the core it is pinned to
    (default: the highest-numbered allowed core). ``fusion`` times every fusion
    rule's ``fuse()`` and every shipped head (at ``precisions`` when given, else
    every precision it ships) with ``warmup`` and ``iterations``.
    """

    bundle: Path | None = None
    backend: BackendOptions = field(default_factory=BackendOptions)
    precisions: tuple[str, ...] = ()  # checked against PRECISIONS below, naming the bad one
    precision: PrecisionChoice = "auto"
    iterations: int = 200
    warmup: int = 20
    batch: int = 8
    session: Path | None = None
    duration_s: float = 0.0
    rate_hz: float = 10.0
    warmup_s: float = 1.0
    face_detector: FaceDetectorOptions = field(default_factory=FaceDetectorOptions)
    face_video: Path | None = None
    face_frames: int = 0
    cpu: int | None = None
    compare: bool = False
    encoders: bool = True
    pipeline: bool = True
    face_path: bool = True
    fusion: bool = True
    json: Path | None = None
    markdown: Path | None = None

    def __post_init__(self) -> None:
        for p in self.precisions:
            require(p in PRECISIONS, f"precisions: {p!r} is not one of {', '.join(PRECISIONS)}")
        require(self.iterations >= 10, f"iterations must be >= 10 (percentiles need samples), got {self.iterations}")
        require(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        require(self.batch >= 1, f"batch must be >= 1, got {self.batch}")
        require(math.isfinite(self.duration_s) and self.duration_s >= 0,
                f"duration_s must be a finite number >= 0 (0 = the whole session), got {self.duration_s}")
        require(0.1 <= self.rate_hz <= 100.0, f"rate_hz must be in 0.1..100, got {self.rate_hz}")
        require(math.isfinite(self.warmup_s) and self.warmup_s >= 0,
                f"warmup_s must be a finite number >= 0, got {self.warmup_s}")
        require(not self.duration_s or self.warmup_s < self.duration_s,
                f"warmup_s ({self.warmup_s}) must be shorter than duration_s ({self.duration_s})")
        require(self.face_frames >= 0, f"face_frames must be >= 0 (0 = every frame), got {self.face_frames}")
        require(self.cpu is None or self.cpu >= 0, f"cpu must be a CPU number >= 0, got {self.cpu}")
        require(self.encoders or self.pipeline or self.face_path or self.fusion,
                "nothing to measure: every part is switched off")


def _before(options: FaceDetectorOptions) -> FaceDetectorOptions:
    """The face detection the optimisations replaced: the whole frame at full size, every frame."""
    return dataclasses.replace(options, detect_width=0, track=False)


def _run_config(config: BenchConfig, session: Path, *, optimised: bool) -> RunConfig:
    """The pipeline as configured, or (``optimised`` False) with every optimisation that is a setting undone:
    timer ticks, full-frame full-size detection on every processed frame, EEG features on every tick, the
    BLAS library's and ONNX Runtime's default thread pools."""
    run = RunConfig(rate_hz=config.rate_hz, precision=config.precision, bundle=config.bundle,
                    duration_s=config.duration_s, replay=session, backend=config.backend,
                    face=FaceConfig(detector=config.face_detector))
    if optimised:
        return run
    ort = dataclasses.replace(config.backend.onnxruntime, intra_op_threads=0)
    return dataclasses.replace(run, align_ticks=False, numpy_threads=0,
                               backend=dataclasses.replace(config.backend, onnxruntime=ort),
                               face=FaceConfig(detector=_before(config.face_detector)),
                               eeg=dataclasses.replace(run.eeg, hop_s=0.0))


def _session_video(session: Path) -> Path:
    from edge_mer.sessions.format import load_session

    video = load_session(session).path("video")
    if video is None:
        raise ConfigError(f"session {session} has no video; give the face path one with --face-video")
    return video


def _face_path(config: BenchConfig, bundle: Bundle, session: Path) -> dict[str, Any]:
    backend = resolve_backend_name(config.backend.name)
    precision = resolve_precision("face", bundle.encoder("face"), config.precision, backend)
    variants = [("edge-mer", config.face_detector)]
    if config.compare:
        variants += [("no tracking", dataclasses.replace(config.face_detector, track=False)),
                     ("full frame, no tracking", _before(config.face_detector))]
    result = bench_face_path(config.face_video or _session_video(session), bundle, variants, precision=precision,
                             backend=backend, max_frames=config.face_frames, cpu=config.cpu)
    main = result["variants"]["edge-mer"]
    return {"fps": main["fps"], "found_ratio": main["found_ratio"], "detector": main["detector"], **result}


def _check_inputs(config: BenchConfig, session: Path) -> None:
    """Fail in the first second, not after minutes of measuring, on inputs that cannot work."""
    from edge_mer.sessions.format import load_session

    if config.pipeline or (config.face_path and config.face_video is None):
        load_session(session)
    if config.face_path:
        video = config.face_video or _session_video(session)
        if not Path(video).is_file():
            raise ConfigError(f"face_video {video} does not exist; expected a video file")
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if config.face_path and config.cpu is not None and allowed is not None and config.cpu not in allowed:
        raise ConfigError(f"cpu {config.cpu} is not available to this process (allowed: {allowed})")


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Every measurement ``config`` asks for, as one JSON-ready dict (see the README for its keys)."""
    bundle = load_bundle(config.bundle or default_bundle_path())
    session = config.session or demo_session_path()
    backend = resolve_backend_name(config.backend.name)
    _check_inputs(config, session)
    result: dict[str, Any] = {"host": {**host_info(), "backend": backend}, "bundle": bundle.manifest.name,
                              "config": to_dict(config)}
    if config.pipeline:
        log.info("pipeline: replaying %s in real time at %g decisions/s", session, config.rate_hz)
        result["pipeline"] = bench_pipeline(_run_config(config, session, optimised=True), bundle,
                                            warmup_s=config.warmup_s)
        if config.compare:
            log.info("pipeline, before the optimisations: timer ticks, full-frame detection on every frame")
            result["pipeline_before"] = bench_pipeline(_run_config(config, session, optimised=False), bundle,
                                                       warmup_s=config.warmup_s)
    if config.encoders:
        result["encoders"] = bench_encoders(bundle, config.backend, config.precisions, batch=config.batch,
                                            warmup=config.warmup, iterations=config.iterations)
        if config.compare and backend == "onnxruntime":
            # ONNX Runtime's own thread choice (one per core), against the configured count above.
            pooled = dataclasses.replace(config.backend, onnxruntime=dataclasses.replace(
                config.backend.onnxruntime, intra_op_threads=0))
            result["encoders_default_threads"] = bench_encoders(
                bundle, pooled, ("fp32",), batch=config.batch, warmup=config.warmup, iterations=config.iterations)
    if config.fusion:
        result["fusion_rules"] = bench_rules(bundle, config.backend, warmup=config.warmup,
                                             iterations=config.iterations)
        result["fusion_heads"] = bench_heads(bundle, config.backend, config.precisions, warmup=config.warmup,
                                             iterations=config.iterations)
    if config.face_path:
        log.info("face path on one core")
        result["face_path"] = _face_path(config, bundle, session)
    return result
