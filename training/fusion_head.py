"""The default bundle's stacked fusion head, trained on held-out encoder outputs, and the rules compared with it.

No public dataset here has the face, voice and EEG of one person, so a
training example *pairs modalities by label across people and corpora*: draw
a label, then for each modality an output of a model that never saw that
person, on a window of that label (:mod:`heldout`, split ``A``: FER2013
PublicTest faces, speakers of folds 0-1, GU subjects 1 2 3 6). A modality
whose data has no such label (EEG has only happy/sad/fear, the faces no
boredom) gives a window of a random label instead: it has to say something,
and it cannot know. Probabilities are the calibrated ones the runtime feeds
the head. Each modality is dropped with probability 0.3 (at least one
kept), and the EEG slot is the synthetic-board or the Cyton montage at
random, so the head learns to fuse whatever is present through its mask.

The head (stacked generalisation, a multinomial logistic regression over the
encoders' log-probabilities): ``logits = W [mask_m log p_m ..., mask]
+ b``, softmax over the 8 fused labels. Validation pairs split ``B``
(CK+48 faces of other people, speakers of folds 2-3, GU subjects 7 8 10 11),
which neither the encoders, the temperatures nor the head saw, over every
subset of modalities, with the package's own rules beside it.

    python training/fusion_head.py [--bundle edge_mer/assets/default_bundle]   # after calibrate.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

import heldout
from edge_mer_calibration.pairing import ENCODERS, Pools, pairings
from bundle_manifest import update_fusion
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import FusionHead, Manifest, TensorInfo
from edge_mer.bundle.writer import file_entry

log = logging.getLogger("training.fusion_head")

SEED = 11
FLOOR = 1e-4
#: Weight decays tried by :func:`select_weight_decay` (on split A only).
WEIGHT_DECAYS = (1e-3, 1e-2, 0.1, 0.3, 1.0)
HEAD_FILE = "fusion/stacked_head.onnx"
STACKED = "stacked"
EVAL_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise")  # what CK+48 (split B's faces) has


class StackedHead(nn.Module):
    """``softmax(W [mask_m * log p_m ..., mask] + b)``: inputs named after the encoders, plus ``mask``.

    One linear layer over the concatenation, not one per encoder summed: the
    INT8 export then quantizes one MatMul input (log-probabilities in
    [log 1e-4, 0] and the 0/1 mask) instead of a chain of Adds whose partial
    logits would each be rounded.
    """

    def __init__(self, widths: dict[str, int], n_labels: int) -> None:
        super().__init__()
        self.names = tuple(widths)
        self.linear = nn.Linear(sum(widths.values()) + len(widths), n_labels)

    def logits(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = feeds["mask"]
        parts = [mask[:, i:i + 1] * torch.log(torch.clamp(feeds[name], min=FLOOR)) for i, name in enumerate(self.names)]
        return self.linear(torch.cat(parts + [mask], dim=1))

    def forward(self, face: torch.Tensor, speech: torch.Tensor, eeg: torch.Tensor, eeg_cyton: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        feeds = {"face": face, "speech": speech, "eeg": eeg, "eeg_cyton": eeg_cyton, "mask": mask}
        return torch.softmax(self.logits(feeds), dim=1)


def train_head(pools: Pools, labels: tuple[str, ...], weight_decay: float, steps: int = 3000, batch: int = 256,
               rows: int = 100_000) -> StackedHead:
    """Adam on minibatches of ``rows`` pairings drawn once (with modality dropout), cross-entropy."""
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    feeds, y = pairings(pools, labels, rows, rng)
    data = {k: torch.from_numpy(v) for k, v in feeds.items()}
    target = torch.from_numpy(y)
    head = StackedHead({name: pools.rows[name].shape[1] for name in ENCODERS}, len(labels))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    return fit(head, data, target, opt, sched, steps, batch, rng)


def fit(head: nn.Module, data: dict[str, torch.Tensor], target: torch.Tensor, opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler, steps: int, batch: int, rng: np.random.Generator,
        tag: str = "") -> nn.Module:
    """Cross-entropy on ``steps`` minibatches of ``batch`` rows drawn with ``rng`` (shared by the head recipes)."""
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(len(target), size=batch))
        loss = nn.functional.cross_entropy(head.logits({k: v[idx] for k, v in data.items()}), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0:
            log.info("%sstep %d: loss %.4f", tag, step, loss.item())
    return head.eval()


def inner_split(outputs: dict) -> dict:
    """Split A cut in two by person, for choosing the weight decay without touching split B.

    ``A1``: every other speaker of folds 0-1, GU subjects 1 2, even FER2013 rows; ``A2``: the other
    speakers, subjects 3 6, odd rows.
    """
    out = {}
    for name, rows in outputs.items():
        splits = rows["splits"].astype("<U2")
        a = splits == "A"
        if name == "face":
            first = np.arange(len(splits)) % 2 == 0
        elif name == "speech":
            first = np.isin(rows["groups"], [g for g in np.unique(rows["groups"][a])][0::2])
        else:
            first = np.isin(rows["groups"], ["sub1", "sub2"])
        splits[a & first], splits[a & ~first] = "A1", "A2"
        out[name] = dict(rows, splits=splits)
    return out


@torch.no_grad()
def pairing_accuracy(head: StackedHead, pools: Pools, labels: tuple[str, ...], n: int = 20_000) -> float:
    feeds, y = pairings(pools, labels, n, np.random.default_rng(SEED + 3))
    probs = head.logits({k: torch.from_numpy(v) for k, v in feeds.items()})
    return float((probs.argmax(1).numpy() == y).mean())


def select_weight_decay(manifest: Manifest, outputs: dict, labels: tuple[str, ...], steps: int) -> float:
    """The weight decay whose head, trained on half of split A's people, is most accurate on the other half."""
    inner = inner_split(outputs)
    train, val = Pools(manifest, inner, "A1"), Pools(manifest, inner, "A2")
    scores = {wd: pairing_accuracy(train_head(train, labels, wd, steps), val, labels) for wd in WEIGHT_DECAYS}
    for wd, score in scores.items():
        log.info("weight decay %g: %.4f on the inner validation half of split A", wd, score)
    return max(scores, key=scores.get)


