"""Assembly looks everything up in registries: runners by modality, live sources by kind, rules by name."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.config import from_dict
from edge_mer.errors import ConfigError
from edge_mer.fusion.learned import LearnedHead
from edge_mer.fusion.registry import RULE_NAMES, RULES, rule_class
from edge_mer.fusion.rules import LogLinear, WeightedMean
from edge_mer.names import MODALITIES
from edge_mer.pipeline.assembly import build_fusion, build_runner, live_sources
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.runners import RUNNERS, EegRunner, FaceRunner, SpeechRunner
from edge_mer.sources.base import StreamInfo
from edge_mer.sources.camera import CameraSource
from edge_mer.sources.eeg_board import BoardSource
from edge_mer.sources.microphone import MicrophoneSource
from edge_mer.sources.registry import LIVE_SOURCES, create_source
from edge_mer.sources.wav import WavFileSource


def test_every_modality_has_a_runner_and_a_live_source() -> None:
    assert set(RUNNERS) == set(MODALITIES)
    assert all(RUNNERS[m].modality == m for m in MODALITIES)
    assert {m for m, _ in LIVE_SOURCES} == set(MODALITIES)


def test_live_sources_follow_each_modality_config(tmp_path: Path) -> None:
    sources = live_sources(RunConfig())
    assert [type(s) for s in sources.values()] == [CameraSource, MicrophoneSource, BoardSource]
    wav = tmp_path / "speech.wav"
    config = from_dict(RunConfig, {"face": {"enabled": False}, "speech": {"microphone": {"file": str(wav)}}})
    sources = live_sources(config)
    assert list(sources) == ["speech", "eeg"] and isinstance(sources["speech"], WavFileSource)
    assert sources["speech"].path == wav
    with pytest.raises(ConfigError, match="unknown source kind 'lsl' \\(expected one of: camera\\)"):
        create_source("face", "lsl", None)


def test_runners_are_built_from_the_registry() -> None:
    bundle = load_bundle(default_bundle_path())
    config = RunConfig()
    face = build_runner("face", config, bundle, StreamInfo("face", 30.0))
    speech = build_runner("speech", config, bundle, StreamInfo("speech", 16000.0))
    eeg = build_runner("eeg", config, bundle, StreamInfo("eeg", 250.0, ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7",
                                                                          "F3", "F4", "F8")))
    try:
        assert isinstance(face, FaceRunner) and isinstance(speech, SpeechRunner) and isinstance(eeg, EegRunner)
        assert (face.name, speech.name, eeg.name) == ("face", "speech", "eeg")
        assert speech.rate == 16000 and eeg.hop_samples == 125
    finally:
        for runner in (face, speech, eeg):
            runner.backend.close()


def test_fusion_rules_come_from_one_registry() -> None:
    assert RULE_NAMES == ("weighted_mean", "log_linear", "learned", "reliability", "monte_carlo")
    assert RULES["weighted_mean"] is WeightedMean and RULES["log_linear"] is LogLinear
    assert RULES["learned"] is LearnedHead and rule_class("learned") is LearnedHead
    bundle = load_bundle(default_bundle_path())
    config = from_dict(RunConfig, {"fusion": {"rule": "log_linear", "weights": {"face": 2.0}}})
    rule, weights, _ = build_fusion(config, bundle, ["face", "speech"])
    assert isinstance(rule, LogLinear) and weights == {"face": 2.0, "speech": 0.0}
    with pytest.raises(ConfigError,
                       match="fusion: rule must be one of weighted_mean, log_linear, learned, reliability, monte_carlo, "
                             "got 'median'"):
        from_dict(RunConfig, {"fusion": {"rule": "median"}})
