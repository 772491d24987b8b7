"""The embedding gate: does a candidate's ``embedding`` output point where FP32's does?

An output of kind ``embedding`` (``[N, D]`` features, e.g. an encoder's
pooled last feature map, which a fusion head reads) has no labels to score,
so each candidate precision is compared with FP32 row by row on the
evaluation rows. Everything here is a pure function of numpy arrays.

Metric definitions (names as in :attr:`~edge_mer_export.gate.GateResult.metrics`,
``<name>`` the output's name):

* ``cosine_mean_<name>``: the mean over rows of the cosine similarity
  ``a·b / (|a| |b|)`` between the FP32 row ``a`` and the candidate row ``b``;
  a row that is all zeros in both counts 1 (the same vector), a row all
  zeros in just one counts 0;
* ``cosine_min_<name>``: the smallest of those per-row similarities.

A candidate fails when ``cosine_mean_<name>`` is below
:attr:`EmbeddingThresholds.min_cosine` or any of its values is not finite
(those are zeroed for the metrics).
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

EMBEDDING_KIND = "embedding"
#: Slack on the threshold comparison, as in the accuracy gate.
_TOLERANCE = 1e-9


def embedding_outputs(outputs: Sequence[TensorInfo]) -> tuple[TensorInfo, ...]:
    """Every output of kind ``embedding``, in declaration order."""
    return tuple(o for o in outputs if o.kind == EMBEDDING_KIND)


@dataclass(frozen=True)
class EmbeddingThresholds:
    """The smallest mean cosine similarity with FP32 that passes."""

    min_cosine: float = 0.98

    def __post_init__(self) -> None:
        require(isinstance(self.min_cosine, (int, float)) and not isinstance(self.min_cosine, bool)
                and math.isfinite(self.min_cosine) and 0.0 <= self.min_cosine <= 1.0,
                f"min_embedding_cosine must be in 0..1, got {self.min_cosine!r}")


def _rows(values: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim < 2 or array.shape[0] == 0 or array[0].size == 0:
        raise InputError(f"{what} must be a non-empty [n, D] array, got shape {array.shape}")
    return array.reshape(array.shape[0], -1)


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two ``[n, D]`` arrays (module docstring for all-zero rows)."""
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    dots = np.einsum("ij,ij->i", reference, candidate)
    both_zero = ~reference.any(axis=1) & ~candidate.any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(norms > 0, dots / norms, 0.0)
    return np.clip(np.where(both_zero, 1.0, cosine), -1.0, 1.0)


def embedding_gate(reference: np.ndarray, candidate: np.ndarray, output: TensorInfo,
                   thresholds: EmbeddingThresholds) -> GateResult:
    """Judge a candidate's ``embedding`` output against FP32's on the same rows.

    Bad shapes or a non-finite reference raise :class:`InputError`; a
    candidate with non-finite values or too low a mean cosine fails.
    """
    ref = _rows(reference, f"reference {output.name} embeddings")
    if not np.isfinite(ref).all():
        raise InputError(f"reference {output.name} embeddings contain non-finite values")
    cand = np.asarray(candidate, dtype=np.float64)
    if cand.shape[:1] != (ref.shape[0],) or cand.size != ref.size:
        raise InputError(f"candidate {output.name} embeddings have shape {cand.shape}, reference "
                         f"{np.shape(reference)}")
    cand = cand.reshape(ref.shape)
    bad_rows = int((~np.isfinite(cand)).any(axis=1).sum())
    cosine = row_cosines(ref, np.nan_to_num(cand, nan=0.0, posinf=0.0, neginf=0.0))
    mean, lowest = float(cosine.mean()), float(cosine.min())
    metrics = {f"cosine_mean_{output.name}": mean, f"cosine_min_{output.name}": lowest}
    reasons = []
    if bad_rows:
        metrics["nonfinite_rows"] = float(bad_rows)
        reasons.append(f"{bad_rows} of {ref.shape[0]} candidate {output.name} outputs are not finite")
    if mean < thresholds.min_cosine - _TOLERANCE:
        reasons.append(f"{output.name} mean cosine similarity with fp32 {mean:.4f} < {thresholds.min_cosine:g} "
                       f"(lowest row {lowest:.4f})")
    log.debug("embedding %s: mean cosine %.5f, min %.5f over %d rows", output.name, mean, lowest, ref.shape[0])
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics)


def _cell(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    return "–" if value is None else f"{value:.4f}"


def embedding_summary_md(rows: Sequence[tuple[str, str, dict[str, float], str]]) -> list[str]:
    """The report's embedding table from ``(model, precision, metrics, result)`` rows; [] without cosine metrics."""
    shown = [(model, precision, key.removeprefix("cosine_mean_"), m, result) for model, precision, m, result in rows
             for key in m if key.startswith("cosine_mean_")]
    if not shown:
        return []
    lines = ["## Embedding outputs (cosine similarity with fp32)", "",
             "| model | precision | output | mean cosine | min cosine | result |", "|---|---|---|---:|---:|---|"]
    for model, precision, name, m, result in shown:
        lines.append(f"| {model} | {precision} | {name} | {_cell(m, f'cosine_mean_{name}')} | "
                     f"{_cell(m, f'cosine_min_{name}')} | {result} |")
    return lines + [""]
