"""The default bundle's calibration and stacked fusion head on held-out people, through the package.

The rows are the committed outputs of models that never saw those people
(``training/results/heldout_outputs.npz``, written by ``training/heldout.py``;
model outputs only, no data). Split ``B`` is what neither the temperatures nor
the head were fitted on: CK+48 faces, the speakers of folds 2-3, GU subjects
7 8 10 11.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.fusion.learned import LearnedHead
from edge_mer.numeric import temperature_scale
from edge_mer.results import ModalityResult
from edge_mer_calibration.pairing import ENCODERS, Pools, load_outputs, pairings

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ROOT / "training" / "results" / "heldout_outputs.npz"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def pools(bundle) -> Pools:
    return Pools(bundle.manifest, load_outputs(OUTPUTS), "B")


def _results(bundle, feeds: dict[str, np.ndarray], i: int) -> list[ModalityResult]:  # noqa: ANN001
    out = []
    for k, name in enumerate(ENCODERS):
        if feeds["mask"][i, k] > 0:
            spec = bundle.encoder(name)
            out.append(ModalityResult(spec.modality, name, True, None,
                                      {spec.label_map[x]: float(p) for x, p in zip(spec.labels, feeds[name][i])}))
    return out


def _accuracies(bundle, pools: Pools, present: tuple[str, ...], n: int = 600) -> dict[str, float]:  # noqa: ANN001
    feeds, y = pairings(pools, LABELS, n, np.random.default_rng(5), present)
    hits = dict.fromkeys((*present, "head"), 0)
    with LearnedHead(bundle, precision="fp32") as head:
        for i in range(n):
            results = _results(bundle, feeds, i)
            for r in results:
                hits[r.encoder] += r.label == LABELS[y[i]]
            fused = head.fuse(results, {})
            hits["head"] += max(fused, key=fused.get) == LABELS[y[i]]
    return {k: v / n for k, v in hits.items()}


def test_every_encoder_is_calibrated_and_at_chance_means_unsure(bundle) -> None:
    outputs = load_outputs(OUTPUTS)
    for name, spec in bundle.manifest.encoders.items():
        calibration = spec.calibration
        assert calibration is not None, name
        rows = outputs[name]
        b = rows["splits"] == "B"
        y = np.array([spec.labels.index(label) for label in rows["labels"][b]])
        probs = temperature_scale(rows["probs"][b].astype(np.float64), calibration.temperature)
        confidence, accuracy = float(probs.max(1).mean()), float((probs.argmax(1) == y).mean())
        assert abs(confidence - accuracy) <= 0.1, (name, confidence, accuracy)
        assert calibration.ece_after <= calibration.ece_before + 1e-9, name
    eeg = bundle.encoder("eeg").calibration
    assert eeg.temperature > 1.0 and eeg.mean_confidence < 0.5  # an EEG head at chance no longer says 0.96


def test_the_head_beats_the_best_single_modality_on_unseen_people(bundle, pools) -> None:
    both = _accuracies(bundle, pools, ("face", "speech"))
    assert both["head"] >= max(both["face"], both["speech"]) + 0.03, both
    with_eeg = _accuracies(bundle, pools, ("face", "speech", "eeg"))
    assert with_eeg["head"] >= max(with_eeg["face"], with_eeg["speech"]), with_eeg


def test_a_lone_modality_is_followed_and_missing_ones_need_no_renormalising(bundle, pools) -> None:
    feeds, _ = pairings(pools, LABELS, 200, np.random.default_rng(9), ("face",))
    agree = 0
    with LearnedHead(bundle, precision="fp32") as head:
        for i in range(200):
            results = _results(bundle, feeds, i)
            fused = head.fuse(results, {})
            assert abs(sum(fused.values()) - 1.0) < 1e-5
            agree += max(fused, key=fused.get) == results[0].label
        assert head.fuse([ModalityResult("face", "face", False, "no face")], {}) is None
    assert agree / 200 >= 0.9
