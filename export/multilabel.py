"""The multilabel gate: per-label F1 and mean average precision of an output of kind ``multilabel``.

A ``multilabel`` output (``[N, L]`` independent sigmoid scores, one
manifest threshold per label) is judged on labelled rows' true label sets
(``[n, L]`` of 0/1) for FP32 and for each candidate precision. Everything
here is a pure function of numpy arrays.

Metric definitions (names as in :attr:`~edge_mer_export.gate.GateResult.metrics`):

* ``ml_ap_<label>``: average precision of one label's scores, the
  step-wise (uninterpolated) area under its precision-recall curve,
  ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds from
  high to low (tied scores enter together), as scikit-learn's
  ``average_precision_score``; undefined, and left out, for a label with no
  positive row;
* ``ml_map``: the mean of the defined ``ml_ap_<label>`` (mAP);
* ``ml_f1_<label>``: F1 = 2TP / (2TP + FP + FN) of the decisions
  ``score >= threshold`` (the manifest's threshold of that label);
  undefined, and left out, when the label is neither true nor predicted in
  any row; ``ml_mean_f1`` their mean;
* ``ml_agreement``: the share of (row, label) decisions the candidate makes
  as FP32 does; ``ml_max_abs_diff``: the largest score difference to FP32;
* each of ``ml_map`` / ``ml_mean_f1`` also for FP32 (``*_fp32``), and
  ``ml_map_drop`` = FP32 mAP - candidate mAP (negative when better).

A candidate fails when ``ml_map_drop`` exceeds
:attr:`MultilabelThresholds.max_map_drop`, or when any of its scores is not
finite. Without label sets only the FP32 comparison is reported (no mAP,
nothing gated on it).
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
    if not np.isin(truth, (0.0, 1.0)).all():
        raise InputError("label sets must hold only 0 and 1")
    return truth.astype(bool)


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of one label (module docstring); NaN when no row is positive."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(truth).reshape(-1).astype(bool)
    positives = int(t.sum())
    if positives == 0:
        return math.nan
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # the last row of each distinct score
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def label_f1(scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Per-label F1 of ``scores >= thresholds`` against ``truth`` ([n, L] each); NaN where undefined."""
    s = _scores(scores, "multilabel scores", len(thresholds))
    t = _truth(truth, s.shape)
    predicted = s >= np.asarray(thresholds, dtype=np.float64)[None, :]
    tp = (predicted & t).sum(axis=0).astype(np.float64)
    denominator = predicted.sum(axis=0) + t.sum(axis=0)  # 2TP + FP + FN
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def multilabel_metrics(scores: np.ndarray, truth: np.ndarray, thresholds: Sequence[float],
                       names: Sequence[str]) -> dict[str, float]:
    """``ml_ap_<label>``, ``ml_map``, ``ml_f1_<label>``, ``ml_mean_f1`` (defined values only; module docstring)."""
    s = _scores(scores, "multilabel scores", len(names))
    t = _truth(truth, s.shape)
    if len(thresholds) != len(names):
        raise InputError(f"{len(thresholds)} thresholds for {len(names)} labels")
    metrics: dict[str, float] = {}
    ap = [average_precision(s[:, j], t[:, j]) for j in range(len(names))]
    f1 = label_f1(s, t, thresholds)
    for name, value in zip(names, ap):
        if not math.isnan(value):
            metrics[f"ml_ap_{name}"] = value
    for name, value in zip(names, f1):
        if not math.isnan(value):
            metrics[f"ml_f1_{name}"] = float(value)
    defined_ap, defined_f1 = [v for v in ap if not math.isnan(v)], [v for v in f1 if not math.isnan(v)]
    if defined_ap:
        metrics["ml_map"] = float(np.mean(defined_ap))
    if defined_f1:
        metrics["ml_mean_f1"] = float(np.mean(defined_f1))
    return metrics


def _versus_fp32(reference: np.ndarray, candidate: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    limits = np.asarray(thresholds, dtype=np.float64)[None, :]
    return {"ml_agreement": float(np.mean((reference >= limits) == (candidate >= limits))),
            "ml_max_abs_diff": float(np.abs(reference - candidate).max())}


def multilabel_gate(reference: np.ndarray, candidate: np.ndarray, truth: np.ndarray | None,
                    output: TensorInfo, thresholds: MultilabelThresholds) -> GateResult:
    """Judge a candidate's multilabel scores against FP32's, and on ``truth`` label sets when given.

    Bad shapes or truth values raise :class:`InputError`; a candidate with
    non-finite scores fails (they are zeroed for the metrics).
    """
    names, limits = output.labels, output.thresholds
    ref = _scores(reference, "reference multilabel scores", len(names))
    if not np.isfinite(ref).all():
        raise InputError("reference multilabel scores contain non-finite values")
    cand = np.asarray(candidate, dtype=np.float64)
    if cand.shape != ref.shape:
        raise InputError(f"candidate multilabel scores have shape {cand.shape}, reference {ref.shape}")
    bad_rows = int((~np.isfinite(cand)).any(axis=1).sum())
    cand = np.nan_to_num(cand, nan=0.0, posinf=1.0, neginf=0.0)
    metrics = {"ml_n": float(ref.shape[0]), **_versus_fp32(ref, cand, limits)}
    reasons = []
    if truth is not None:
        metrics.update(multilabel_metrics(cand, truth, limits, names))
        fp32 = multilabel_metrics(ref, truth, limits, names)
        metrics.update({f"{k}_fp32": v for k, v in fp32.items() if k in ("ml_map", "ml_mean_f1")})
        if "ml_map" in metrics and "ml_map_fp32" in metrics:
            metrics["ml_map_drop"] = metrics["ml_map_fp32"] - metrics["ml_map"] + 0.0  # no -0.0
            if metrics["ml_map_drop"] > thresholds.max_map_drop + _TOLERANCE:
                reasons.append(f"{output.name} mAP drops {metrics['ml_map_drop']:.3f} > {thresholds.max_map_drop:g}"
                               f" (fp32 {metrics['ml_map_fp32']:.3f}, candidate {metrics['ml_map']:.3f})")
    else:
        log.warning("multilabel output %s: no label sets given; only the fp32 comparison is reported", output.name)
    if bad_rows:
        metrics["nonfinite_rows"] = float(bad_rows)
        reasons.insert(0, f"{bad_rows} of {ref.shape[0]} candidate {output.name} outputs are not finite")
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics)


def with_multilabel(base: GateResult, multilabel: GateResult) -> GateResult:
    """``base`` (the class / valence-arousal verdict) with the multilabel verdict's reasons and metrics added."""
    metrics = {**base.metrics, **{k: v for k, v in multilabel.metrics.items() if k not in base.metrics}}
    if "nonfinite_rows" in multilabel.metrics and "nonfinite_rows" in base.metrics:
        metrics["nonfinite_rows"] = max(base.metrics["nonfinite_rows"], multilabel.metrics["nonfinite_rows"])
    reasons = [*base.reasons, *multilabel.reasons]
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics, class_names=base.class_names,
                      confusion=base.confusion, confusion_fp32=base.confusion_fp32, thresholds=base.thresholds)


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
