"""The accuracy gate: is an FP16 or INT8 encoder good enough to ship?

The export tool runs the FP32 reference and a candidate precision on the same
labelled held-out data and hands both outputs here.  Everything in this module
except :func:`measure_latency` is a pure function of numpy arrays.

Metric definitions (all reported in :attr:`GateResult.metrics`):

* ``agreement``: fraction of rows whose top-1 class (``argmax``, first index on
  ties) is the same for reference and candidate.
* ``max_abs_diff`` / ``mean_abs_diff``: over every probability of every row.
* ``kl``: mean over rows of KL(reference || candidate) in nats.  Both rows are
  first floored at :data:`KL_EPSILON` (1e-7) and renormalised to sum to 1, so a
  candidate probability that underflows to 0 costs about ``p * ln(p / 1e-7)``
  instead of infinity.
* ``accuracy`` / ``accuracy_fp32``: top-1 accuracy of candidate / reference
  against the labels; ``accuracy_drop_pt`` = 100 * (fp32 - candidate) correct
  counts / n, in percentage points (negative when the candidate does better).
* ``macro_f1``: unweighted mean of per-class F1 = 2TP / (2TP + FP + FN) over the
  classes present in the labels *or* the predictions (scikit-learn's default
  label set); a class that occurs in neither is left out instead of adding 0.
* ``recall_<label>``: per-class recall of the candidate, only for classes with
  at least one labelled example (recall is undefined otherwise).
* ``ccc_valence_vs_fp32`` / ``ccc_arousal_vs_fp32``: Lin's CCC of candidate
  against reference valence/arousal outputs, gated by ``min_ccc``;
  ``ccc_valence`` / ``ccc_arousal`` (and ``*_fp32``) against targets when given.
  ``edge-mer export`` judges valence/arousal outputs with :mod:`edge_mer_export.va`
  (CCC drop vs FP32 and vs labels), which builds on :func:`ccc` and :func:`va_metrics`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.backends.options import BackendOptions, OrtOptions
from edge_mer.bench.latency import time_infer
from edge_mer.bundle.schema import PrecisionReport
from edge_mer.config import require
from edge_mer.errors import InputError

log = logging.getLogger(__name__)

#: Floor applied to both distributions before KL(reference || candidate).
KL_EPSILON = 1e-7
#: Slack on threshold comparisons, so 97/100 agreement passes a 0.97 minimum.
_TOLERANCE = 1e-9
#: How far a reference row may sum from 1 before it is taken for logits.
_SUM_TOLERANCE = 1e-2


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GateThresholds:
    """Pass criteria for a candidate precision; None means the criterion is not gated.

    ``max_accuracy_drop`` is in percentage points, ``min_agreement`` a fraction
    in [0, 1], ``max_kl`` in nats, ``max_abs_diff`` a probability, ``min_ccc``
    the least CCC of candidate against FP32 valence/arousal outputs.
    """

    max_accuracy_drop: float = 1.0
    min_agreement: float = 0.97
    max_kl: float | None = None
    max_abs_diff: float | None = None
    min_ccc: float | None = None

    def __post_init__(self) -> None:
        require(_is_number(self.max_accuracy_drop) and self.max_accuracy_drop >= 0,
                f"max_accuracy_drop must be a number >= 0 (percentage points), got {self.max_accuracy_drop!r}")
        require(_is_number(self.min_agreement) and 0.0 <= self.min_agreement <= 1.0,
                f"min_agreement must be a fraction in [0, 1], got {self.min_agreement!r}")
        for name in ("max_kl", "max_abs_diff"):
            value = getattr(self, name)
            require(value is None or (_is_number(value) and value >= 0),
                    f"{name} must be a number >= 0 or None, got {value!r}")
        require(self.min_ccc is None or (_is_number(self.min_ccc) and -1.0 <= self.min_ccc <= 1.0),
                f"min_ccc must be in [-1, 1] or None, got {self.min_ccc!r}")


@dataclass(frozen=True)
class GateResult:
    """The verdict on one candidate: every failed criterion, flat metrics, confusion matrices.

    ``confusion`` (candidate) and ``confusion_fp32`` are counts with true
    classes on rows and predicted classes on columns, in ``class_names`` order.
    """

    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    class_names: tuple[str, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()
    confusion_fp32: tuple[tuple[int, ...], ...] = ()
    thresholds: GateThresholds = field(default_factory=GateThresholds)

    def to_precision_report(self, cpu_latency_ms: float | None) -> PrecisionReport:
        """The manifest record of this verdict; failed criteria are joined with '; '."""
        return PrecisionReport(passed=self.passed, reason="; ".join(self.reasons) or None,
                               cpu_latency_ms=None if cpu_latency_ms is None else float(cpu_latency_ms),
                               metrics=dict(self.metrics))



def with_verdict(base: GateResult, extra: GateResult) -> GateResult:
    """``base`` (the class / valence-arousal verdict) with another output's reasons and metrics added.

    ``base`` keeps its metrics, confusion matrices and thresholds; the
    larger ``nonfinite_rows`` of the two is kept.
    """
    metrics = {**base.metrics, **{k: v for k, v in extra.metrics.items() if k not in base.metrics}}
    if "nonfinite_rows" in extra.metrics and "nonfinite_rows" in base.metrics:
        metrics["nonfinite_rows"] = max(base.metrics["nonfinite_rows"], extra.metrics["nonfinite_rows"])
    reasons = [*base.reasons, *extra.reasons]
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics, class_names=base.class_names,
                      confusion=base.confusion, confusion_fp32=base.confusion_fp32, thresholds=base.thresholds)

def _matrix(values: np.ndarray, what: str, n_classes: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{what} must be a non-empty [n, classes] array, got shape {array.shape}")
    if n_classes is not None and array.shape[1] != n_classes:
        raise InputError(f"{what} has {array.shape[1]} columns for {n_classes} classes")
    if not np.isfinite(array).all():
        raise InputError(f"{what} contains {int((~np.isfinite(array)).sum())} non-finite values")
    return array


def _check_reference(reference: np.ndarray) -> None:
    sums = reference.sum(axis=1)
    if reference.min() < -1e-6 or np.abs(sums - 1.0).max() > _SUM_TOLERANCE:
        raise InputError("reference rows are not probabilities (negative or not summing to 1); "
                         "apply softmax to logits first")


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Agreement, absolute differences and mean KL between two [n, k] probability arrays.

    See the module docstring for the definitions and the KL epsilon floor.
    """
    ref = _matrix(reference, "reference probabilities")
    cand = _matrix(candidate, "candidate probabilities")
    if ref.shape != cand.shape:
        raise InputError(f"reference shape {ref.shape} differs from candidate shape {cand.shape}")
    _check_reference(ref)
    diff = np.abs(ref - cand)
    p = np.clip(ref, KL_EPSILON, None)
    q = np.clip(cand, KL_EPSILON, None)
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    kl = np.sum(p * np.log(p / q), axis=1)
    return {
        "agreement": float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "kl": float(max(kl.mean(), 0.0)),
    }


