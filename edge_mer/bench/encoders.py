"""Encoder latency and throughput per precision, at batch 1 and at a larger batch.

Inputs are real preprocessing outputs (a random face crop through the face
preprocessing, two seconds of noise through the log-mel front end, a random
EEG window through the band features), so shapes and value ranges are the
ones the daemon feeds.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bench.latency import summarize, time_infer
from edge_mer.bundle.feeds import feed_ranges
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import BackendError
from edge_mer.names import Modality
from edge_mer.pipeline.feeds import speech_frames
from edge_mer.preprocess.audio import AudioParams, AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import EegParams, EegPreprocessor
from edge_mer.preprocess.face import FaceParams, prepare_crops

log = logging.getLogger(__name__)

EXAMPLE_SPEECH_S = 2.0  # the speech window of the default run configuration


def _face_example(params: FaceParams, rng: np.random.Generator) -> np.ndarray | Invalid:
    return prepare_crops([rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)], params)[0]


def _speech_example(params: AudioParams, rng: np.random.Generator) -> np.ndarray | Invalid:
    audio = (0.1 * rng.standard_normal(int(EXAMPLE_SPEECH_S * params.sample_rate))).astype(np.float32)
    return AudioPreprocessor(params).process(audio, params.sample_rate)


def _eeg_example(params: EegParams, rng: np.random.Generator) -> np.ndarray | Invalid:
    window = 20.0 * rng.standard_normal((len(params.channels), int(params.window_s * params.sample_rate)))
    return EegPreprocessor(params).process(window, params.channels, params.sample_rate)


#: Modality -> one window's encoder input made by the runtime preprocessing from random data.
EXAMPLES: dict[Modality, Callable[[Any, np.random.Generator], np.ndarray | Invalid]] = {
    "face": _face_example,
    "speech": _speech_example,
    "eeg": _eeg_example,
}


def example_features(spec: EncoderSpec, rng: np.random.Generator) -> np.ndarray:
    """One window's encoder input (no batch axis), made by the runtime preprocessing from random data."""
    features = EXAMPLES[spec.modality](spec.preprocessing, rng)
    if isinstance(features, Invalid):
        raise BackendError(f"cannot make an example input for encoder {spec.modality}: {features.reason}")
    return features


def _stats(samples: np.ndarray, batch: int) -> dict[str, Any]:
    s = summarize(samples)
    return {"batch": batch, "p50_ms": s["p50"], "p95_ms": s["p95"], "p99_ms": s["p99"], "max_ms": s["max"],
            "mean_ms": s["mean"], "iterations": s["n"],
            "throughput_per_s": round(batch * 1000.0 / s["mean"], 1) if s["mean"] > 0 else None}


def wanted_precisions(spec: EncoderSpec, requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The precisions to time for ``spec`` and, for requested ones it cannot run, why."""
    passed = [p for p in spec.models if p == "fp32" or (p in spec.precisions and spec.precisions[p].passed)]
    if not requested:
        return passed, {}
    skipped = {}
    for p in requested:
        if p not in spec.models:
            skipped[p] = f"no {p} model in the bundle"
        elif p not in passed:
            skipped[p] = f"{p} failed its export gate"
    return [p for p in requested if p in passed], skipped


def bench_encoder(bundle: Bundle, name: str, precision: str, options: BackendOptions, *, batch: int,
                  warmup: int, iterations: int, seed: int = 0) -> dict[str, Any]:
    """Latency summary of encoder ``name`` at ``precision``: batch 1 at the top level, ``batch`` under ``larger``."""
    spec = bundle.encoder(name)
    features = example_features(spec, np.random.default_rng(seed)).astype(np.float32)
    input_name = spec.inputs[0].name
    # The profile holds what this bench feeds: batch 1 and ``batch``, windows of EXAMPLE_SPEECH_S.
    frames = speech_frames(spec.preprocessing, EXAMPLE_SPEECH_S) if spec.modality == "speech" else None
    ref = dataclasses.replace(bundle.model_ref(name, precision),
                              dim_ranges=feed_ranges(spec.inputs, batch=(1, 1, max(1, batch)), frames=frames))
    with create_backend(ref, options) as backend:
        result = _stats(time_infer(backend, {input_name: features[None]}, warmup=warmup, iterations=iterations), 1)
        if batch > 1:
            feeds = {input_name: np.repeat(features[None], batch, axis=0)}
            larger = time_infer(backend, feeds, warmup=max(1, warmup // 4), iterations=max(1, iterations // 4))
            result["larger"] = _stats(larger, batch)
        result["backend"] = backend.name
    return result


def bench_encoders(bundle: Bundle, options: BackendOptions, precisions: Sequence[str], *, batch: int, warmup: int,
                   iterations: int) -> dict[str, dict[str, Any]]:
    """``{encoder: {precision: summary}}`` for every encoder in the bundle (skipped precisions say why)."""
    options = dataclasses.replace(options, name=resolve_backend_name(options.name))
    out: dict[str, dict[str, Any]] = {}
    for name, spec in bundle.manifest.encoders.items():
        run, skipped = wanted_precisions(spec, precisions)
        out[name] = {p: {"skipped": why} for p, why in skipped.items()}
        for precision in run:
            log.info("timing encoder %s at %s", name, precision)
            out[name][precision] = bench_encoder(bundle, name, precision, options, batch=batch, warmup=warmup,
                                                 iterations=iterations)
    return out
