"""Held-out outputs of every encoder, from models that never saw the person: what calibration and fusion learn from.

Each row is one window the daemon would score, with the *uncalibrated*
probabilities of a model that never saw that person, on the encoder's own
labels, and a group saying who it is:

* face: the shipped mini-Xception (trained on FER2013 train) on FER2013
  PublicTest (split ``A``) and CK+48 (split ``B``, other people, another dataset);
* speech: per 2 s daemon window, the 4 speaker-fold models of ``speech.py``
  (``results/speech_folds/fold_<k>.onnx``); folds 0-1 are split ``A``, 2-3 ``B``;
* eeg, eeg_cyton: per 4 s window, the leave-one-subject-out models of
  ``eeg.py``; subjects 1 2 3 6 are split ``A``, 7 8 10 11 ``B``.

Split ``A`` fits the temperatures and trains the fusion head; split ``B``
(other people, and for the face another dataset) measures them.

    python training/heldout.py   # writes results/heldout_outputs.npz (model outputs only, no data)
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.backends.options import BackendOptions, OrtOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer_calibration.eeg import read_gu_folder
from edge_mer_calibration.face import read_face_folder
from edge_mer_calibration.pairing import load_outputs

log = logging.getLogger("training.heldout")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "training" / "results"
OUTPUTS = RESULTS / "heldout_outputs.npz"
EEG_SPLIT_A = ("sub1", "sub2", "sub3", "sub6")
SPEECH_SPLIT_A = (0, 1)
ORT = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(intra_op_threads=2))


def _run(path: Path, batches: list[np.ndarray], input_name: str) -> np.ndarray:
    ref = ModelRef(path.stem, "fp32", {"fp32": ModelFile(path, "0" * 64)})
    with create_backend(ref, ORT) as backend:
        return np.concatenate([backend.infer({input_name: b})["probs"] for b in batches]).astype(np.float32)


def face_outputs(shared: Path) -> dict[str, np.ndarray]:
    bundle = load_bundle(default_bundle_path())
    spec = bundle.encoder("face")
    path = bundle.path(spec.models["fp32"])
    probs, labels, groups, splits = [], [], [], []
    for split, folder in (("A", shared / "data" / "face" / "fer2013" / "publictest"),
                          ("B", shared / "data" / "face" / "ckplus48")):
        samples = list(read_face_folder(folder, spec.preprocessing))
        arrays = np.stack([s.array for s in samples]).astype(np.float32)
        probs.append(_run(path, [arrays[i:i + 256] for i in range(0, len(arrays), 256)], spec.inputs[0].name))
        labels += [s.label for s in samples]
        groups += [s.group or f"fer_{i}" for i, s in enumerate(samples)]  # CK+: the subject (S010)
        splits += [split] * len(samples)
        log.info("face %s: %d images", split, len(samples))
    return {"probs": np.concatenate(probs), "labels": np.array(labels), "groups": np.array(groups),
            "splits": np.array(splits)}


def speech_outputs(shared: Path) -> dict[str, np.ndarray]:
    from speech_data import LABELS, assign_folds, cached_features, load_corpora

    clips = load_corpora(shared)
    data = cached_features(clips, Path("/tmp/edge-mer-speech-features.pkl"))
    folds = assign_folds(clips)
    probs, labels, groups, splits, corpus = [], [], [], [], []
    for fold in range(4):
        members = np.flatnonzero(folds == fold)
        batches = [np.stack(data.clean[i]).astype(np.float32) for i in members]
        out = _run(RESULTS / "speech_folds" / f"fold_{fold}.onnx", batches, "logmel")
        probs.append(out)
        for i in members:
            n = len(data.clean[i])
            labels += [LABELS[clips[i].label]] * n
            groups += [clips[i].speaker] * n
            corpus += [clips[i].corpus] * n
            splits += ["A" if fold in SPEECH_SPLIT_A else "B"] * n
    return {"probs": np.concatenate(probs), "labels": np.array(labels), "groups": np.array(groups),
            "splits": np.array(splits), "corpus": np.array(corpus)}


def eeg_outputs(shared: Path, name: str) -> dict[str, np.ndarray]:
    spec = load_bundle(default_bundle_path()).encoder(name)
    samples = list(read_gu_folder(shared / "data" / "eeg" / "gu", spec.preprocessing, hop_s=2.0))
    subjects = np.array([s.group for s in samples])
    probs = np.zeros((len(samples), len(spec.labels)), dtype=np.float32)
    for subject in sorted(set(subjects)):
        rows = np.flatnonzero(subjects == subject)
        x = np.stack([samples[i].array for i in rows]).astype(np.float32)
        probs[rows] = _run(RESULTS / "eeg_folds" / name / f"{subject}.onnx", [x], spec.inputs[0].name)
    return {"probs": probs, "labels": np.array([s.label for s in samples]), "groups": subjects,
            "splits": np.array(["A" if s in EEG_SPLIT_A else "B" for s in subjects])}


def load() -> dict[str, dict[str, np.ndarray]]:
    """The stored outputs as ``{encoder: {probs, labels, groups, splits[, corpus]}}``."""
    return load_outputs(OUTPUTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    outputs = {"face": face_outputs(args.shared), "speech": speech_outputs(args.shared),
               "eeg": eeg_outputs(args.shared, "eeg"), "eeg_cyton": eeg_outputs(args.shared, "eeg_cyton")}
    flat = {f"{encoder}/{field}": value for encoder, fields in outputs.items() for field, value in fields.items()}
    np.savez_compressed(OUTPUTS, **flat)
    for encoder, fields in outputs.items():
        log.info("%s: %d rows", encoder, len(fields["labels"]))


if __name__ == "__main__":
    main()