def _labels(labels: Sequence[int], n: int, n_classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n:
        raise InputError(f"labels must be a 1-d sequence of {n} class indices, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n_classes:
        raise InputError(f"labels must lie in 0..{n_classes - 1}, got {int(array.min())}..{int(array.max())}")
    return array.astype(np.int64)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [n_classes, n_classes], true class on rows, predicted class on columns."""
    flat = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def label_metrics(probs: np.ndarray, labels: Sequence[int], n_classes: int) -> dict[str, object]:
    """Accuracy, macro-F1, per-class recall (NaN without support), support and confusion matrix.

    Macro-F1 averages over the classes present in ``labels`` or in the
    predictions (see the module docstring).
    """
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise InputError(f"n_classes must be an int >= 1, got {n_classes!r}")
    array = _matrix(probs, "probabilities", n_classes)
    true = _labels(labels, array.shape[0], n_classes)
    pred = array.argmax(axis=1)
    cm = confusion_matrix(true, pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = 2 * tp / (support + predicted)
    present = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / true.shape[0]),
        "macro_f1": float(f1[present].mean()),
        "recall": recall,
        "support": support,
        "confusion": cm,
        "correct": int(tp.sum()),
    }


def ccc(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Lin's concordance correlation coefficient with population (1/n) moments.

    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``; two identical
    constant series, for which the formula is 0/0, score 1.
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.shape[0] < 2:
        raise InputError(f"ccc needs two series of equal length >= 2, got {a.shape[0]} and {b.shape[0]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("ccc inputs must be finite")
    mean_a, mean_b = a.mean(), b.mean()
    cov = np.mean((a - mean_a) * (b - mean_b))
    denominator = a.var() + b.var() + (mean_a - mean_b) ** 2
    if denominator == 0.0:
        return 1.0
    return float(2.0 * cov / denominator)


def va_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """CCC of valence (column 0) and arousal (column 1) of ``pred`` against ``target``, both [n, 2]."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape != t.shape:
        raise InputError(f"valence/arousal arrays must both be [n, 2], got {p.shape} and {t.shape}")
    return {"ccc_valence": ccc(p[:, 0], t[:, 0]), "ccc_arousal": ccc(p[:, 1], t[:, 1])}


def _shown(value: float, limit: float, scale: float = 1.0) -> tuple[str, str]:
    """Format ``value`` and ``limit`` with the fewest decimals (>= 1) that tell them apart."""
    for digits in range(1, 6):
        a, b = f"{value * scale:.{digits}f}", f"{limit * scale:.{digits}f}"
        if a != b:
            break
    return a, b


def _va_block(reference_va: np.ndarray | None, candidate_va: np.ndarray | None,
              target_va: np.ndarray | None) -> dict[str, float]:
    if reference_va is None and candidate_va is None:
        if target_va is not None:
            raise InputError("target_va needs reference_va and candidate_va")
        return {}
    if reference_va is None or candidate_va is None:
        raise InputError("reference_va and candidate_va must be given together")
    metrics = {f"{k}_vs_fp32": v for k, v in va_metrics(candidate_va, reference_va).items()}
    if target_va is not None:
        metrics.update(va_metrics(candidate_va, target_va))
        metrics.update({f"{k}_fp32": v for k, v in va_metrics(reference_va, target_va).items()})
    return metrics


def _reasons(metrics: Mapping[str, float], t: GateThresholds) -> list[str]:
    """One phrase per failed criterion, in a fixed order."""
    reasons = []
    if metrics["accuracy_drop_pt"] > t.max_accuracy_drop + _TOLERANCE:
        a, b = _shown(metrics["accuracy_drop_pt"], t.max_accuracy_drop)
        reasons.append(f"accuracy drop {a} pt > {b} pt allowed")
    if metrics["agreement"] < t.min_agreement - _TOLERANCE:
        a, b = _shown(metrics["agreement"], t.min_agreement, 100.0)
        reasons.append(f"top-1 agreement {a}% < {b}%")
    if t.max_kl is not None and metrics["kl"] > t.max_kl + _TOLERANCE:
        reasons.append(f"KL {metrics['kl']:.4g} > {t.max_kl:.4g} allowed")
    if t.max_abs_diff is not None and metrics["max_abs_diff"] > t.max_abs_diff + _TOLERANCE:
        reasons.append(f"max abs diff {metrics['max_abs_diff']:.4g} > {t.max_abs_diff:.4g} allowed")
    if t.min_ccc is not None:
        for axis in ("valence", "arousal"):
            value = metrics.get(f"ccc_{axis}_vs_fp32")
            if value is not None and value < t.min_ccc - _TOLERANCE:
                reasons.append(f"{axis} CCC vs fp32 {value:.3f} < {t.min_ccc:.3f}")
    return reasons


def _sanitise_candidate(candidate: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The candidate as float64 with non-finite values zeroed, and how many rows had any."""
    cand = np.asarray(candidate, dtype=np.float64)
    if cand.shape != shape:
        raise InputError(f"candidate probabilities have shape {cand.shape}, reference {shape}")
    bad_rows = int((~np.isfinite(cand)).any(axis=1).sum())
    if bad_rows:
        cand = np.nan_to_num(cand, nan=0.0, posinf=1.0, neginf=0.0)
    return cand, bad_rows


def _as_table(cm: np.ndarray) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in row) for row in cm)


def gate(reference_probs: np.ndarray, candidate_probs: np.ndarray, labels: Sequence[int], n_classes: int,
         thresholds: GateThresholds, *, reference_va: np.ndarray | None = None,
         candidate_va: np.ndarray | None = None, target_va: np.ndarray | None = None,
         class_names: Sequence[str] | None = None) -> GateResult:
    """Judge ``candidate_probs`` against the FP32 ``reference_probs`` on labelled data.

    Bad inputs (shapes, labels, a reference that is not probabilities) raise
    :class:`InputError`; a candidate with non-finite outputs is not an input
    error but a failure, reported as a reason.  ``class_names`` name the
    ``recall_<label>`` metrics (class indices when omitted).
    """
    ref = _matrix(reference_probs, "reference probabilities", n_classes)
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_classes))
    if len(names) != n_classes:
        raise InputError(f"{len(names)} class names for {n_classes} classes")
    cand, bad_rows = _sanitise_candidate(candidate_probs, ref.shape)
    fp32 = label_metrics(ref, labels, n_classes)
    lm = label_metrics(cand, labels, n_classes)
    n = ref.shape[0]
    metrics: dict[str, float] = {"n_eval": float(n), **compare_outputs(ref, cand)}
    metrics.update({
        "accuracy": lm["accuracy"], "accuracy_fp32": fp32["accuracy"],
        "accuracy_drop_pt": 100.0 * (fp32["correct"] - lm["correct"]) / n + 0.0,
        "macro_f1": lm["macro_f1"], "macro_f1_fp32": fp32["macro_f1"],
    })
    for name, recall in zip(names, lm["recall"]):
        if not np.isnan(recall):
            metrics[f"recall_{name}"] = float(recall)
    metrics.update(_va_block(reference_va, candidate_va, target_va))
    reasons = _reasons(metrics, thresholds)
    if bad_rows:
        metrics["nonfinite_rows"] = float(bad_rows)
        reasons.insert(0, f"{bad_rows} of {n} candidate outputs are not finite")
    log.debug("gate: %s (%s)", "pass" if not reasons else "fail", "; ".join(reasons) or "all criteria met")
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics, class_names=names,
                      confusion=_as_table(lm["confusion"]), confusion_fp32=_as_table(fp32["confusion"]),
                      thresholds=thresholds)


#: Latency is measured on one thread, so the figures compare precisions rather than the host's core count.
LATENCY_OPTIONS = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(intra_op_threads=1, inter_op_threads=1))


def measure_latency(backend: Backend, feeds: Mapping[str, np.ndarray], *, warmup: int = 10,
                    iterations: int = 50) -> dict[str, float]:
    """Wall-clock latency of single ``backend.infer(feeds)`` calls on a loaded backend.

    Returns ``p50_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``max_ms`` (linear
    interpolation percentiles over ``iterations`` timed calls after ``warmup``
    untimed ones) and the two counts. The timing loop is the runtime's
    (:func:`edge_mer.bench.latency.time_infer`, the one ``edge-mer bench`` uses).
    """
    samples = time_infer(backend, feeds, warmup=warmup, iterations=iterations)
    p50, p90 = np.percentile(samples, [50, 90])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "mean_ms": float(samples.mean()),
            "min_ms": float(samples.min()), "max_ms": float(samples.max()),
            "warmup": float(warmup), "iterations": float(iterations)}
