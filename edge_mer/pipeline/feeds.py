"""The sizes a run feeds each encoder's dynamic axes, derived from its configuration.

TensorRT builds an engine for one (min, opt, max) range per dynamic axis.
The pipeline knows those ranges, so no user has to write them: the face
encoder gets one crop per followed face (``face.max_faces``), the speech
encoder the log-mel frames of any window the configuration accepts (the
encoder's ``min_seconds`` up to the longest ``speech.window_s``, tuned for
the configured one), and the EEG encoder one window.  ``backend.tensorrt
.dynamic_dims`` still overrides an axis (to narrow a profile, for example).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

from edge_mer.backends.base import ModelRef
from edge_mer.bundle.feeds import Range, detector_ranges, feed_ranges, head_ranges
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import ConfigError
from edge_mer.pipeline.config import MAX_WINDOW_S, RunConfig
from edge_mer.preprocess.audio import AudioParams, min_samples, num_frames

ONE: Range = (1, 1, 1)


def check_speech_window(name: str, params: AudioParams, window_s: float) -> None:
    """A window shorter than the encoder accepts would make every result "too short": refuse it."""
    shortest = params.min_seconds
    if window_s < shortest:
        raise ConfigError(f"speech.window_s = {window_s:g} s is shorter than the {shortest:g} s "
                          f"encoder {name!r} needs; expected {shortest:g}..{MAX_WINDOW_S['speech']:g} s")


def speech_frames(params: AudioParams, window_s: float) -> Range:
    """Log-mel frames of the shortest accepted window, of ``window_s``, and of the longest window allowed.

    One frame of slack on top covers resampling from the source rate, which
    can round a window to one sample more.
    """
    rate = params.sample_rate
    lo = num_frames(min_samples(params), params)
    opt = num_frames(int(round(window_s * rate)), params)
    hi = num_frames(math.ceil(MAX_WINDOW_S["speech"] * rate), params) + 1
    return lo, max(lo, opt), hi


def encoder_feeds(name: str, spec: EncoderSpec, config: RunConfig) -> dict[str, Range]:
    """``{axis name: (min, opt, max)}`` for encoder ``name`` as ``config`` runs it."""
    if spec.modality == "face":
        return feed_ranges(spec.inputs, batch=(1, 1, config.face.max_faces))
    if spec.modality == "speech":
        check_speech_window(name, spec.preprocessing, config.speech.window_s)
        return feed_ranges(spec.inputs, batch=ONE, frames=speech_frames(spec.preprocessing, config.speech.window_s))
    return feed_ranges(spec.inputs, batch=ONE)


def bundle_refs(bundle: Bundle, config: RunConfig, encoders: Sequence[str] | None = None) -> Iterator[ModelRef]:
    """Every model of ``bundle`` at every precision it ships, with the feed ranges a run of ``config`` uses.

    ``encoders`` limits the encoders (None: all); the detectors and the fusion
    heads are always included.  ``export --engines`` builds these, so the
    engines it caches are the ones a run with ``config`` looks up.
    """
    for name, spec in bundle.manifest.encoders.items():
        if encoders is None or name in encoders:
            for precision in spec.models:
                yield dataclasses.replace(bundle.model_ref(name, precision),
                                          dim_ranges=encoder_feeds(name, spec, config))
    for name, det in bundle.manifest.detectors.items():
        for precision in det.models:
            yield dataclasses.replace(bundle.detector_ref(name, precision), dim_ranges=detector_ranges(det))
    for head_name, head in bundle.manifest.fusion.named_heads().items():
        for precision in head.models:
            yield dataclasses.replace(bundle.head_ref(head, precision, head_name), dim_ranges=head_ranges(head))
