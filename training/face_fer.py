"""Train a compact residual VGG face-expression CNN on FER2013 and compare it with mini-Xception.

Trains on FER2013 ``train/`` (48x48 grey) with runtime-like crop augmentation
(box scale/shift jitter, rotation, flips, brightness/contrast, blur), reports
on ``publictest/`` (never used for training or model selection: the last
epoch is exported) and CK+48 (the 6 classes shared with FER2013), exports
FP32 ONNX (BN folded, dynamic batch ``N``, output ``probs``) and a static
INT8 QDQ model calibrated on 500 train images, all through edge-mer's
``prepare_crops``.  Metrics go to ``training/results/face_fer.json``.

    nice -n 10 python training/face_fer.py --shared ../shared --out /work/face_candidate

``--skip-train`` re-uses ``<out>/face_fer_<name>.pt`` from an earlier run.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from edge_mer.preprocess.face import FaceParams, prepare_crops

log = logging.getLogger("training.face_fer")

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CK_LABELS = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
             "sadness": "sad", "surprise": "surprise"}  # contempt left out
NAME = "resvgg16"
WIDTHS = (16, 40, 80, 160)
PARAMS = FaceParams(size=(48, 48), color="gray", mean=(0.5,), std=(0.5,), margin=0.0, interpolation="area")
MINIX_PARAMS = FaceParams(size=(64, 64), color="gray", mean=(0.5,), std=(0.5,), margin=0.0, interpolation="linear")
HPARAMS = {"epochs": 15, "batch": 128, "optimizer": "SGD nesterov momentum 0.9", "max_lr": 0.1,
           "schedule": "OneCycle (cosine, pct_start 0.25)", "weight_decay": 5e-4, "label_smoothing": 0.1,
           "class_weights": "(n_c / mean n)^-0.5, normalised to mean 1 over samples", "dropout": 0.3,
           "aug": {"scale": [0.9, 1.1], "shift": 0.1, "rotate_deg": 15, "hflip": 0.5,
                   "brightness": 0.15, "contrast": [0.7, 1.3], "blur_p": 0.2, "blur_sigma": [0.5, 1.0],
                   "border": "replicate"},
           "seed": 0, "threads": 2}


class ConvBN(nn.Module):
    """3x3 conv + BN (foldable for export)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fold(self) -> None:
        self.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(self.conv, self.bn)
        self.bn = nn.Identity()


