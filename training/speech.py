"""Speech encoder of the default bundle: a log-mel CNN with statistics pooling, on EMO-DB + RAVDESS + TESS.

Features come from edge-mer's own AudioPreprocessor on the 2 s windows the
daemon uses, so training, calibration and the device see the same arrays.
Mean and standard deviation over time pool the convolutional features, so the
exported ONNX model takes any window of 1 s or more. Corpora, labels, folds
and the microphone augmentation: :mod:`speech_data`.

Evaluation, all speaker-independent:

* within corpus: 4 folds over speakers (``speech_data.fold_of``); every clip
  is scored once by the fold model that never heard its speaker;
* leave one corpus out: train on two corpora, test on the third.

A clip's score is the mean of the daemon windows' probabilities. The
out-of-fold probabilities go to ``results/speech_oof.npz`` (temperature
calibration and the fusion head train on them), the fold models to
``results/speech_folds/``. The shipped model trains on every clip.

    python training/speech.py [--shared ../shared] [--bundle edge_mer/assets/default_bundle] [--epochs 24]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speech_data import CORPORA, LABELS, N_FOLDS, PARAMS, SEED, Clip, Features, assign_folds, cached_features, \
    load_corpora, train_mask

log = logging.getLogger("training.speech")

CROP_FRAMES = 111  # 1.1 s: TESS's shortest clip is 1.3 s
CLEAN_SHARE = 0.5  # a training draw is a clean daemon window this often, else an augmented crop
SHARED_LABELS = tuple(label for label in LABELS if label != "boredom")  # what RAVDESS and TESS have


class StatsPoolCNN(nn.Module):
    """Four conv blocks over (mel, time), frequency averaged, then mean+std over time, then a linear head."""

    def __init__(self, n_classes: int = len(LABELS), width: int = 40, dropout: float = 0.1) -> None:
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


def _batch(pool: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((len(pool), 1, PARAMS.n_mels, CROP_FRAMES), dtype=np.float32)
    for i, feats in enumerate(pool):
        frames = feats.shape[-1]
        start = int(rng.integers(0, max(frames - CROP_FRAMES, 0) + 1))
        crop = feats[..., start:start + CROP_FRAMES]
        out[i, ..., :crop.shape[-1]] = crop
        if crop.shape[-1] < CROP_FRAMES:  # wrap a short clip rather than pad it with a silence it never had
            out[i, ..., crop.shape[-1]:] = crop[..., :CROP_FRAMES - crop.shape[-1]]
    return out


def _masks(x: np.ndarray, rng: np.random.Generator, freq_width: int = 6, time_width: int = 12) -> np.ndarray:
    """One frequency and one time mask per example (SpecAugment-style), in place."""
    n, _, mels, frames = x.shape
    bands, steps = np.arange(mels), np.arange(frames)
    f0, fw = rng.integers(0, mels - freq_width, n), rng.integers(0, freq_width + 1, n)
    keep = ~((bands[None] >= f0[:, None]) & (bands[None] < (f0 + fw)[:, None]))  # [n, mels]
    x *= keep[:, None, :, None]
    for _ in range(1):
        t0, tw = rng.integers(0, frames - time_width, n), rng.integers(0, time_width + 1, n)
        keep_t = ~((steps[None] >= t0[:, None]) & (steps[None] < (t0 + tw)[:, None]))  # [n, frames]
        x *= keep_t[:, None, None, :]
    return x


def train(data: Features, which: np.ndarray, epochs: int, seed: int = SEED,
          corpora: np.ndarray | None = None) -> nn.Module:
    """A model on the clips ``which`` selects: each draw is a clean window or an augmented crop of a clip.

    Clips are drawn with probability proportional to 1/sqrt(their corpus's size), so the
    1,439 RAVDESS clips do not drown EMO-DB's 415 and TESS's 280.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(which)
    counts = np.bincount(data.labels[idx], minlength=len(LABELS)).astype(np.float64)
    # Square-root inverse frequency: boredom (one corpus) is not drowned, neutral (calm merged) not favoured.
    class_w = np.where(counts > 0, np.sqrt(counts.sum() / np.maximum(counts, 1) / len(LABELS)), 0.0)
    draw = np.ones(len(idx))
    if corpora is not None:
        names, inverse, sizes = np.unique(corpora[idx], return_inverse=True, return_counts=True)
        draw = 1.0 / np.sqrt(sizes[inverse])
    draw /= draw.sum()
    model = StatsPoolCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-3)
    steps = int(np.ceil(len(idx) / 32))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * steps)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(class_w, dtype=torch.float32), label_smoothing=0.05)
    model.train()
    for _ in range(epochs):
        order = rng.choice(idx, size=len(idx), p=draw)
        for start in range(0, len(order), 32):
            members = order[start:start + 32]
            pool = []
            for i in members:
                use_clean = rng.random() < CLEAN_SHARE or not data.augmented[i]
                choices = data.clean[i] if use_clean else data.augmented[i]
                pool.append(choices[int(rng.integers(len(choices)))])
            x = torch.from_numpy(_masks(_batch(pool, rng), rng))
            opt.zero_grad()
            loss_fn(model(x), torch.from_numpy(data.labels[members])).backward()
            opt.step()
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def clip_probs(model: nn.Module, data: Features, which: np.ndarray) -> np.ndarray:
    """Per selected clip, the mean over its daemon windows of the model's probabilities [n, classes]."""
    model.eval()
    out = []
    for i in np.flatnonzero(which):
        x = torch.from_numpy(np.stack(data.clean[i]).astype(np.float32))
        out.append(torch.softmax(model(x), dim=1).mean(dim=0).numpy())
    return np.stack(out)


