"""The valence/arousal gate: CCC of a candidate's dimensional output against FP32 and against labels.

Any encoder or fusion head with an output of kind ``valence_arousal``
(``[N, 2]``: valence, arousal) is judged here, besides (or, without a class
output, instead of) the accuracy gate of :mod:`edge_mer_export.gate`.

Metrics (Lin's CCC, :func:`edge_mer_export.gate.ccc`, per axis and the mean
of the two), all in :attr:`GateResult.metrics`:

* ``ccc_<axis>_vs_fp32``: candidate against the FP32 output on the same
  inputs; fails when ``1 - ccc`` exceeds ``max_ccc_drop``;
* with targets (``--va-eval`` CSV rows, or the head data's
  ``valence_arousal``): ``ccc_<axis>`` (candidate) and ``ccc_<axis>_fp32``
  against the targets, and ``ccc_<axis>_drop`` = fp32 - candidate; fails
  when the drop exceeds ``max_ccc_drop`` (a candidate that does better
  never fails);
* ``<axis>`` is ``valence``, ``arousal`` and ``mean`` (the mean is reported,
  the two axes are gated).
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
from edge_mer_export.gate import GateResult, va_metrics

log = logging.getLogger(__name__)

VA_KIND = "valence_arousal"
AXES = ("valence", "arousal")
#: Slack on threshold comparisons, as in the accuracy gate.
_TOLERANCE = 1e-9


def va_output(outputs: Sequence[TensorInfo]) -> TensorInfo | None:
    """The first output of kind ``valence_arousal``, if any."""
    return next((o for o in outputs if o.kind == VA_KIND), None)


@dataclass(frozen=True)
class VaThresholds:
    """The largest CCC loss (absolute, per axis) a candidate may show against FP32 and against the labels."""

    max_ccc_drop: float = 0.02

    def __post_init__(self) -> None:
        require(isinstance(self.max_ccc_drop, (int, float)) and not isinstance(self.max_ccc_drop, bool)
                and math.isfinite(self.max_ccc_drop) and 0.0 <= self.max_ccc_drop <= 2.0,
                f"max_ccc_drop must be in 0..2 (absolute CCC), got {self.max_ccc_drop!r}")


def _va_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as a float64 ``[n, 2]`` array with n >= 2 (InputError otherwise)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 2:
        raise InputError(f"{what} must be [n, 2] valence/arousal with n >= 2 rows for a CCC, got {array.shape}")
    return array


def _with_mean(metrics: dict[str, float], suffix: str = "") -> dict[str, float]:
    names = [f"ccc_{axis}{suffix}" for axis in AXES]
    return {**metrics, f"ccc_mean{suffix}": float(np.mean([metrics[n] for n in names]))}


def _metrics(reference: np.ndarray, candidate: np.ndarray, target: np.ndarray | None) -> dict[str, float]:
    """CCC against FP32 and, with ``target``, against the labels (names in the module docstring)."""
    metrics = {"n_va": float(reference.shape[0])}
    metrics.update(_with_mean({f"{k}_vs_fp32": v for k, v in va_metrics(candidate, reference).items()},
                              "_vs_fp32"))
    if target is not None:
        metrics.update(_with_mean(va_metrics(candidate, target)))
        metrics.update(_with_mean({f"{k}_fp32": v for k, v in va_metrics(reference, target).items()}, "_fp32"))
        for axis in (*AXES, "mean"):
            metrics[f"ccc_{axis}_drop"] = metrics[f"ccc_{axis}_fp32"] - metrics[f"ccc_{axis}"] + 0.0  # no -0.0
    return metrics


def _reasons(metrics: dict[str, float], t: VaThresholds) -> list[str]:
    """One phrase per failed criterion, valence before arousal."""
    reasons = []
    for axis in AXES:
        versus = metrics[f"ccc_{axis}_vs_fp32"]
        if 1.0 - versus > t.max_ccc_drop + _TOLERANCE:
            reasons.append(f"{axis} CCC vs fp32 {versus:.3f} < {1.0 - t.max_ccc_drop:.3f} "
                           f"(max CCC drop {t.max_ccc_drop:g})")
        drop = metrics.get(f"ccc_{axis}_drop")
        if drop is not None and drop > t.max_ccc_drop + _TOLERANCE:
            reasons.append(f"{axis} CCC vs labels drops {drop:.3f} > {t.max_ccc_drop:g} "
                           f"(fp32 {metrics[f'ccc_{axis}_fp32']:.3f}, candidate {metrics[f'ccc_{axis}']:.3f})")
    return reasons


def va_gate(reference: np.ndarray, candidate: np.ndarray, target: np.ndarray | None,
            thresholds: VaThresholds) -> GateResult:
    """Judge a candidate's ``[n, 2]`` valence/arousal output against FP32's (and ``target`` when given).

    Bad reference or target shapes raise :class:`InputError`; a candidate with
    non-finite rows fails (its values are zeroed for the metrics).
    """
    ref = _va_matrix(reference, "reference valence/arousal")
    cand = np.asarray(candidate, dtype=np.float64)
    if cand.shape != ref.shape:
        raise InputError(f"candidate valence/arousal has shape {cand.shape}, reference {ref.shape}")
    if target is not None and np.shape(target) != ref.shape:
        raise InputError(f"valence/arousal targets have shape {np.shape(target)}, outputs {ref.shape}")
    if not np.isfinite(ref).all():
        raise InputError("reference valence/arousal contains non-finite values")
    bad_rows = int((~np.isfinite(cand)).any(axis=1).sum())
    cand = np.nan_to_num(cand, nan=0.0, posinf=1.0, neginf=-1.0)
    metrics = _metrics(ref, cand, None if target is None else np.asarray(target, dtype=np.float64))
    reasons = _reasons(metrics, thresholds)
    if bad_rows:
        metrics["nonfinite_rows"] = float(bad_rows)
        reasons.insert(0, f"{bad_rows} of {ref.shape[0]} candidate valence/arousal outputs are not finite")
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics)


def merge_results(classes: GateResult | None, va: GateResult | None) -> GateResult:
    """One verdict from the accuracy gate and the valence/arousal gate (either may be absent, not both)."""
    if classes is None and va is None:
        raise InputError("nothing to gate: no class and no valence/arousal result")
    if classes is None or va is None:
        only = classes if classes is not None else va
        if only is va and "n_eval" not in only.metrics:
            return GateResult(only.passed, only.reasons, {"n_eval": only.metrics["n_va"], **only.metrics})
        return only
    reasons = [*classes.reasons, *va.reasons]
    metrics = {**classes.metrics, **{k: v for k, v in va.metrics.items() if k not in classes.metrics}}
    if "nonfinite_rows" in va.metrics and "nonfinite_rows" in classes.metrics:
        metrics["nonfinite_rows"] = max(classes.metrics["nonfinite_rows"], va.metrics["nonfinite_rows"])
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics, class_names=classes.class_names,
                      confusion=classes.confusion, confusion_fp32=classes.confusion_fp32,
                      thresholds=classes.thresholds)


def _cell(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    return "–" if value is None else f"{value:.3f}"


def va_summary_md(rows: Sequence[tuple[str, str, dict[str, float], str]]) -> list[str]:
    """The report's valence/arousal table from ``(model, precision, metrics, result)`` rows; [] without CCC metrics."""
    shown = [r for r in rows if any(k.startswith("ccc_") for k in r[2])]
    if not shown:
        return []
    lines = ["## Valence/arousal (CCC)", "",
             "| model | precision | valence vs fp32 | arousal vs fp32 | valence vs labels | arousal vs labels "
             "| mean vs labels | result |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for model, precision, m, result in shown:
        lines.append(f"| {model} | {precision} | {_cell(m, 'ccc_valence_vs_fp32')} | {_cell(m, 'ccc_arousal_vs_fp32')} "
                     f"| {_cell(m, 'ccc_valence')} | {_cell(m, 'ccc_arousal')} | {_cell(m, 'ccc_mean')} | {result} |")
    return lines + [""]
