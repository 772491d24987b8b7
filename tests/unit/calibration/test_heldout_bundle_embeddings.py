"""A held-out bundle's swapped-in fold models get the shipped encoders' embedding output, so every head runs on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.errors import InputError
from edge_mer_calibration.embeddings import add_embedding, has_embedding
from edge_mer_calibration.sessions import heldout_bundle

FOLDS = Path(__file__).resolve().parents[3] / "training" / "results"


def test_fold_models_gain_the_embedding_and_keep_their_probabilities(tmp_path: Path) -> None:
    fold = FOLDS / "eeg_folds" / "eeg" / "sub1.onnx"
    assert not has_embedding(onnx.load(str(fold)))
    bundle = load_bundle(heldout_bundle(default_bundle_path(), tmp_path / "b", {"eeg": fold}))
    path = bundle.path(bundle.encoder("eeg").models["fp32"])
    x = np.random.default_rng(0).normal(size=(3, 10, 5)).astype(np.float32)
    before = ort.InferenceSession(str(fold), providers=["CPUExecutionProvider"]).run(["probs"], {"de": x})[0]
    probs, embedding = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["probs", "embedding"], {"de": x})
    np.testing.assert_array_equal(probs, before)
    assert embedding.shape == (3, 50) and np.isfinite(embedding).all()


def test_surgery_on_an_unknown_architecture_is_one_line() -> None:
    model = onnx.load(str(FOLDS / "eeg_folds" / "eeg" / "sub1.onnx"))
    with pytest.raises(InputError, match="no embedding surgery for encoder 'lidar'"):
        add_embedding(model, "lidar")
    with pytest.raises(InputError, match="tensor 'add_4' not found in the graph"):
        add_embedding(model, "face")
