"""Speech encoder of the default bundle: a compact log-mel CNN with statistics pooling, on EMO-DB.

Features come from edge-mer's own AudioPreprocessor (16 kHz, 64 log-mel bands,
per-window normalisation), so training, calibration and the daemon see the
same arrays. Mean and standard deviation over time pool the convolutional
features, so the exported ONNX model takes any window of 1 s or more.

Evaluation is leave-one-speaker-out over the 8 speakers in ../shared; the
shipped model is then trained on all 8 with the same recipe.

    python training/speech.py [--shared ../shared] [--bundle edge_mer/assets/default_bundle] [--epochs 40]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import nn

from bundle_manifest import update_encoder
from edge_mer.bundle.schema import EncoderSpec, Metric, Provenance, TensorInfo
from edge_mer.bundle.writer import file_entry
from edge_mer.preprocess.audio import AudioParams, AudioPreprocessor
from edge_mer.preprocess.base import Invalid

log = logging.getLogger("training.speech")

#: EMO-DB's emotion letter (6th character of the file name) -> label; boredom has no canonical counterpart.
EMODB_LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "neutral")
PARAMS = AudioParams(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=64, fmin=20.0,
                     fmax=8000.0, log="db", top_db=80.0, cmvn="utterance", min_seconds=1.0, vad_threshold_db=-45.0)
SEED = 1234


@dataclass
class Dataset:
    x: np.ndarray          # [n, 1, n_mels, frames]
    y: np.ndarray          # [n] label indices
    speakers: np.ndarray   # [n] speaker ids
    files: list[str]


def load_emodb(folder: Path, params: AudioParams = PARAMS) -> Dataset:
    """Every clip through the runtime's preprocessing; clips the gate calls silent are an error here."""
    pre = AudioPreprocessor(params)
    xs, ys, speakers, files = [], [], [], []
    for path in sorted(folder.glob("*.wav")):
        samples, rate = soundfile.read(str(path), dtype="int16", always_2d=False)
        feats = pre.process(samples, rate)
        if isinstance(feats, Invalid):
            raise RuntimeError(f"{path.name}: preprocessing says {feats.reason}")
        xs.append(feats)
        ys.append(LABELS.index(EMODB_LETTERS[path.name[5]]))
        speakers.append(path.name[:2])
        files.append(path.name)
    return Dataset(np.stack(xs).astype(np.float32), np.array(ys), np.array(speakers), files)


class StatsPoolCNN(nn.Module):
    """Four conv blocks over (mel, time), frequency averaged, then mean+std over time, then a linear head."""

    def __init__(self, n_classes: int = len(LABELS), width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(pool))

        self.features = nn.Sequential(block(1, width // 2, (2, 2)), block(width // 2, width, (2, 2)),
                                      block(width, 2 * width, (2, 1)), block(2 * width, 2 * width, (2, 1)))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [N, 1, mels, T] -> logits [N, classes]
        h = self.features(x).mean(dim=2)                 # [N, C, T']
        stats = torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)
        return self.head(stats)


class WithSoftmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def spec_augment(x: torch.Tensor, gen: torch.Generator, freq_width: int = 8, time_width: int = 20,
                 crop_frames: int = 151) -> torch.Tensor:
    """Random crop in time plus one frequency and two time masks per example (SpecAugment-style)."""
    n, _, mels, frames = x.shape
    start = torch.randint(0, frames - crop_frames + 1, (1,), generator=gen).item()
    x = x[..., start:start + crop_frames].clone()
    for i in range(n):
        f0 = torch.randint(0, mels - freq_width, (1,), generator=gen).item()
        fw = torch.randint(0, freq_width + 1, (1,), generator=gen).item()
        x[i, :, f0:f0 + fw, :] = 0.0
        for _ in range(2):
            t0 = torch.randint(0, crop_frames - time_width, (1,), generator=gen).item()
            tw = torch.randint(0, time_width + 1, (1,), generator=gen).item()
            x[i, :, :, t0:t0 + tw] = 0.0
    return x


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = SEED) -> nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = StatsPoolCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    steps_per_epoch = int(np.ceil(len(x) / 32))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            loss = loss_fn(model(spec_augment(xt[idx], gen)), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(x)).argmax(dim=1).numpy()


