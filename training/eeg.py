"""EEG encoders of the default bundle: linear heads on differential-entropy features of the GU set.

Two heads, one per montage, so the default configuration runs on BrainFlow's
SYNTHETIC_BOARD and the second on an OpenBCI Cyton. Features come from
edge-mer's EegPreprocessor (4 s windows, 2 s hop, 1-45 Hz, DE in five bands on
z-scored channels). Reported honestly: leave-one-subject-out (the deployment
case: a new user) and within-subject across trials (train on one trial of each
emotion, test on the other, both ways).

    python training/eeg.py [--shared ../shared] [--bundle edge_mer/assets/default_bundle]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bundle_manifest import update_encoder
from edge_mer.bundle.schema import EncoderSpec, Metric, Provenance, TensorInfo
from edge_mer.bundle.writer import file_entry
from edge_mer.preprocess.eeg import EegParams
from edge_mer_calibration.eeg import read_gu_folder

log = logging.getLogger("training.eeg")

LABELS = ("happy", "sad", "fear")
MONTAGES = {
    "eeg": ("SYNTHETIC_BOARD", ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7", "F3", "F4", "F8")),
    "eeg_cyton": ("CYTON_BOARD", ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")),
}
SEED = 7
HOP_S = 2.0
WEIGHT_DECAY = 1e-2


def params_for(channels: tuple[str, ...]) -> EegParams:
    return EegParams(channels=channels, sample_rate=128, window_s=4.0, notch_hz=50.0, bandpass=(1.0, 45.0),
                     feature="de", standardize=True)


class LinearHead(nn.Module):
    """Fixed feature standardisation (from the training set) and a linear layer; softmax for export."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))
        self.linear = nn.Linear(mean.size, n_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(((x - self.mean) / self.std).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def fit(x: np.ndarray, y: np.ndarray) -> LinearHead:
    """L2-regularised multinomial logistic regression, full batch with L-BFGS (deterministic)."""
    torch.manual_seed(SEED)
    model = LinearHead(x.mean(axis=0), x.std(axis=0) + 1e-6, len(LABELS))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.LBFGS(model.linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model.logits(xt), yt) + WEIGHT_DECAY * model.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


@torch.no_grad()
def accuracy(model: LinearHead, x: np.ndarray, y: np.ndarray) -> float:
    return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model: LinearHead, example: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model.eval(), (torch.from_numpy(example[:1]),), str(path), input_names=["de"],
                      output_names=["probs"], dynamic_axes={"de": {0: "N"}, "probs": {0: "N"}}, opset_version=17,
                      dynamo=False)


def evaluate(x: np.ndarray, y: np.ndarray, subjects: np.ndarray, trials: np.ndarray,
             fold_dir: Path | None = None) -> dict:
    """LOSO and within-subject cross-trial accuracy; LOSO fold models go to ``fold_dir/<subject>.onnx``."""
    loso = {}
    for s in sorted(set(subjects)):
        model = fit(x[subjects != s], y[subjects != s])
        loso[s] = accuracy(model, x[subjects == s], y[subjects == s])
        if fold_dir is not None:
            export(model, x, fold_dir / f"{s}.onnx")
    within = {}
    for s in sorted(set(subjects)):
        scores = []
        for t in sorted(set(trials)):
            train = (subjects == s) & (trials != t)
            test = (subjects == s) & (trials == t)
            scores.append(accuracy(fit(x[train], y[train]), x[test], y[test]))
        within[s] = float(np.mean(scores))
    return {"loso_accuracy": float(np.mean(list(loso.values()))), "loso_per_subject": loso,
            "within_subject_accuracy": float(np.mean(list(within.values()))), "within_per_subject": within,
            "chance": 1.0 / len(LABELS), "windows": int(len(y))}


def build(name: str, shared: Path, bundle: Path, results_dir: Path) -> dict:
    board, channels = MONTAGES[name]
    params = params_for(channels)
    samples = list(read_gu_folder(shared / "data" / "eeg" / "gu", params, hop_s=HOP_S))
    x = np.stack([s.array for s in samples]).astype(np.float32)
    y = np.array([LABELS.index(s.label) for s in samples])
    subjects = np.array([s.group for s in samples])
    trials = np.array([s.source.split("t")[1][0] for s in samples])
    results = evaluate(x, y, subjects, trials, results_dir / "eeg_folds" / name)
    log.info("%s (%s, %d windows): LOSO %.3f, within-subject %.3f (chance %.3f)", name, board, len(y),
             results["loso_accuracy"], results["within_subject_accuracy"], results["chance"])
    (results_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    model = fit(x, y)
    rel = f"eeg/{name}_de_linear.onnx"
    export(model, x, bundle / rel)
    split_loso = "leave-one-subject-out over 8 subjects (1 2 3 6 7 8 10 11), 4 s windows, 2 s hop"
    split_within = "within-subject across trials: train on one trial per emotion, test on the other, both ways"
    spec = EncoderSpec(
        modality="eeg",
        models={"fp32": file_entry(bundle, rel)},
        inputs=(TensorInfo("de", ("N", len(channels), len(params.bands)), layout="NCF",
                           description="differential entropy per channel (params order) and band"),),
        outputs=(TensorInfo("probs", ("N", len(LABELS)), kind="probs", labels=LABELS),),
        preprocessing=params,
        label_map={label: label for label in LABELS},
        provenance=Provenance(source=f"training/eeg.py (seed {SEED}), {board} montage",
                              training_data="GU EEG Emotion Recognition Dataset (figshare 29170289), 8 subjects",
                              licence="weights: MIT; data repository licence MIT"),
        metrics=(Metric("accuracy", round(results["loso_accuracy"], 4), "GU EEG (happy/sad/fear)", split_loso,
                        n=len(y), notes=f"chance {1 / 3:.3f}"),
                 Metric("accuracy", round(results["within_subject_accuracy"], 4), "GU EEG (happy/sad/fear)",
                        split_within, n=len(y), notes="subject-dependent; a per-user calibrated model")),
        description=f"Emotion from EEG band features on the {board} montage {' '.join(channels)}.")
    update_encoder(bundle, name, spec)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=root.parent / "shared")
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    results_dir = root / "training" / "results"
    results_dir.mkdir(exist_ok=True)
    for name in MONTAGES:
        build(name, args.shared, args.bundle, results_dir)


if __name__ == "__main__":
    main()