class Stage(nn.Module):
    """conv-BN-ReLU to ``cout``, then a residual conv-BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.a, self.b = ConvBN(cin, cout), ConvBN(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x))
        return F.relu(y + self.b(y))


class FaceNet(nn.Module):
    """48x48 grey -> 7 logits: stem at 48, residual stages at 24, 12, 6, global average pool."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, dropout: float = 0.3) -> None:
        super().__init__()
        self.stem = ConvBN(1, widths[0])
        self.stages = nn.ModuleList(Stage(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1], len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            x = stage(F.max_pool2d(x, 2))
        return self.fc(self.drop(x.mean(dim=(2, 3))))

    def fold(self) -> None:
        for m in self.modules():
            if isinstance(m, ConvBN):
                m.fold()


def read_images(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n,48,48] images and int label ids of one FER2013 split, in index.csv order."""
    images, labels = [], []
    with open(root / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                images.append(read_grey(root / row["path"]))
                labels.append(LABELS.index(row["label"]))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"cannot decode {path}")
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def read_ckplus(root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """CK+48 crops (as read_face_folder reads them) of the 6 FER classes, sorted by folder and file."""
    images, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name in CK_LABELS):
        for path in sorted(folder.glob("*.png")):
            images.append(cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
            labels.append(LABELS.index(CK_LABELS[folder.name]))
    return images, np.asarray(labels, dtype=np.int64)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Runtime-like jitter of a [B,1,H,W] batch in 0..1: box scale/shift, rotation, flip, photometric, blur."""
    b = x.shape[0]
    u = lambda lo, hi: torch.rand(b, generator=gen) * (hi - lo) + lo  # noqa: E731
    scale, angle = torch.exp(u(math.log(0.9), math.log(1.1))), u(-15, 15) * math.pi / 180
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-0.2, 0.2)], 1),
                         torch.stack([sin * flip, cos, u(-0.2, 0.2)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.7, 1.3).view(b, 1, 1, 1) + mean + u(-0.15, 0.15).view(b, 1, 1, 1)
    blur = torch.rand(b, generator=gen) < 0.2
    if blur.any():
        sigma = float(u(0.5, 1.0)[0])
        k = torch.exp(-torch.arange(-1, 2, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
        k = (k[:, None] * k[None, :] / k.sum() ** 2).view(1, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k)
    return x.clamp(0, 1)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    w = (counts / counts.mean()) ** -0.5
    w /= (w * counts).sum() / counts.sum()
    return torch.tensor(w, dtype=torch.float32)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - PARAMS.mean[0]) / PARAMS.std[0]


def train(model: FaceNet, images: np.ndarray, labels: np.ndarray, val: tuple[np.ndarray, np.ndarray],
          hp: dict) -> float:
    """SGD + OneCycle over ``hp['epochs']``; logs PublicTest accuracy for monitoring only. Returns seconds."""
    gen = torch.Generator().manual_seed(hp["seed"])
    x_all = torch.from_numpy(images).float().div_(255).unsqueeze(1)
    y_all = torch.from_numpy(labels)
    steps = len(images) // hp["batch"]
    opt = torch.optim.SGD(model.parameters(), lr=hp["max_lr"], momentum=0.9, nesterov=True,
                          weight_decay=hp["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, hp["max_lr"], total_steps=steps * hp["epochs"],
                                                pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(labels), label_smoothing=hp["label_smoothing"])
    model.to(memory_format=torch.channels_last)
    started = time.perf_counter()
    for epoch in range(hp["epochs"]):
        model.train()
        order, total = torch.randperm(len(images), generator=gen), 0.0
        for i in range(steps):
            idx = order[i * hp["batch"]:(i + 1) * hp["batch"]]
            x = normalise(augment(x_all[idx], gen)).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = torch_accuracy(model, *val) if epoch % 5 == 4 or epoch == hp["epochs"] - 1 else float("nan")
        log.info("epoch %d/%d loss %.4f publictest %.4f (%.0f s)", epoch + 1, hp["epochs"], total / steps, acc,
                 time.perf_counter() - started)
    return time.perf_counter() - started


@torch.no_grad()
def torch_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    x = normalise(torch.from_numpy(images).float().div_(255).unsqueeze(1))
    pred = torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((pred.numpy() == labels).mean())


def export_onnx(model: FaceNet, path: Path, probe: np.ndarray) -> float:
    """Fold BN, export with softmax output ``probs`` and batch axis ``N``; max |ORT - torch| on ``probe``."""
    model = model.to(memory_format=torch.contiguous_format).eval()
    model.fold()
    net = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    torch.onnx.export(net, torch.zeros(1, 1, *PARAMS.size[::-1]), str(path), input_names=["input"],
                      output_names=["probs"], dynamic_axes={"input": {0: "N"}, "probs": {0: "N"}},
                      opset_version=17, do_constant_folding=True, dynamo=False)
    with torch.no_grad():
        expected = net(torch.from_numpy(probe)).numpy()
    got = run_onnx(path, probe)
    return float(np.abs(got - expected).max())


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    s = session(path)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(["probs"], {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


class Calibration(CalibrationDataReader):
    """Prepared train crops, one per calibration step."""

    def __init__(self, batch: np.ndarray, name: str) -> None:
        self.items = iter([{name: batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def quantize(fp32: Path, int8: Path, calib: np.ndarray) -> None:
    """Static QDQ INT8 (U8 activations, per-channel S8 weights, MinMax), Softmax left in FP32."""
    import onnx
    softmax = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Softmax"]
    quantize_static(str(fp32), str(int8), Calibration(calib, "input"), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    nodes_to_exclude=softmax)


def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    pred = probs.argmax(1)
    recall = {LABELS[k]: round(float((pred[labels == k] == k).mean()), 4) for k in range(len(LABELS))
              if (labels == k).any()}
    return {"accuracy": round(float((pred == labels).mean()), 4), "n": int(len(labels)), "recall": recall}


def latencies(models: dict[str, tuple[Path, tuple[int, ...]]], runs: int = 200) -> dict[str, float]:
    """Median ms per batch-1 call, one intra-op thread, the models interleaved in one loop."""
    sessions = {k: (session(p, 1), np.random.default_rng(0).standard_normal(s).astype(np.float32))
                for k, (p, s) in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(runs + 20):
        for k, (s, x) in sessions.items():
            name = s.get_inputs()[0].name
            t0 = time.perf_counter()
            s.run(None, {name: x})
            if i >= 20:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 4) for k, v in times.items()}


def onnx_params(path: Path) -> int:
    import onnx
    return int(sum(np.prod(t.dims) for t in onnx.load(str(path)).graph.initializer))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate(path: Path, params: FaceParams, sets: dict[str, tuple[list, np.ndarray]]) -> tuple[dict, dict]:
    """Scores and raw probabilities of one ONNX model on each named (crops, labels) set."""
    out, probs = {}, {}
    for key, (crops, labels) in sets.items():
        probs[key] = run_onnx(path, prepare_crops(crops, params))
        out[key] = scores(probs[key], labels)
    return out, probs


def params_json(p: FaceParams) -> dict:
    return {"size": list(p.size), "color": p.color, "mean": list(p.mean), "std": list(p.std),
            "margin": p.margin, "interpolation": p.interpolation, "layout": p.layout}


def report(args: argparse.Namespace, train_info: dict, fer: Path, train_x: np.ndarray) -> dict:
    """Export, quantize, evaluate both models and the INT8 candidate, measure latency."""
    out = args.out
    fp32, int8 = out / f"face_fer_{NAME}.onnx", out / f"face_fer_{NAME}_int8.onnx"
    minix = args.shared / "models" / "face" / "mini_xception_fer2013.onnx"
    test_x, test_y = read_images(fer, "publictest")
    ck_x, ck_y = read_ckplus(args.shared / "data" / "face" / "ckplus48")
    sets = {"publictest": (list(test_x), test_y), "ckplus48": (ck_x, ck_y)}
    model = FaceNet()
    model.load_state_dict(torch.load(out / f"face_fer_{NAME}.pt"))
    n_params = sum(p.numel() for p in model.parameters())
    max_diff = export_onnx(model, fp32, prepare_crops(list(test_x[:256]), PARAMS))
    calib_idx = np.random.default_rng(HPARAMS["seed"]).choice(len(train_x), 500, replace=False)
    quantize(fp32, int8, prepare_crops(list(train_x[np.sort(calib_idx)]), PARAMS))
    new, new_p = evaluate(fp32, PARAMS, sets)
    q, q_p = evaluate(int8, PARAMS, sets)
    old, _ = evaluate(minix, MINIX_PARAMS, sets)
    lat = latencies({"minix": (minix, (1, 1, 64, 64)), "fp32": (fp32, (1, 1, 48, 48)),
                     "int8": (int8, (1, 1, 48, 48))})
    agree = {k: round(float((new_p[k].argmax(1) == q_p[k].argmax(1)).mean()), 4) for k in sets}
    gain = new["publictest"]["accuracy"] - old["publictest"]["accuracy"]
    int8_drop = new["publictest"]["accuracy"] - q["publictest"]["accuracy"]
    return {
        "mini_xception": {"file": str(minix), "sha256": sha256(minix), "params": onnx_params(minix), **old,
                          "latency_ms": lat["minix"], "face_params": params_json(MINIX_PARAMS)},
        "candidate": {"name": NAME, "architecture": f"residual VGG widths {list(WIDTHS)}, 48x48 grey",
                      "params": n_params, "fp32": {"file": str(fp32), "sha256": sha256(fp32), **new,
                                                   "latency_ms": lat["fp32"], "ort_vs_torch_max_abs": max_diff},
                      "int8": {"file": str(int8), "sha256": sha256(int8), **q, "latency_ms": lat["int8"],
                               "agreement_with_fp32": agree, "calibration": "500 random train images (seed 0)"},
                      "face_params": params_json(PARAMS)},
        "latency": {"batch": 1, "intra_op_num_threads": 1, "runs": 200, "statistic": "median",
                    "ratio_fp32_vs_minix": round(lat["fp32"] / lat["minix"], 3),
                    "ratio_int8_vs_minix": round(lat["int8"] / lat["minix"], 3)},
        "criteria": {"publictest_gain_points": round(100 * gain, 2), "gain_ge_2_points": bool(gain >= 0.02),
                     "latency_ratio_le_3": bool(lat["fp32"] / lat["minix"] <= 3.0),
                     "int8_drop_points": round(100 * int8_drop, 2), "int8_within_1_point": bool(int8_drop <= 0.01)},
        "training": {**train_info, "hyper_parameters": HPARAMS, "data": "FER2013 train/ (28,322); "
                     "reported on publictest/ (3,543), last epoch, no selection on publictest",
                     "torch": torch.__version__, "onnxruntime": ort.__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--out", type=Path, default=Path("/work/face_candidate"))
    parser.add_argument("--epochs", type=int, default=HPARAMS["epochs"])
    parser.add_argument("--skip-train", action="store_true", help="re-use <out>/face_fer_<name>.pt")
    parser.add_argument("--results", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "face_fer.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    HPARAMS["epochs"] = args.epochs
    torch.set_num_threads(HPARAMS["threads"])
    torch.manual_seed(HPARAMS["seed"])
    args.out.mkdir(parents=True, exist_ok=True)
    fer = args.shared / "data" / "face" / "fer2013"
    train_x, train_y = read_images(fer, "train")
    ckpt = args.out / f"face_fer_{NAME}.pt"
    info_path = args.out / f"face_fer_{NAME}.train.json"
    if not args.skip_train:
        model = FaceNet()
        seconds = train(model, train_x, train_y, read_images(fer, "publictest"), HPARAMS)
        torch.save(model.state_dict(), ckpt)
        info_path.write_text(json.dumps({"epochs": args.epochs, "seed": HPARAMS["seed"],
                                         "train_seconds": round(seconds, 1), "train_images": len(train_x)}))
    results = report(args, json.loads(info_path.read_text()), fer, train_x)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    log.info("%s", json.dumps(results["criteria"]))


if __name__ == "__main__":
    main()
