"""The multilabel gate: per-label F1 and mean average precision of an output of kind ``multilabel``.

A ``multilabel`` output (``[N, L]`` independent sigmoid scores, one
manifest threshold per label) is judged on labelled rows' true label sets
(``[n, L]`` of 0/1) for FP32 and for each candidate precision. Everything
here is a pure function of numpy arrays; the metrics themselves are
:mod:`edge_mer_calibration.multilabel_metrics` (the compound head's recipe
uses the same ones).

Metric definitions (names as in :attr:`~edge_mer_export.gate.GateResult.metrics`):

* ``ml_ap_<label>``: average precision of one label's scores
  (:func:`~edge_mer_calibration.multilabel_metrics.average_precision`, as
  scikit-learn's ``average_precision_score``); undefined, and left out, for
  a label with no positive row;
* ``ml_map``: the mean of the defined ``ml_ap_<label>`` (mAP);
* ``ml_f1_<label>``: F1 = 2TP / (2TP + FP + FN) of the decisions
  ``score >= threshold`` (the manifest's threshold of that label);
  undefined, and left out, when the label is neither true nor predicted in
  any row; ``ml_mean_f1`` their mean over the labels with a positive row,
  the same labels for FP32 and every candidate (and those of ``ml_map``);
* ``ml_agreement``: the share of (row, label) decisions the candidate makes
  as FP32 does; ``ml_max_abs_diff``: the largest score difference to FP32;
* each of ``ml_map`` / ``ml_mean_f1`` also for FP32 (``*_fp32``), and
  ``ml_map_drop`` = FP32 mAP - candidate mAP (negative when better);
* ``ml_out_of_range_rows``: candidate rows with a finite score outside
  [0, 1] (the runtime refuses such a tick).

A candidate fails when ``ml_map_drop`` exceeds
:attr:`MultilabelThresholds.max_map_drop`, when any of its scores is not
finite or outside [0, 1], or when label sets are given but no label has a
positive row (mAP is then undefined and nothing could be gated). Without
label sets only the FP32 comparison is reported (no mAP, nothing gated on it).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_mer.bundle.schema import TensorInfo
from edge_mer.config import require
from edge_mer.errors import InputError
from edge_mer_calibration.multilabel_metrics import average_precision, f1_scores, label_sets
from edge_mer_export.gate import GateResult

log = logging.getLogger(__name__)

MULTILABEL_KIND = "multilabel"
#: Slack on threshold comparisons, as in the accuracy gate.
_TOLERANCE = 1e-9


def multilabel_output(outputs: Sequence[TensorInfo]) -> TensorInfo | None:
    """The first output of kind ``multilabel``, if any."""
    return next((o for o in outputs if o.kind == MULTILABEL_KIND), None)


@dataclass(frozen=True)
class MultilabelThresholds:
    """The largest mAP loss (absolute, FP32 minus candidate) that passes."""

    max_map_drop: float = 0.02

    def __post_init__(self) -> None:
        require(isinstance(self.max_map_drop, (int, float)) and not isinstance(self.max_map_drop, bool)
                and math.isfinite(self.max_map_drop) and 0.0 <= self.max_map_drop <= 1.0,
                f"max_map_drop must be in 0..1 (absolute mAP), got {self.max_map_drop!r}")


def _scores(values: np.ndarray, what: str, labels: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{what} must be a non-empty [n, labels] array, got shape {array.shape}")
    if labels is not None and array.shape[1] != labels:
        raise InputError(f"{what} has {array.shape[1]} columns for {labels} labels")
    return array


def _truth(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    truth = np.asarray(values, dtype=np.float64)
    if truth.shape != shape:
        raise InputError(f"label sets have shape {truth.shape}, scores {shape}")
    return label_sets(truth)  # names the first value that is neither 0 nor 1


def multilabel_metrics(scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float],
                       names: Sequence[str]) -> dict[str, float]:
    """``ml_ap_<label>``, ``ml_map``, ``ml_f1_<label>``, ``ml_mean_f1`` (defined values only; module docstring)."""
    s = _scores(scores, "multilabel scores", len(names))
    t = _truth(truth, s.shape)
    if len(thresholds) != len(names):
        raise InputError(f"{len(thresholds)} thresholds for {len(names)} labels")
    metrics: dict[str, float] = {}
    ap = average_precision(s, t)
    f1 = f1_scores(s, t, np.asarray(thresholds, dtype=np.float64))
    for name, value in zip(names, ap):
        if not math.isnan(value):
            metrics[f"ml_ap_{name}"] = float(value)
    for name, value in zip(names, f1):
        if not math.isnan(value):
            metrics[f"ml_f1_{name}"] = float(value)
    # Labels with a positive row: AP and F1 are defined there for any scores, so FP32 and every candidate
    # average over the same labels (a label only one side predicts would otherwise enter one mean alone).
    positive = t.any(axis=0)
    if positive.any():
        metrics["ml_map"] = float(np.mean(ap[positive]))
        metrics["ml_mean_f1"] = float(np.mean(f1[positive]))
    return metrics


def _versus_fp32(reference: np.ndarray, candidate: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    limits = np.asarray(thresholds, dtype=np.float64)[None, :]
    return {"ml_agreement": float(np.mean((reference >= limits) == (candidate >= limits))),
            "ml_max_abs_diff": float(np.abs(reference - candidate).max())}


def _truth_verdict(ref: np.ndarray, cand: np.ndarray, truth: np.ndarray, output: TensorInfo,
                   thresholds: MultilabelThresholds) -> tuple[dict[str, float], list[str]]:
    """The metrics on the true label sets and the reasons they fail (mAP drop, no positive row at all)."""
    names, limits = output.labels, output.thresholds
    metrics = multilabel_metrics(cand, truth, limits, names)
    fp32 = multilabel_metrics(ref, truth, limits, names)
    metrics.update({f"{k}_fp32": v for k, v in fp32.items() if k in ("ml_map", "ml_mean_f1")})
    if "ml_map" not in fp32:
        return metrics, [f"{output.name}: the label sets have no positive row for any label "
                         f"({', '.join(names)}); mAP is undefined, so the output cannot be gated"]
    unseen = [name for name, seen in zip(names, _truth(truth, ref.shape).any(axis=0)) if not seen]
    if unseen:
        log.warning("multilabel output %s: no positive row for %s; left out of mAP and mean F1", output.name,
                    ", ".join(unseen))
    metrics["ml_map_drop"] = metrics["ml_map_fp32"] - metrics["ml_map"] + 0.0  # no -0.0
    if metrics["ml_map_drop"] > thresholds.max_map_drop + _TOLERANCE:
        return metrics, [f"{output.name} mAP drops {metrics['ml_map_drop']:.3f} > {thresholds.max_map_drop:g}"
                         f" (fp32 {metrics['ml_map_fp32']:.3f}, candidate {metrics['ml_map']:.3f})"]
    return metrics, []


def multilabel_gate(reference: np.ndarray, candidate: np.ndarray, truth: np.ndarray | None,
                    output: TensorInfo, thresholds: MultilabelThresholds) -> GateResult:
    """Judge a candidate's multilabel scores against FP32's, and on ``truth`` label sets when given.

    Bad shapes or truth values raise :class:`InputError`; a candidate with
    non-finite scores or scores outside [0, 1] fails (non-finite ones are
    zeroed for the metrics), as does truth without any positive row.
    """
    ref = _scores(reference, "reference multilabel scores", len(output.labels))
    if not np.isfinite(ref).all():
        raise InputError("reference multilabel scores contain non-finite values")
    cand = np.asarray(candidate, dtype=np.float64)
    if cand.shape != ref.shape:
        raise InputError(f"candidate multilabel scores have shape {cand.shape}, reference {ref.shape}")
    finite = np.isfinite(cand)
    bad_rows = int((~finite).any(axis=1).sum())
    outside = int((finite & ((cand < 0.0) | (cand > 1.0))).any(axis=1).sum())
    cand = np.nan_to_num(cand, nan=0.0, posinf=1.0, neginf=0.0)
    metrics = {"ml_n": float(ref.shape[0]), **_versus_fp32(ref, cand, output.thresholds)}
    reasons = []
    if truth is not None:
        more, reasons = _truth_verdict(ref, cand, truth, output, thresholds)
        metrics.update(more)
    else:
        log.warning("multilabel output %s: no label sets given; only the fp32 comparison is reported", output.name)
    if outside:
        metrics["ml_out_of_range_rows"] = float(outside)
        reasons.insert(0, f"{outside} of {ref.shape[0]} candidate {output.name} outputs have a score outside "
                          "[0, 1], which the runtime refuses")
    if bad_rows:
        metrics["nonfinite_rows"] = float(bad_rows)
        reasons.insert(0, f"{bad_rows} of {ref.shape[0]} candidate {output.name} outputs are not finite")
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics)


def _cell(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    return "–" if value is None else f"{round(value, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


def multilabel_summary_md(rows: Sequence[tuple[str, str, dict[str, float], str]]) -> list[str]:
    """The report's multilabel table from ``(model, precision, metrics, result)`` rows; [] without ml metrics."""
    shown = [r for r in rows if "ml_n" in r[2] or "ml_map" in r[2]]
    if not shown:
        return []
    lines = ["## Multilabel outputs (mAP, per-label F1)", "",
             "| model | precision | mAP | mAP fp32 | mAP drop | mean F1 | agreement with fp32 | result |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for model, precision, m, result in shown:
        lines.append(f"| {model} | {precision} | {_cell(m, 'ml_map')} | {_cell(m, 'ml_map_fp32')} | "
                     f"{_cell(m, 'ml_map_drop')} | {_cell(m, 'ml_mean_f1')} | {_cell(m, 'ml_agreement')} | {result} |")
    return lines + [""]
