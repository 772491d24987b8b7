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

Each row also has the encoder's ``embedding`` (``<encoder>/embedding``, from
``encoder_embeddings.py``), computed by the *shipped* FP32 graph on the same
window, which fusion heads read beside the probabilities. Those are still
held out: the shipped face model was trained on FER2013 train only, never on
the PublicTest or CK+ people; the speech embedding is parameter-free
functionals of the log-mel input (nothing in it was fitted to any speaker);
the EEG embedding is the standardised DE features, where the only thing that
saw subjects 1-11 is the unsupervised mean and standard deviation of the
standardisation, never a label. (The shipped speech and EEG *classifiers* saw
every person, so the probabilities stay those of the fold models.)

    python training/heldout.py           # writes results/heldout_outputs.npz (model outputs only, no data)
    python training/heldout.py --reuse   # keeps the stored probabilities, (re)computes the embeddings only
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
SPEECH_CACHE = Path("/tmp/edge-mer-speech-features.pkl")
EMBEDDING = "embedding"
ORT = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(intra_op_threads=2))


def _run(path: Path, batches: list[np.ndarray], input_name: str, output: str = "probs") -> np.ndarray:
    ref = ModelRef(path.stem, "fp32", {"fp32": ModelFile(path, "0" * 64)})
    with create_backend(ref, ORT) as backend:
        return np.concatenate([backend.infer({input_name: b})[output] for b in batches]).astype(np.float32)


def _shipped(name: str) -> Path:
    """The default bundle's FP32 graph of encoder ``name`` (the one whose ``embedding`` the runtime feeds heads)."""
    bundle = load_bundle(default_bundle_path())
    return bundle.path(bundle.encoder(name).models["fp32"])


def face_outputs(shared: Path) -> dict[str, np.ndarray]:
    bundle = load_bundle(default_bundle_path())
    spec = bundle.encoder("face")
    path = bundle.path(spec.models["fp32"])
    probs, embedding, labels, groups, splits = [], [], [], [], []
    for split, folder in (("A", shared / "data" / "face" / "fer2013" / "publictest"),
                          ("B", shared / "data" / "face" / "ckplus48")):
        samples = list(read_face_folder(folder, spec.preprocessing))
        arrays = np.stack([s.array for s in samples]).astype(np.float32)
        batches = [arrays[i:i + 256] for i in range(0, len(arrays), 256)]
        probs.append(_run(path, batches, spec.inputs[0].name))
        embedding.append(_run(path, batches, spec.inputs[0].name, EMBEDDING))
        labels += [s.label for s in samples]
        groups += [s.group or f"fer_{i}" for i, s in enumerate(samples)]  # CK+: the subject (S010)
        splits += [split] * len(samples)
        log.info("face %s: %d images", split, len(samples))
    return {"probs": np.concatenate(probs), "labels": np.array(labels), "groups": np.array(groups),
            "splits": np.array(splits), EMBEDDING: np.concatenate(embedding)}


def speech_outputs(shared: Path, with_probs: bool = True) -> dict[str, np.ndarray]:
    """Per 2 s window, in fold order: the fold models' probabilities (unless ``with_probs`` is False) and the
    shipped graph's embedding."""
    from speech_data import LABELS, assign_folds, cached_features, load_corpora

    clips = load_corpora(shared)
    data = cached_features(clips, SPEECH_CACHE)
    folds = assign_folds(clips)
    probs, embedding, labels, groups, splits, corpus = [], [], [], [], [], []
    for fold in range(4):
        members = np.flatnonzero(folds == fold)
        batches = [np.stack(data.clean[i]).astype(np.float32) for i in members]
        if with_probs:
            probs.append(_run(RESULTS / "speech_folds" / f"fold_{fold}.onnx", batches, "logmel"))
        embedding.append(_run(_shipped("speech"), batches, "logmel", EMBEDDING))
        for i in members:
            n = len(data.clean[i])
            labels += [LABELS[clips[i].label]] * n
            groups += [clips[i].speaker] * n
            corpus += [clips[i].corpus] * n
            splits += ["A" if fold in SPEECH_SPLIT_A else "B"] * n
    out = {"labels": np.array(labels), "groups": np.array(groups), "splits": np.array(splits),
           "corpus": np.array(corpus), EMBEDDING: np.concatenate(embedding)}
    return {"probs": np.concatenate(probs), **out} if with_probs else out


def eeg_outputs(shared: Path, name: str, with_probs: bool = True) -> dict[str, np.ndarray]:
    """Per 4 s window: the leave-one-subject-out probabilities (unless ``with_probs`` is False) and the
    shipped graph's embedding."""
    spec = load_bundle(default_bundle_path()).encoder(name)
    samples = list(read_gu_folder(shared / "data" / "eeg" / "gu", spec.preprocessing, hop_s=2.0))
    subjects = np.array([s.group for s in samples])
    everything = np.stack([s.array for s in samples]).astype(np.float32)
    out = {"labels": np.array([s.label for s in samples]), "groups": subjects,
           "splits": np.array(["A" if s in EEG_SPLIT_A else "B" for s in subjects]),
           EMBEDDING: _run(_shipped(name), [everything], spec.inputs[0].name, EMBEDDING)}
    if with_probs:
        probs = np.zeros((len(samples), len(spec.labels)), dtype=np.float32)
        for subject in sorted(set(subjects)):
            rows = np.flatnonzero(subjects == subject)
            probs[rows] = _run(RESULTS / "eeg_folds" / name / f"{subject}.onnx", [everything[rows]],
                               spec.inputs[0].name)
        out["probs"] = probs
    return out


def load() -> dict[str, dict[str, np.ndarray]]:
    """The stored outputs as ``{encoder: {probs, labels, groups, splits, embedding[, corpus]}}``."""
    return load_outputs(OUTPUTS)


def with_embeddings(stored: dict, fresh: dict) -> dict:
    """``stored`` with each encoder's ``embedding`` taken from ``fresh``, after checking the rows line up.

    The rows must be the same windows in the same order: same count, same labels, groups and splits
    (and for the face, the shipped model's probabilities, recomputed in ``fresh``, bit for bit).
    """
    out = {}
    for name, rows in stored.items():
        new = fresh[name]
        for key in ("labels", "groups", "splits") + (("probs",) if name == "face" else ()):
            if not np.array_equal(rows[key], new[key]):
                raise RuntimeError(f"{name}: recomputed {key} do not line up with the stored rows")
        if len(new[EMBEDDING]) != len(rows["probs"]):
            raise RuntimeError(f"{name}: {len(new[EMBEDDING])} embeddings for {len(rows['probs'])} rows")
        out[name] = dict(rows, **{EMBEDDING: new[EMBEDDING]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the stored fold-model probabilities and add the embeddings (checked to line up)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    probs = not args.reuse
    outputs = {"face": face_outputs(args.shared), "speech": speech_outputs(args.shared, probs),
               "eeg": eeg_outputs(args.shared, "eeg", probs),
               "eeg_cyton": eeg_outputs(args.shared, "eeg_cyton", probs)}
    if args.reuse:
        outputs = with_embeddings(load(), outputs)
    flat = {f"{encoder}/{field}": value for encoder, fields in outputs.items() for field, value in fields.items()}
    np.savez_compressed(OUTPUTS, **flat)
    for encoder, fields in outputs.items():
        log.info("%s: %d rows, embedding width %d", encoder, len(fields["labels"]), fields[EMBEDDING].shape[1])


if __name__ == "__main__":
    main()
