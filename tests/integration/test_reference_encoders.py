"""The default bundle's speech and EEG encoders on real data from ../shared.

Held-out figures are re-scored from the committed speaker-fold and leave-one-out models
(training/results/*_folds), each run only on the speaker or subject it never
saw, through the package's own preprocessing and ONNX Runtime backend.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer_calibration.eeg import read_gu_folder

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "training" / "results"
EMODB_LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
ORT = BackendOptions(name="onnxruntime")

pytestmark = pytest.mark.shared


def _run(path: Path, x: np.ndarray, input_name: str) -> np.ndarray:
    ref = ModelRef(path.stem, "fp32", {"fp32": ModelFile(path, "0" * 64)})
    with create_backend(ref, ORT) as backend:
        return backend.infer({input_name: x})["probs"]


@pytest.fixture(scope="module")
def emodb(shared_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    spec = load_bundle(default_bundle_path()).encoder("speech")
    pre = AudioPreprocessor(spec.preprocessing)
    by_speaker: dict[str, tuple[list, list]] = {}
    for path in sorted((shared_dir / "data" / "speech" / "emodb").glob("*.wav")):
        samples, rate = soundfile.read(str(path), dtype="int16")
        feats = pre.process(samples, rate)
        assert not isinstance(feats, Invalid), f"{path.name}: {feats}"
        xs, ys = by_speaker.setdefault(path.name[:2], ([], []))
        xs.append(feats)
        ys.append(spec.labels.index(EMODB_LETTERS[path.name[5]]))
    return {k: (np.stack(xs), np.array(ys)) for k, (xs, ys) in by_speaker.items()}


def test_speech_speaker_folds_reproduce_the_reported_emodb_accuracy(emodb) -> None:
    """Each EMO-DB speaker scored by the fold model that never heard them (speakers 08-15: two per fold)."""
    reported = json.loads((RESULTS / "speech_eval.json").read_text())["within_corpus"]["emodb"]
    correct = total = 0
    for speaker, (x, y) in emodb.items():
        probs = _run(RESULTS / "speech_folds" / f"fold_{(int(speaker) - 8) // 2}.onnx", x, "logmel")
        hits = int((probs.argmax(1) == y).sum())
        assert abs(hits / len(y) - reported["per_speaker"][f"emodb_{speaker}"]) < 0.05, speaker
        correct, total = correct + hits, total + len(y)
    assert total == 415
    assert correct / total == pytest.approx(reported["accuracy"], abs=0.02)
    metric = load_bundle(default_bundle_path()).encoder("speech").metrics[0]
    assert metric.dataset.startswith("EMO-DB") and metric.value == pytest.approx(reported["accuracy"], abs=1e-4)


def test_shipped_speech_model_accepts_any_window_of_a_second_or_more(emodb) -> None:
    bundle = load_bundle(default_bundle_path())
    x, y = emodb["08"]
    labels = bundle.encoder("speech").labels
    with create_backend(bundle.model_ref("speech"), ORT) as backend:
        full = backend.infer({"logmel": x})["probs"]
        short = backend.infer({"logmel": np.ascontiguousarray(x[..., :101])})["probs"]
    assert full.shape == short.shape == (len(y), len(labels)) == (len(y), 8)
    np.testing.assert_allclose(full.sum(1), 1.0, rtol=1e-5)
    # Training-set fit of the shipped model (it heard every speaker): a pipeline check, not a held-out figure.
    assert (full.argmax(1) == y).mean() > 0.7


@pytest.mark.parametrize("name", ["eeg", "eeg_cyton"])
def test_eeg_leave_one_subject_out_reproduces_the_reported_accuracy(shared_dir: Path, name: str) -> None:
    spec = load_bundle(default_bundle_path()).encoder(name)
    reported = json.loads((RESULTS / f"{name}.json").read_text())
    samples = list(read_gu_folder(shared_dir / "data" / "eeg" / "gu", spec.preprocessing, hop_s=2.0))
    assert len(samples) == reported["windows"]
    accs = []
    for subject in sorted({s.group for s in samples}):
        held = [s for s in samples if s.group == subject]
        x = np.stack([s.array for s in held]).astype(np.float32)
        y = np.array([spec.labels.index(s.label) for s in held])
        probs = _run(RESULTS / "eeg_folds" / name / f"{subject}.onnx", x, "de")
        accs.append(float((probs.argmax(1) == y).mean()))
        assert accs[-1] == pytest.approx(reported["loso_per_subject"][subject], abs=1e-6)
    assert np.mean(accs) == pytest.approx(reported["loso_accuracy"], abs=1e-6)