def loso(data: Dataset, epochs: int, fold_dir: Path) -> dict:
    """Leave-one-speaker-out accuracy and unweighted average recall, per speaker and overall.

    Each fold's model is exported to ``fold_dir/speaker_<id>.onnx`` so the
    tests can re-score every held-out speaker through the package.
    """
    preds = np.empty_like(data.y)
    per_speaker = {}
    for speaker in sorted(set(data.speakers)):
        test = data.speakers == speaker
        model = train(data.x[~test], data.y[~test], epochs)
        export_onnx(model, fold_dir / f"speaker_{speaker}.onnx", data.x.shape[-1])
        preds[test] = predict(model, data.x[test])
        per_speaker[speaker] = float(np.mean(preds[test] == data.y[test]))
        log.info("speaker %s: %.3f (n=%d)", speaker, per_speaker[speaker], int(test.sum()))
    recall = {LABELS[c]: float(np.mean(preds[data.y == c] == c)) for c in range(len(LABELS))}
    return {"accuracy": float(np.mean(preds == data.y)), "mean_speaker_accuracy": float(np.mean(list(per_speaker.values()))),
            "uar": float(np.mean(list(recall.values()))), "per_speaker": per_speaker, "recall": recall,
            "n": int(len(data.y))}


def export_onnx(model: nn.Module, path: Path, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, PARAMS.n_mels, frames)
    # A fresh wrapper is in training mode, and export restores that mode on exit,
    # which would flip the wrapped model's BatchNorm and dropout back to training.
    torch.onnx.export(WithSoftmax(model).eval(), (dummy,), str(path), input_names=["logmel"], output_names=["probs"],
                      dynamic_axes={"logmel": {0: "N", 3: "T"}, "probs": {0: "N"}}, opset_version=17,
                      dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=root.parent / "shared")
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    started = time.monotonic()
    data = load_emodb(args.shared / "data" / "speech" / "emodb")
    log.info("features %s in %.1f s", data.x.shape, time.monotonic() - started)
    results_dir = root / "training" / "results"
    results = loso(data, args.epochs, results_dir / "speech_folds")
    log.info("LOSO accuracy %.4f, mean per speaker %.4f, UAR %.4f", results["accuracy"],
             results["mean_speaker_accuracy"], results["uar"])
    (results_dir / "speech_loso.json").write_text(json.dumps(results, indent=2) + "\n")
    model = train(data.x, data.y, args.epochs)
    rel = "speech/speech_cnn.onnx"
    export_onnx(model, args.bundle / rel, data.x.shape[-1])
    update_encoder(args.bundle, "speech", encoder_spec(args.bundle, rel, results, args.epochs))
    log.info("total %.1f s", time.monotonic() - started)


def encoder_spec(bundle: Path, rel: str, results: dict, epochs: int) -> EncoderSpec:
    per_speaker = ", ".join(f"{k} {v:.3f}" for k, v in results["per_speaker"].items())
    return EncoderSpec(
        modality="speech",
        models={"fp32": file_entry(bundle, rel)},
        inputs=(TensorInfo("logmel", ("N", 1, PARAMS.n_mels, "T"), layout="NCFT",
                           description="log-mel (dB, top_db 80) normalised per window and band; T >= 101 frames"),),
        outputs=(TensorInfo("probs", ("N", len(LABELS)), kind="probs", labels=LABELS),),
        preprocessing=PARAMS,
        label_map={label: label for label in LABELS},
        provenance=Provenance(source=f"training/speech.py (seed {SEED}, {epochs} epochs, all 8 speakers)",
                              training_data="EMO-DB (Berlin Database of Emotional Speech), speakers 08-15, 415 clips",
                              licence="weights: MIT; EMO-DB is free for research use"),
        metrics=(Metric("accuracy", round(results["accuracy"], 4), "EMO-DB 7 classes",
                        "leave-one-speaker-out over 8 speakers", n=results["n"], notes=f"per speaker: {per_speaker}"),
                 Metric("uar", round(results["uar"], 4), "EMO-DB 7 classes", "leave-one-speaker-out over 8 speakers",
                        n=results["n"])),
        description="Emotion from speech: compact log-mel CNN with mean+std pooling over time (any window >= 1 s).")


if __name__ == "__main__":
    main()
