"""Temperature calibration of every encoder of the default bundle, on held-out people.

For each encoder one temperature ``T`` minimises the negative log-likelihood
of ``softmax(log p / T)`` (:func:`edge_mer.adapt.fit.fit_temperature`) on split ``A`` of :mod:`heldout` (models that never
saw those people); split ``B`` (other people, and for the face another
dataset) reports the expected calibration error (15 bins) before and after,
(EEG, with 144 windows per split: fitted on all eight subjects, reported
leave-one-subject-out),
with the mean top probability beside the accuracy. ``T`` goes into the
encoder's ``calibration`` in the manifest, and the runtime applies it.

    python training/calibrate.py [--bundle edge_mer/assets/default_bundle]   # after heldout.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

import heldout
from bundle_manifest import update_encoder
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.adapt.fit import WindowRows, fit_temperature, nll
from edge_mer.bundle.schema import Calibration
from edge_mer.numeric import expected_calibration_error, temperature_scale

log = logging.getLogger("training.calibrate")

SPLIT_NAMES = {
    "face": ("FER2013 PublicTest (3,589 web faces)", "CK+48, 6 classes (other people, another dataset)"),
    "speech": ("speaker folds 0-1 of EMO-DB + RAVDESS + TESS (out-of-fold)", "speaker folds 2-3 (other speakers)"),
}


def fit(probs: np.ndarray, labels: np.ndarray) -> float:
    """The NLL-minimising temperature, by the same fit ``edge-mer adapt`` uses per user (one row per window)."""
    n = len(labels)
    return fit_temperature(WindowRows(probs, np.arange(n), n, np.eye(probs.shape[1])), labels)


def summary(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"ece": expected_calibration_error(probs, labels), "accuracy": float(np.mean(probs.argmax(1) == labels)),
            "mean_confidence": float(probs.max(1).mean()), "nll": nll(probs, labels), "n": int(len(labels))}


def _held_out_scaling(probs: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each group's rows scaled by a temperature fitted on the other groups only (leave one subject out)."""
    out = np.empty_like(probs)
    for group in np.unique(groups):
        mine = groups == group
        out[mine] = temperature_scale(probs[mine], fit(probs[~mine], y[~mine]))
    return out


def calibrate(name: str, rows: dict[str, np.ndarray], labels: tuple[str, ...]) -> tuple[Calibration, dict]:
    """Face and speech: fit on split A, report on split B. EEG (144 windows per split, at chance): fit on all
    eight subjects and report leave-one-subject-out, each subject scaled by a temperature fitted without it."""
    y = np.array([labels.index(label) for label in rows["labels"]])
    probs = rows["probs"].astype(np.float64)
    if name.startswith("eeg"):
        fit_rows = report_rows = np.ones(len(y), dtype=bool)
        temperature = fit(probs, y)
        scaled = _held_out_scaling(probs, y, rows["groups"])
        fit_on = "all 8 GU subjects (each window from the model that never saw its subject)"
        report_on = "GU, 8 subjects: each subject scaled by a temperature fitted on the other 7"
    else:
        fit_rows, report_rows = rows["splits"] == "A", rows["splits"] == "B"
        temperature = fit(probs[fit_rows], y[fit_rows])
        scaled = temperature_scale(probs[report_rows], temperature)
        fit_on, report_on = SPLIT_NAMES[name]
    before, after = summary(probs[report_rows], y[report_rows]), summary(scaled, y[report_rows])
    n_fit, n_report = int(fit_rows.sum()), int(report_rows.sum())
    log.info("%s: T=%.3f fitted on %d; on %d held-out: ECE %.3f -> %.3f, confidence %.3f -> %.3f, accuracy %.3f",
             name, temperature, n_fit, n_report, before["ece"], after["ece"], before["mean_confidence"],
             after["mean_confidence"], after["accuracy"])
    calibration = Calibration(
        temperature=round(temperature, 4), dataset=report_on, split=f"temperature fitted on {fit_on}",
        n=n_fit, ece_before=round(before["ece"], 4), ece_after=round(after["ece"], 4),
        mean_confidence=round(after["mean_confidence"], 4), accuracy=round(after["accuracy"], 4),
        notes=f"{n_report} held-out windows; mean top probability before {before['mean_confidence']:.3f}")
    return calibration, {"temperature": temperature, "fit_n": n_fit, "before": before, "after": after,
                         "fit_on": fit_on, "report_on": report_on}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = parse_manifest(json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8")))
    outputs = heldout.load()
    report = {}
    for name, spec in manifest.encoders.items():
        calibration, report[name] = calibrate(name, outputs[name], spec.labels)
        update_encoder(args.bundle, name, dataclasses.replace(spec, calibration=calibration), manifest.fusion)
    (heldout.RESULTS / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
