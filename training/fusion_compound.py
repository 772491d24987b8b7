"""The default bundle's ``compound`` fusion head: a fused distribution plus per-label sigmoid scores.

No dataset here has multi-label emotion annotations, so the label sets this
head learns are *derived by cross-person pairing*, not annotated compound
expressions: a row draws a set ``S`` of one label (half the rows) or one of
Du et al. (2014)'s twelve two-emotion compounds (happily surprised, sadly
angry, ...), then each present modality a held-out output of a window of one
member of ``S``, from another person (:mod:`edge_mer_calibration.compound`,
modality dropout as for the stacked head). A pair row therefore holds, say, a
happy face and a surprised voice of two different people: what the head
learns is to keep both labels active when the modalities disagree between
them, not to recognise a "happily surprised" face.

The head is the stacked head's linear layer (the trunk) over
``[mask_m log p_m ..., mask]`` with two outputs: ``probs`` (softmax of the
trunk's logits ``z``, cross-entropy against the uniform distribution over
``S``, so it stays a distribution) and ``labels`` (a sigmoid score per label,
binary cross-entropy against the multi-hot ``S``), trained jointly. Two ways
for ``labels`` to read the trunk are tried (:data:`VARIANTS`):
``calibrated``, ``sigmoid(a * log_softmax(z) + c)`` per label, and
``independent``, ``L`` more trunk columns. The variant and weight decay (best
mean average precision) and the per-label thresholds (best F1) are chosen
with heads trained on half of split ``A``'s people (``A1``), scored on the
other half (``A2``); the shipped head is then trained on all of ``A`` with
that choice. Split ``B`` (CK+48 faces, speakers of folds 2-3, GU subjects 7 8
10 11) is only measured.

    python training/fusion_compound.py                # train, export, evaluate, write results/compound_*.json
    python training/fusion_compound.py --install      # add results/compound_head.json to the manifest's fusion.heads
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
from bundle_manifest import update_fusion
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import FusionHead, Manifest, TensorInfo
from edge_mer.bundle.writer import file_entry
from edge_mer.config import from_dict, to_dict
from edge_mer.errors import BundleError, ConfigError
from edge_mer_calibration.compound import DU_PAIRS, SINGLE_SHARE, compound_pairings, first_members
from edge_mer_calibration.multilabel_metrics import (average_precision, best_thresholds, exact_set_accuracy,
                                                     f1_scores, top1_in_set)
from edge_mer_calibration.pairing import ENCODERS, Pools, pairings
from fusion_head import EVAL_LABELS, SEED, WEIGHT_DECAYS, StackedHead, fused_labels, head_spec, inner_split

log = logging.getLogger("training.fusion_compound")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "training" / "results"
SPEC_JSON = RESULTS / "compound_head.json"
EVAL_JSON = RESULTS / "compound_eval.json"
HEAD_NAME = "compound"
HEAD_FILE = "fusion/compound_head.onnx"
STACKED_FILE = "fusion/stacked_head.onnx"
N_VALIDATION = 20_000  # A2 rows for the weight decay and the thresholds
N_EVAL = 3000  # split B rows, as the stacked head's evaluation
N_CALIB = 1000  # split A rows of the export calibration data
DERIVED = "label sets derived by cross-person pairing of single-label data, not annotated compound expressions"


#: How the ``labels`` scores read the trunk: ``calibrated`` = ``sigmoid(a * log probs + c)`` per label (a
#: monotone, BCE-trained calibration of the fused log-probability); ``independent`` = ``L`` more trunk columns.
VARIANTS = ("calibrated", "independent")


class CompoundHead(StackedHead):
    """:class:`StackedHead`'s one linear layer (the trunk) with two outputs, ``probs`` (softmax) and ``labels`` (sigmoid).

    ``calibrated``: the trunk has ``L`` columns ``z``; ``probs = softmax(z)``,
    ``labels = sigmoid(a * log_softmax(z) + c)`` with per-label ``a``, ``c``.
    ``independent``: ``2L`` columns, the second half the sigmoid's logits.
    """

    def __init__(self, widths: dict[str, int], n_labels: int, variant: str = "calibrated") -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
        super().__init__(widths, n_labels * (1 if variant == "calibrated" else 2))
        self.n_labels, self.variant = n_labels, variant
        if variant == "calibrated":
            self.scale = nn.Parameter(torch.ones(n_labels))
            self.offset = nn.Parameter(torch.zeros(n_labels))

    def two_logits(self, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The softmax's logits and the sigmoid's logits, each ``[N, L]``."""
        z = self.logits(feeds)
        if self.variant == "calibrated":
            return z, self.offset + self.scale * torch.log_softmax(z, dim=1)
        return z[:, :self.n_labels], z[:, self.n_labels:]

    def forward(self, face: torch.Tensor, speech: torch.Tensor, eeg: torch.Tensor, eeg_cyton: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, zl = self.two_logits({"face": face, "speech": speech, "eeg": eeg, "eeg_cyton": eeg_cyton, "mask": mask})
        return torch.softmax(z, dim=1), torch.sigmoid(zl)


def compound_loss(z: torch.Tensor, zl: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax against uniform-over-``S`` plus BCE of the sigmoid scores against ``S``."""
    soft = nn.functional.cross_entropy(z, sets / sets.sum(dim=1, keepdim=True))
    return soft + nn.functional.binary_cross_entropy_with_logits(zl, sets)


def train_head(pools: Pools, labels: tuple[str, ...], weight_decay: float, steps: int = 3000, batch: int = 256,
               rows: int = 100_000, variant: str = "calibrated") -> CompoundHead:
    """AdamW on minibatches of ``rows`` compound pairings drawn once, as the stacked head is trained."""
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    feeds, sets = compound_pairings(pools, labels, rows, rng)
    data = {k: torch.from_numpy(v) for k, v in feeds.items()}
    target = torch.from_numpy(sets)
    head = CompoundHead({name: pools.rows[name].shape[1] for name in ENCODERS}, len(labels), variant)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(rows, size=batch))
        loss = compound_loss(*head.two_logits({k: v[idx] for k, v in data.items()}), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0:
            log.info("step %d: loss %.4f", step, loss.item())
    return head.eval()


@torch.no_grad()
def head_scores(head: CompoundHead, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, labels)`` of the torch head on feed dicts."""
    probs, scores = head(*(torch.from_numpy(feeds[k]) for k in (*ENCODERS, "mask")))
    return probs.numpy(), scores.numpy()


def select(manifest: Manifest, outputs: dict, labels: tuple[str, ...],
           steps: int) -> tuple[tuple[str, float], np.ndarray, dict]:
    """Variant and weight decay (best mAP), per-label thresholds (best F1): heads trained on A1, scored on A2."""
    inner = inner_split(outputs)
    train, val = Pools(manifest, inner, "A1"), Pools(manifest, inner, "A2")
    feeds, sets = compound_pairings(val, labels, N_VALIDATION, np.random.default_rng(SEED + 3))
    scored, maps = {}, {}
    for variant in VARIANTS:
        for wd in WEIGHT_DECAYS:
            scored[variant, wd] = head_scores(train_head(train, labels, wd, steps, variant=variant), feeds)[1]
            maps[variant, wd] = float(np.nanmean(average_precision(scored[variant, wd], sets)))
            log.info("%s, weight decay %g: mAP %.4f on A2", variant, wd, maps[variant, wd])
    best = max(maps, key=maps.get)
    thresholds = np.round(best_thresholds(scored[best], sets), 4)
    report = {"rows": N_VALIDATION, "map": {f"{v} wd={wd:g}": round(m, 4) for (v, wd), m in maps.items()},
              "variant": best[0], "weight_decay": best[1],
              "f1": dict(zip(labels, np.round(f1_scores(scored[best], sets, thresholds), 4).tolist()))}
    return best, thresholds, report


def export_head(head: CompoundHead, path: Path, widths: dict[str, int]) -> None:
    """ONNX opset 17 with inputs face, speech, eeg, eeg_cyton, mask and outputs probs, labels, batch axis ``N``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = tuple(torch.full((1, widths[name]), 1.0 / widths[name]) for name in ENCODERS) + \
        (torch.ones(1, len(ENCODERS)),)
    names = [*ENCODERS, "mask"]
    torch.onnx.export(head, dummy, str(path), input_names=names, output_names=["probs", "labels"],
                      dynamic_axes={name: {0: "N"} for name in [*names, "probs", "labels"]}, opset_version=17,
                      dynamo=False)


def compound_spec(bundle: Path, manifest: Manifest, labels: tuple[str, ...], thresholds: np.ndarray) -> FusionHead:
    """The head's manifest entry: the stacked head's inputs, a ``probs`` and a ``multilabel`` output."""
    inputs = head_spec(bundle, manifest, labels).inputs
    outputs = (TensorInfo("probs", ("N", len(labels)), kind="probs", labels=labels,
                          description="fused distribution (trained against uniform over the label set)"),
               TensorInfo("labels", ("N", len(labels)), kind="multilabel", labels=labels,
                          thresholds=tuple(float(t) for t in thresholds),
                          description=f"per-label sigmoid scores, not normalised; thresholds = best F1 on split A2; {DERIVED}"))
    return FusionHead(models={"fp32": file_entry(bundle, HEAD_FILE)}, inputs=inputs, outputs=outputs)


def load_spec(path: Path = SPEC_JSON) -> FusionHead:
    """The head entry written by :func:`main` (the dict form of a manifest's ``fusion.head``)."""
    return from_dict(FusionHead, json.loads(path.read_text(encoding="utf-8")), "compound_head")


def install(bundle_path: Path, spec_path: Path = SPEC_JSON) -> Path:
    """Add the head of ``spec_path`` to ``bundle_path``'s manifest as ``fusion.heads.compound``, keeping the rest."""
    head = load_spec(spec_path)
    entry = head.models["fp32"]
    current = file_entry(bundle_path, entry.path)
    if current.sha256 != entry.sha256:
        raise BundleError(f"{bundle_path / entry.path} has sha256 {current.sha256}, expected {entry.sha256} "
                          f"from {spec_path}; rerun training/fusion_compound.py")
    manifest = parse_manifest(json.loads((bundle_path / MANIFEST).read_text(encoding="utf-8")))
    fusion = manifest.fusion
    if fusion.head is None:
        raise BundleError(f"{bundle_path / MANIFEST} has no default fusion.head; fusion.heads.{HEAD_NAME} needs one")
    return update_fusion(bundle_path, dataclasses.replace(fusion, heads={**fusion.heads, HEAD_NAME: head}))


def _ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {k: feeds[k] for k in (*ENCODERS, "mask")})


def _set_metrics(probs: np.ndarray, scores: np.ndarray, sets: np.ndarray, thresholds: np.ndarray,
                 labels: tuple[str, ...]) -> dict:
    present = [j for j, x in enumerate(labels) if x in EVAL_LABELS]
    absent = [j for j in range(len(labels)) if j not in present]
    ap, f1 = average_precision(scores, sets), f1_scores(scores, sets, thresholds)
    active = scores >= thresholds
    return {"rows": len(sets), "f1": {labels[j]: round(float(f1[j]), 4) for j in present},
            "macro_f1": round(float(np.mean(f1[present])), 4),
            "ap": {labels[j]: round(float(ap[j]), 4) for j in present},
            "map": round(float(np.mean(ap[present])), 4),
            "exact_set_accuracy": round(exact_set_accuracy(scores, sets, thresholds), 4),
            "probs_top1_in_set": round(top1_in_set(probs, sets), 4),
            "mean_active_labels": round(float(active.sum(1).mean()), 4),
            "no_active_label": round(float((~active.any(1)).mean()), 4),
            "false_activation_rate_labels_without_positives": {labels[j]: round(float(active[:, j].mean()), 4)
                                                                for j in absent}}


def evaluate(bundle: Path, pools: Pools, labels: tuple[str, ...], thresholds: np.ndarray,
             feeds: dict[str, np.ndarray], sets: np.ndarray) -> dict:
    """Split B figures of the exported head (ONNX Runtime), beside the stacked head on the same rows."""
    probs, scores = _ort_run(bundle / HEAD_FILE, feeds)
    stacked = _ort_run(bundle / STACKED_FILE, feeds)[0]
    singles = sets.sum(1) == 1
    out = {"all": _set_metrics(probs, scores, sets, thresholds, labels),
           "single_label_rows": _set_metrics(probs[singles], scores[singles], sets[singles], thresholds, labels),
           "pair_rows": _set_metrics(probs[~singles], scores[~singles], sets[~singles], thresholds, labels),
           "stacked_on_compound_rows": {
               "probs_top1_in_set": round(top1_in_set(stacked, sets), 4),
               "map_of_probs_as_label_scores": round(float(np.nanmean(average_precision(stacked, sets)[
                   [j for j, x in enumerate(labels) if x in EVAL_LABELS]])), 4)}}
    single_feeds, y = pairings(pools, EVAL_LABELS, N_EVAL, np.random.default_rng(SEED + 2))
    truth = np.array([labels.index(EVAL_LABELS[i]) for i in y])
    compound_probs = _ort_run(bundle / HEAD_FILE, single_feeds)[0]
    stacked_probs = _ort_run(bundle / STACKED_FILE, single_feeds)[0]
    out["single_label_pairings"] = {
        "rows": N_EVAL, "seed": SEED + 2, "note": "pairing.pairings rows, the same as head_eval.npz",
        "compound_probs_accuracy": round(float((compound_probs.argmax(1) == truth).mean()), 4),
        "stacked_probs_accuracy": round(float((stacked_probs.argmax(1) == truth).mean()), 4)}
    return out


def write_head_data(feeds: dict[str, np.ndarray], sets: np.ndarray, labels: tuple[str, ...], path: Path) -> Path:
    """Export data: the head inputs, ``labels`` (each row's first set member in label order), ``label_sets``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **feeds, labels=first_members(sets, labels), label_sets=sets)
    return path


def train_and_evaluate(bundle: Path, steps: int, head_data: Path) -> dict:
    """Select on A1/A2, train on A, export, write the head entry, evaluate on B and write the export data."""
    manifest = parse_manifest(json.loads((bundle / MANIFEST).read_text(encoding="utf-8")))
    labels = fused_labels(manifest)
    outputs = heldout.load()
    (variant, weight_decay), thresholds, validation = select(manifest, outputs, labels, steps)
    log.info("%s, weight decay %g, thresholds %s", variant, weight_decay, dict(zip(labels, thresholds.tolist())))
    train = Pools(manifest, outputs, "A")
    head = train_head(train, labels, weight_decay, steps, variant=variant)
    export_head(head, bundle / HEAD_FILE, {name: train.rows[name].shape[1] for name in ENCODERS})
    spec = compound_spec(bundle, manifest, labels, thresholds)
    SPEC_JSON.write_text(json.dumps(to_dict(spec), indent=2) + "\n", encoding="utf-8")
    test = Pools(manifest, outputs, "B")
    feeds, sets = compound_pairings(test, labels, N_EVAL, np.random.default_rng(SEED + 5), singles=EVAL_LABELS)
    probs, scores = head_scores(head, feeds)
    onnx_probs, onnx_scores = _ort_run(bundle / HEAD_FILE, feeds)
    report = {"what": f"compound head on split B; {DERIVED}",
              "design": {"pairs": [list(p) for p in DU_PAIRS], "pairs_source": "Du, Tao & Martinez 2014, PNAS 111(15)",
                         "single_share": SINGLE_SHARE, "train_singles": list(labels), "eval_singles": list(EVAL_LABELS),
                         "loss": "CE(softmax, uniform over S) + BCE(sigmoid, multi-hot S)",
                         "variants": {"calibrated": "labels = sigmoid(a * log probs + c), per label",
                                      "independent": "labels = sigmoid(L more trunk columns)"},
                         "thresholds": "per label, best F1 on A2 of a head trained on A1; shipped head trained on A"},
              "variant": variant, "weight_decay": weight_decay, "thresholds": dict(zip(labels, thresholds.tolist())),
              "validation_a2": validation, "eval_seed": SEED + 5,
              "onnx_vs_torch_max_abs_diff": float(max(np.abs(onnx_probs - probs).max(), np.abs(onnx_scores - scores).max())),
              **evaluate(bundle, test, labels, thresholds, feeds, sets)}
    EVAL_JSON.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    calib_feeds, calib_sets = compound_pairings(train, labels, N_CALIB, np.random.default_rng(SEED + 4))
    write_head_data(calib_feeds, calib_sets, labels, head_data / "compound_label_sets_calib.npz")
    write_head_data(feeds, sets, labels, head_data / "compound_label_sets_eval.npz")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "edge_mer" / "assets" / "default_bundle")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--head-data", type=Path, default=Path("/tmp/edge-mer-head-data"),
                        help="where the export calibration/evaluation .npz files go (derived from ../shared)")
    parser.add_argument("--install", action="store_true",
                        help=f"only add {SPEC_JSON.relative_to(ROOT)} to the manifest as fusion.heads.{HEAD_NAME}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.install:
        log.info("installed: %s", install(args.bundle))
        return
    torch.set_num_threads(1)
    report = train_and_evaluate(args.bundle, args.steps, args.head_data)
    log.info("split B: %s", json.dumps(report["all"]))
    log.info("written %s, %s and %s", args.bundle / HEAD_FILE, SPEC_JSON, EVAL_JSON)


if __name__ == "__main__":
    main()