def export_head(head: StackedHead, path: Path, widths: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = tuple(torch.full((1, widths[name]), 1.0 / widths[name]) for name in ENCODERS) + \
        (torch.ones(1, len(ENCODERS)),)
    names = list(ENCODERS) + ["mask"]
    torch.onnx.export(head, dummy, str(path), input_names=names, output_names=["probs"],
                      dynamic_axes={name: {0: "N"} for name in names + ["probs"]}, opset_version=17, dynamo=False)


def head_spec(bundle: Path, manifest: Manifest, labels: tuple[str, ...]) -> FusionHead:
    inputs = tuple(TensorInfo(name, ("N", len(manifest.encoders[name].labels)), kind="probs",
                              labels=tuple(manifest.encoders[name].label_map[x] for x in manifest.encoders[name].labels),
                              description=f"calibrated {name} probabilities; zeros when absent")
                   for name in ENCODERS)
    mask = TensorInfo("mask", ("N", len(ENCODERS)), labels=ENCODERS, description="1 where the encoder's result is valid")
    return FusionHead(models={"fp32": file_entry(bundle, HEAD_FILE)}, inputs=inputs + (mask,),
                      outputs=(TensorInfo("probs", ("N", len(labels)), kind="probs", labels=labels),))


def fused_labels(manifest: Manifest) -> tuple[str, ...]:
    from edge_mer.fusion.rules import label_order

    return label_order({t for spec in manifest.encoders.values() for t in spec.label_map.values()})


def write_head_data(pools: dict[str, Pools], labels: tuple[str, ...], out: Path) -> tuple[Path, Path]:
    """``edge-mer export`` data for the head: calibration rows from split A, evaluation rows from split B.

    Both use the training-time modality dropout, so the gate sees every subset of modalities;
    evaluation labels are the six CK+48 has (split B's faces).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n, allowed, seed in (("A", 1000, labels, SEED + 1), ("B", 3000, EVAL_LABELS, SEED + 2)):
        feeds, y = pairings(pools[split], allowed, n, np.random.default_rng(seed))
        path = out / f"head_{'calib' if split == 'A' else 'eval'}.npz"
        np.savez_compressed(path, **feeds, labels=np.array([allowed[i] for i in y]))
        paths.append(path)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--head-data", type=Path, default=Path("/tmp/edge-mer-head-data"),
                        help="where the export calibration/evaluation .npz files go (derived from ../shared)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    manifest = parse_manifest(json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8")))
    labels = fused_labels(manifest)
    outputs = heldout.load()
    train_pools = Pools(manifest, outputs, "A")
    weight_decay = select_weight_decay(manifest, outputs, labels, args.steps)
    log.info("weight decay %g", weight_decay)
    head = train_head(train_pools, labels, weight_decay, args.steps)
    export_head(head, args.bundle / HEAD_FILE, {name: train_pools.rows[name].shape[1] for name in ENCODERS})
    fusion = manifest.fusion
    # The stacked head is the one named "stacked" (the default unless another head won on split B);
    # every other shipped head is kept as it is.
    heads = dict(fusion.named_heads())
    heads[STACKED] = head_spec(args.bundle, manifest, labels)
    default = fusion.head_name if fusion.head is not None else STACKED
    update_fusion(args.bundle, dataclasses.replace(
        fusion, rule="learned", head=heads.pop(default), head_name=default, heads=heads,
        notes=fusion.notes.split(" | head:")[0] + " | head: training/fusion_head.py (stacked logistic regression on "
              "calibrated held-out outputs paired by label across people and corpora; modality dropout 0.3)"))
    log.info("head written to %s", args.bundle / HEAD_FILE)
    calib, evaluation = write_head_data({"A": train_pools, "B": Pools(manifest, outputs, "B")}, labels, args.head_data)
    log.info("export data: --head-calib %s --head-eval %s", calib, evaluation)


if __name__ == "__main__":
    main()
