"""The runners apply the manifest's temperature calibration to every window's probabilities."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import Calibration
from edge_mer.bundle.writer import write_manifest
from edge_mer.errors import ConfigError
from edge_mer.numeric import temperature_scale
from edge_mer.pipeline.assembly import build_runner
from edge_mer.pipeline.config import RunConfig
from edge_mer.sources.base import StreamInfo

CHANNELS = ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7", "F3", "F4", "F8")


def _bundle_with_temperature(root: Path, temperature: float | None) -> Path:
    shutil.copytree(default_bundle_path(), root)
    manifest = load_bundle(root).manifest
    calibration = None if temperature is None else Calibration(temperature, "test", "test", 10, 0.3, 0.05)
    encoders = {name: dataclasses.replace(spec, calibration=calibration) for name, spec in manifest.encoders.items()}
    write_manifest(root, dataclasses.replace(manifest, encoders=encoders))
    return root


def _eeg_probs(bundle_root: Path, features: np.ndarray) -> np.ndarray:
    runner = build_runner("eeg", RunConfig(), load_bundle(bundle_root), StreamInfo("eeg", 250.0, CHANNELS))
    try:
        return runner._infer(features)[:, :runner.class_width]  # the rows carry the embedding after the probabilities
    finally:
        runner.close()


def test_eeg_runner_scales_its_probabilities_by_the_manifest_temperature(tmp_path: Path) -> None:
    features = np.random.default_rng(3).normal(size=(4, len(CHANNELS), 5)).astype(np.float32)
    raw = _eeg_probs(_bundle_with_temperature(tmp_path / "raw", None), features)
    hot = _eeg_probs(_bundle_with_temperature(tmp_path / "hot", 4.0), features)
    np.testing.assert_allclose(hot, temperature_scale(raw, 4.0), atol=1e-6)
    assert hot.max(axis=1).mean() < raw.max(axis=1).mean()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature", 0.0, "calibration temperature must be in 0.05..100, got 0.0"),
    ("temperature", 1e9, "calibration temperature must be in 0.05..100"),
    ("ece_after", 1.5, "calibration ece_after must be in 0..1, got 1.5"),
    ("n", 0, "calibration n must be in 1..2^31, got 0"),
])
def test_a_bad_calibration_in_a_manifest_is_refused_naming_the_key(field: str, value: float, message: str) -> None:
    data = json.loads((default_bundle_path() / MANIFEST).read_text())
    entry = {"temperature": 2.0, "dataset": "d", "split": "s", "n": 10, "ece_before": 0.2, "ece_after": 0.05}
    data["encoders"]["eeg"]["calibration"] = dict(entry, **{field: value})
    with pytest.raises(ConfigError, match=re.escape("encoders.eeg.calibration: " + message)):
        parse_manifest(data)
