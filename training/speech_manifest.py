"""The speech encoder's manifest entry, from what speech.py measured (results/speech_eval.json).

    python training/speech_manifest.py [--bundle edge_mer/assets/default_bundle]   # after speech.py
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bundle_manifest import update_encoder
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import EncoderSpec, Metric, Provenance, TensorInfo
from edge_mer.bundle.writer import file_entry
from speech_data import LABELS, PARAMS, SEED

REL = "speech/speech_cnn.onnx"
CORPUS_NAMES = {"emodb": "EMO-DB (German, 8 speakers)", "ravdess": "RAVDESS speech (English, 24 actors)",
                "tess": "TESS (English, 2 speakers)"}
WITHIN = "speaker-independent: 4 folds over speakers, clip = mean of its 2 s windows"
LOCO = "leave one corpus out: trained on the other two corpora"


def metrics(results: dict) -> tuple[Metric, ...]:
    out = []
    for corpus, name in CORPUS_NAMES.items():
        r = results["within_corpus"][corpus]
        per = ", ".join(f"{k} {v:.3f}" for k, v in r["per_speaker"].items())
        out.append(Metric("accuracy", round(r["accuracy"], 4), name, WITHIN, n=r["n"],
                          notes=f"UAR {r['uar']:.4f}; per speaker: {per}"))
    for corpus, name in CORPUS_NAMES.items():
        r = results["leave_one_corpus_out"][corpus]
        notes = ""
        if "accuracy_all_labels" in r:
            notes = (f"over the 6 labels the training corpora have (n={r['n_shared_labels']}); "
                     f"{r['accuracy_all_labels']:.4f} counting boredom, which no training corpus has, as errors")
        out.append(Metric("accuracy", round(r["accuracy"], 4), name, LOCO, n=r["n"], notes=notes))
    mean = results["leave_one_corpus_out"]["mean"]
    out.append(Metric("accuracy", round(mean, 4), "mean of the three held-out corpora", LOCO))
    return tuple(out)


def spec(bundle: Path, results: dict) -> EncoderSpec:
    return EncoderSpec(
        modality="speech",
        models={"fp32": file_entry(bundle, REL)},
        inputs=(TensorInfo("logmel", ("N", 1, PARAMS.n_mels, "T"), layout="NCFT",
                           description="log-mel (dB, top_db 80) normalised per window and band; T >= 101 frames"),),
        outputs=(TensorInfo("probs", ("N", len(LABELS)), kind="probs", labels=LABELS),),
        preprocessing=PARAMS,
        label_map={label: label for label in LABELS},
        provenance=Provenance(
            source=f"training/speech.py (seed {SEED}, {results['epochs']} epochs, every clip of the three corpora, "
                   "with microphone augmentation)",
            training_data="EMO-DB speakers 08-15 (415 clips), RAVDESS speech 24 actors (1,439), TESS 2 speakers (280); "
                          "RAVDESS calm mapped to neutral, EMO-DB boredom kept",
            licence="weights carry the data's terms: EMO-DB free for research, RAVDESS CC BY-NC-SA 4.0, "
                    "TESS CC BY-NC-ND 4.0 (non-commercial)"),
        metrics=metrics(results),
        description="Emotion from speech: compact log-mel CNN with mean+std pooling over time (any window >= 1 s), "
                    "trained on German and English acted speech.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = json.loads((root / "training" / "results" / "speech_eval.json").read_text())
    manifest = parse_manifest(json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8")))
    update_encoder(args.bundle, "speech", spec(args.bundle, results), manifest.fusion)


if __name__ == "__main__":
    main()