def accuracy(probs: np.ndarray, labels: np.ndarray, allowed: tuple[str, ...] = LABELS) -> float:
    """Top-1 accuracy with the argmax taken over ``allowed`` labels only."""
    cols = [LABELS.index(label) for label in allowed]
    keep = np.isin(labels, cols)
    pred = np.array(cols)[probs[keep][:, cols].argmax(axis=1)]
    return float(np.mean(pred == labels[keep]))


def uar(probs: np.ndarray, labels: np.ndarray) -> float:
    pred = probs.argmax(axis=1)
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


def within_corpus(clips: list[Clip], data: Features, epochs: int, fold_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """The 4 speaker folds: per-corpus out-of-fold figures, the out-of-fold probabilities and the folds."""
    folds = assign_folds(clips)
    corpus = np.array([c.corpus for c in clips])
    oof = np.zeros((len(clips), len(LABELS)), dtype=np.float32)
    for fold in range(N_FOLDS):
        test = folds == fold
        started = time.monotonic()
        model = train(data, train_mask(clips, folds, fold), epochs, corpora=corpus)
        export_onnx(model, fold_dir / f"fold_{fold}.onnx")
        oof[test] = clip_probs(model, data, test)
        fitted = train_mask(clips, folds, fold) & (np.arange(len(clips)) % 5 == 0)  # a fifth: how well it fits
        fit = clip_probs(model, data, fitted)
        log.info("fold %d training-set fit: %s", fold, ", ".join(
            f"{name} {accuracy(fit[corpus[fitted] == name], data.labels[fitted][corpus[fitted] == name]):.3f}"
            for name in CORPORA))
        log.info("fold %d: %.3f on %d clips (%.0f s)", fold, accuracy(oof[test], data.labels[test]),
                 int(test.sum()), time.monotonic() - started)
    results = {}
    for name in CORPORA:
        sel = corpus == name
        speakers = sorted({c.speaker for c in clips if c.corpus == name})
        per_speaker = {s: accuracy(oof[[c.speaker == s for c in clips]],
                                   data.labels[[c.speaker == s for c in clips]]) for s in speakers}
        results[name] = {"accuracy": accuracy(oof[sel], data.labels[sel]), "uar": uar(oof[sel], data.labels[sel]),
                         "n": int(sel.sum()), "per_speaker": per_speaker}
        log.info("within %s (speaker-independent): %.4f, UAR %.4f", name, results[name]["accuracy"],
                 results[name]["uar"])
    return results, oof, folds


def leave_one_corpus_out(clips: list[Clip], data: Features, epochs: int, fold_dir: Path) -> dict:
    """Train on two corpora, test on the third, for each corpus."""
    corpus = np.array([c.corpus for c in clips])
    results = {}
    for name in CORPORA:
        test = corpus == name
        model = train(data, ~test, epochs, corpora=corpus)
        export_onnx(model, fold_dir / f"without_{name}.onnx")
        probs = clip_probs(model, data, test)
        y = data.labels[test]
        entry = {"accuracy": accuracy(probs, y), "n": int(test.sum())}
        if name == "emodb":  # boredom is in no training corpus: score the six labels the others share too
            entry["accuracy_all_labels"] = entry["accuracy"]
            entry["accuracy"] = accuracy(probs, y, SHARED_LABELS)
            entry["n_shared_labels"] = int(np.isin(y, [LABELS.index(x) for x in SHARED_LABELS]).sum())
        results[name] = entry
        log.info("train without %s, test on it: %.4f (n=%d)", name, entry["accuracy"], entry["n"])
    results["mean"] = float(np.mean([results[name]["accuracy"] for name in CORPORA]))
    return results


def export_onnx(model: nn.Module, path: Path, frames: int = 201) -> None:
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
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-mer-speech-features.pkl"),
                        help="features cache (derived from ../shared: keep it outside the project)")
    parser.add_argument("--skip-eval", action="store_true", help="train only the shipped model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    started = time.monotonic()
    clips = load_corpora(args.shared)
    data = cached_features(clips, args.cache)
    log.info("features of %d clips in %.1f s", len(clips), time.monotonic() - started)
    results_dir = root / "training" / "results"
    fold_dir = results_dir / "speech_folds"
    results: dict = {"labels": list(LABELS), "epochs": args.epochs, "seed": SEED}
    if not args.skip_eval:
        results["within_corpus"], oof, folds = within_corpus(clips, data, args.epochs, fold_dir)
        np.savez_compressed(results_dir / "speech_oof.npz", probs=oof, labels=data.labels, folds=folds,
                            corpus=np.array([c.corpus for c in clips]), speaker=np.array([c.speaker for c in clips]),
                            path=np.array([c.path for c in clips]))
        results["leave_one_corpus_out"] = leave_one_corpus_out(clips, data, args.epochs, fold_dir)
        (results_dir / "speech_eval.json").write_text(json.dumps(results, indent=2) + "\n")
    model = train(data, np.ones(len(clips), dtype=bool), args.epochs, corpora=np.array([c.corpus for c in clips]))
    export_onnx(model, args.bundle / "speech" / "speech_cnn.onnx")
    log.info("total %.1f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
