"""Building a run from its configuration: encoders and runners per modality, fusion, sources."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import BundleError, ConfigError
from edge_mer.fusion.rules import FusionRule, create_rule
from edge_mer.fusion.smoothing import EmaSmoother
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.runners import EegRunner, FaceRunner, ModalityRunner, SpeechRunner
from edge_mer.preprocess.face_detect import create_detector
from edge_mer.sources.base import Source, StreamInfo
from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)


#: On TensorRT, host CPU timings say nothing about the GPU: prefer the lowest precision that passed.
_TRT_PREFERENCE = ("int8", "fp16", "fp32")


def resolve_precision(name: str, spec: EncoderSpec, requested: str, backend: str) -> str:
    """The precision to run ``spec`` at on ``backend``.

    ``auto`` picks, among precisions that passed the export gate (fp32 always
    counts), the one with the lowest measured CPU latency for ONNX Runtime (so
    INT8 is never chosen where it measured slower than FP32), and the lowest
    passed precision for TensorRT. A bundle without gate results runs fp32.
    Asking for a precision the bundle lacks, or one that failed its gate, is
    a one-line error.
    """
    reports = spec.precisions
    if requested == "auto":
        passed = [p for p in spec.models if p == "fp32" or (p in reports and reports[p].passed)]
        if backend == "tensorrt":
            return next(p for p in _TRT_PREFERENCE if p in passed)
        timed = [p for p in passed if p in reports and reports[p].cpu_latency_ms is not None]
        return min(timed, key=lambda p: reports[p].cpu_latency_ms) if timed else "fp32"
    if requested in reports and not reports[requested].passed:
        raise BundleError(f"encoder {name!r}: {requested} failed its export gate ({reports[requested].reason}); "
                          "choose another --precision or auto")
    if requested not in spec.models:
        have = ", ".join(spec.models)
        raise BundleError(f"encoder {name!r} has no {requested} model in this bundle (has: {have}); "
                          "export one with edge-mer export or choose --precision auto")
    return requested


def choose_eeg_encoder(bundle: Bundle, channel_names: tuple[str, ...], requested: str) -> str:
    """``requested``, or for ``auto`` the bundle's EEG encoder with the most channels the board has."""
    have = {n.lower() for n in channel_names}
    if requested != "auto":
        bundle.encoder(requested)
        return requested
    fitting = [(len(spec.preprocessing.channels), name) for name, spec in bundle.manifest.encoders.items()
               if spec.modality == "eeg" and all(c.lower() in have for c in spec.preprocessing.channels)]
    if not fitting:
        raise ConfigError(f"no EEG encoder in bundle {bundle.manifest.name} fits this board's channels "
                          f"({' '.join(channel_names)}); set eeg.encoder or use a board with its montage")
    return max(fitting)[1]


def build_runner(modality: str, config: RunConfig, bundle: Bundle, info: StreamInfo,
                 timings: StageTimes | None = None) -> ModalityRunner:
    """The runner for one opened source, with its encoder's backend loaded; stage times go to ``timings``."""
    if modality == "eeg":
        name = choose_eeg_encoder(bundle, info.channel_names, config.eeg.encoder)
    else:
        name = config.face.encoder if modality == "face" else config.speech.encoder
    spec = bundle.encoder(name)
    if spec.modality != modality:
        raise ConfigError(f"encoder {name!r} is a {spec.modality} encoder, not {modality}")
    backend_name = resolve_backend_name(config.backend.name)
    precision = resolve_precision(name, spec, config.precision, backend_name)
    options = dataclasses.replace(config.backend, name=backend_name)
    backend = create_backend(bundle.model_ref(name, precision), options).load()
    log.info("%s: encoder %s (%s) on %s", modality, name, precision, backend.name)
    if modality == "face":
        c = config.face
        return FaceRunner(name, spec, backend, create_detector(c.detector), c.window_s, c.stale_s, c.max_frames,
                          timings=timings)
    if modality == "speech":
        c = config.speech
        return SpeechRunner(name, spec, backend, info.rate, c.window_s, c.stale_s, timings=timings)
    c = config.eeg
    return EegRunner(name, spec, backend, info.rate, info.channel_names, c.window_s, c.stale_s, c.notch_hz,
                     c.max_abs_uv, timings=timings, hop_s=c.hop_s)


def build_fusion(config: RunConfig, bundle: Bundle, encoders: list[str]) -> tuple[FusionRule, dict[str, float],
                                                                                  EmaSmoother]:
    """The fusion rule, per-encoder weights and smoother: the bundle's, overridden by ``config.fusion``."""
    spec = bundle.manifest.fusion
    rule_name = config.fusion.rule or spec.rule
    weights: Mapping[str, float] = config.fusion.weights or spec.weights
    unknown = sorted(set(config.fusion.weights) - set(bundle.manifest.encoders))
    if unknown:
        raise ConfigError(f"fusion.weights names {unknown[0]!r}, which is not an encoder of bundle "
                          f"{bundle.manifest.name} ({', '.join(bundle.manifest.encoders)})")
    if not weights:
        weights = {name: 1.0 for name in encoders}  # a bundle without weights: every encoder counts equally
    rule = create_rule(rule_name, bundle=bundle, precision=config.precision, backend_options=config.backend)
    half_life = spec.smoothing_half_life_s if config.fusion.half_life_s is None else config.fusion.half_life_s
    return rule, {name: float(weights.get(name, 0.0)) for name in encoders}, EmaSmoother(half_life)


def live_sources(config: RunConfig) -> dict[str, Source]:
    """Unopened sensor sources for the enabled modalities (camera, microphone or WAV file, BrainFlow board)."""
    from edge_mer.sources.camera import CameraSource
    from edge_mer.sources.eeg_board import BoardSource
    from edge_mer.sources.microphone import speech_source

    sources: dict[str, Source] = {}
    if config.face.enabled:
        sources["face"] = CameraSource(config.face.camera)
    if config.speech.enabled:
        sources["speech"] = speech_source(config.speech.microphone)
    if config.eeg.enabled:
        sources["eeg"] = BoardSource(config.eeg.board)
    return sources
