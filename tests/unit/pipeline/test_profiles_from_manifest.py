"""Profiles from the manifest: every shipped model plans for TensorRT with no TensorRT configuration."""
from __future__ import annotations

import numpy as np
import pytest

from edge_mer.backends.options import TrtOptions
from edge_mer.backends.tensorrt.plan import build_plan
from edge_mer.backends.tensorrt.profiles import onnx_io_specs, profile_shapes
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.errors import ConfigError
from edge_mer.pipeline.config import FaceConfig, RunConfig, SpeechConfig
from edge_mer.pipeline.feeds import bundle_refs, encoder_feeds, speech_frames
from edge_mer.preprocess.audio import AudioPreprocessor

BUNDLE = load_bundle(default_bundle_path())


@pytest.mark.parametrize("version", ["10.3.0", "11.0"])
def test_every_shipped_model_plans_with_default_tensorrt_options(version: str) -> None:
    refs = list(bundle_refs(BUNDLE, RunConfig()))
    assert {r.name for r in refs} >= {"face", "speech", "eeg", "eeg_cyton", "detector.blazeface"}
    for ref in refs:
        plan = build_plan(version, ref.precision, ref.files)
        inputs, _ = onnx_io_specs(ref.files[plan.onnx_key].path)
        ranges = profile_shapes(inputs, TrtOptions(), ref.dim_ranges)
        assert all(len(r.min) == len(r.max) for r in ranges), ref.name


def test_face_batch_follows_max_faces() -> None:
    config = RunConfig(face=FaceConfig(max_faces=3))
    inputs, _ = onnx_io_specs(BUNDLE.path(BUNDLE.encoder("face").models["fp32"]))
    (face,) = profile_shapes(inputs, TrtOptions(), encoder_feeds("face", BUNDLE.encoder("face"), config))
    assert (face.min[0], face.opt[0], face.max[0]) == (1, 1, 3)


@pytest.mark.parametrize("window_s", [1.0, 2.0, 3.7, 30.0])
def test_speech_frames_hold_the_window_the_runtime_really_makes(window_s: float) -> None:
    params = BUNDLE.encoder("speech").preprocessing
    lo, opt, hi = speech_frames(params, window_s)
    for rate in (16000, 44100, 48000):
        audio = np.random.default_rng(0).standard_normal(int(round(window_s * rate))).astype(np.float32) * 0.1
        frames = AudioPreprocessor(params).process(audio, rate).shape[-1]
        assert lo <= frames <= hi and abs(frames - opt) <= 1, (rate, frames, opt)
    assert lo == speech_frames(params, params.min_seconds)[1]


def test_speech_window_below_the_encoder_minimum_is_a_config_error() -> None:
    config = RunConfig(speech=SpeechConfig(window_s=0.5))
    with pytest.raises(ConfigError, match=r"speech.window_s = 0.5 s is shorter than the 1 s encoder 'speech' needs"):
        encoder_feeds("speech", BUNDLE.encoder("speech"), config)
