"""Run FP32 and each candidate precision on held-out data and judge them: the gate step shared by encoders and heads.

A model is judged on up to two evaluation sets: a class set (feeds and the
class index of each row) for its ``probs``/``logits`` output, through
:func:`edge_mer_export.gate.gate`, and a valence/arousal set (feeds and,
where known, ``[n, 2]`` targets) for its ``valence_arousal`` output, through
:func:`edge_mer_export.va.va_gate`. Without a valence/arousal set such an
output is compared with FP32 on the class set's inputs. A ``multilabel``
output is run on the class set's inputs and judged by
:func:`edge_mer_export.multilabel.multilabel_gate` on the set's
``label_sets`` (mAP drop, per-label F1). Every output of kind
``embedding`` is run on the same rows (the class set's, else the
valence/arousal set's) and compared with FP32's by
:func:`edge_mer_export.embedding.embedding_gate` (mean cosine similarity at
least ``min_embedding_cosine``). Every model runs
through the runtime's ONNX Runtime backend; failed candidates' files are
deleted so only passing precisions reach the bundle.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle.loader import sha256_file
from edge_mer.bundle.schema import PrecisionReport, TensorInfo
from edge_mer.numeric import softmax
from edge_mer_export.config import ExportConfig
from edge_mer_export.embedding import EmbeddingThresholds, embedding_gate
from edge_mer_export.errors import ExportError
from edge_mer_export.gate import LATENCY_OPTIONS, GateResult, GateThresholds, gate, measure_latency, with_verdict
from edge_mer_export.multilabel import MultilabelThresholds, multilabel_gate
from edge_mer_export.report import PrecisionOutcome
from edge_mer_export.va import VaThresholds, merge_results, va_gate

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class EvalSet:
    """Held-out feeds of one model, with the class index (``labels``) or V/A ``targets`` of each row."""

    feeds: list[Feed]
    labels: Sequence[int] | None = None
    targets: np.ndarray | None = field(default=None, repr=False)
    #: ``[n, L]`` 0/1 true label sets of the model's multilabel output, row for row with the feeds.
    label_sets: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.feeds:
            raise ExportError("an evaluation set needs at least one feed")


@dataclass(frozen=True)
class Judged:
    """Per precision: the manifest record, the report's outcome; and FP32's latency."""

    reports: dict[str, PrecisionReport]
    outcomes: dict[str, PrecisionOutcome]
    fp32_latency: dict[str, float]


def thresholds_of(cfg: ExportConfig) -> tuple[GateThresholds, VaThresholds]:
    """The accuracy and valence/arousal thresholds ``cfg`` asks for."""
    return (GateThresholds(max_accuracy_drop=cfg.max_accuracy_drop, min_agreement=cfg.min_agreement),
            VaThresholds(max_ccc_drop=cfg.max_ccc_drop))


def _ref(path: Path, precision: str) -> ModelRef:
    return ModelRef(path.stem, precision, {precision: ModelFile(path, sha256_file(path))})


def _run(path: Path, precision: str, feeds: list[Feed], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named outputs of the model at ``path`` over every feed, concatenated."""
    with create_backend(_ref(path, precision), BackendOptions(name="onnxruntime")) as backend:
        batches = tqdm(feeds, desc=f"evaluating {path.name}", unit=" batches", disable=None)
        outputs = [backend.infer(f) for f in batches]
    return {name: np.concatenate([o[name] for o in outputs]) for name in names}


def _latency(path: Path, precision: str, feed: Feed, iterations: int) -> dict[str, float]:
    """Single-thread batch-1 latency of the model at ``path`` on ``feed``."""
    with create_backend(_ref(path, precision), LATENCY_OPTIONS) as backend:
        return measure_latency(backend, feed, iterations=iterations)


@dataclass(frozen=True)
class _Outputs:
    probs: np.ndarray | None
    va: np.ndarray | None
    multilabel: np.ndarray | None = None
    #: Each ``embedding`` output's rows, by output name.
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Heads:
    """The outputs a model is judged on: class, valence/arousal and multilabel (each may be None), embeddings."""

    classes: TensorInfo | None
    va: TensorInfo | None
    multilabel: TensorInfo | None
    embeddings: tuple[TensorInfo, ...] = ()


def _outputs(path: Path, precision: str, out: _Heads, classes: EvalSet | None, va: EvalSet | None) -> _Outputs:
    """The model's class probabilities (softmaxed logits), valence/arousal, multilabel scores and embeddings."""
    probs = va_values = scores = None
    embeddings: dict[str, np.ndarray] = {}
    wanted = [e.name for e in out.embeddings]
    if classes is not None and out.classes is not None:
        names = [out.classes.name] + ([out.va.name] if out.va is not None and va is None else [])
        names += [out.multilabel.name] if out.multilabel is not None else []
        raw = _run(path, precision, classes.feeds, names + wanted)
        probs = raw[out.classes.name].astype(np.float64)
        probs = softmax(probs) if out.classes.kind == "logits" else probs
        va_values = raw.get(out.va.name) if out.va is not None else None
        scores = raw[out.multilabel.name].astype(np.float64) if out.multilabel is not None else None
        embeddings = {name: raw[name] for name in wanted}
    if va is not None and out.va is not None:
        extra = [] if embeddings else wanted  # without a class set, the embeddings are run on the V/A rows
        raw = _run(path, precision, va.feeds, [out.va.name] + extra)
        va_values = raw[out.va.name]
        embeddings = embeddings or {name: raw[name] for name in extra}
    return _Outputs(probs, None if va_values is None else va_values.astype(np.float64), scores, embeddings)


def _verdict(reference: _Outputs, candidate: _Outputs, out: _Heads, classes: EvalSet | None,
             va: EvalSet | None, cfg: ExportConfig) -> GateResult:
    """The accuracy, valence/arousal and multilabel verdicts on one candidate, merged."""
    class_thresholds, va_thresholds = thresholds_of(cfg)
    class_result = va_result = None
    if reference.probs is not None and out.classes is not None and classes is not None:
        class_result = gate(reference.probs, candidate.probs, list(classes.labels or ()), len(out.classes.labels),
                            class_thresholds, class_names=out.classes.labels)
    if reference.va is not None:
        va_result = va_gate(reference.va, candidate.va, None if va is None else va.targets, va_thresholds)
    result = merge_results(class_result, va_result)
    if reference.multilabel is not None and out.multilabel is not None and classes is not None:
        ml = multilabel_gate(reference.multilabel, candidate.multilabel, classes.label_sets, out.multilabel,
                             MultilabelThresholds(max_map_drop=cfg.max_map_drop))
        result = with_verdict(result, ml)
    limits = EmbeddingThresholds(min_cosine=cfg.min_embedding_cosine)
    for output in out.embeddings:
        if output.name in reference.embeddings:
            result = with_verdict(result, embedding_gate(reference.embeddings[output.name],
                                                         candidate.embeddings[output.name], output, limits))
    return result


def judge(cfg: ExportConfig, what: str, fp32: Path, files: dict[str, Path], outputs: Sequence[TensorInfo | None],
          classes: EvalSet | None, va: EvalSet | None, embeddings: Sequence[TensorInfo] = ()) -> Judged:
    """Gate every candidate in ``files`` against ``fp32``; delete the files of those that fail.

    ``outputs`` is ``(class output or None, valence/arousal output or None)``, optionally followed by the
    multilabel output (or None), which is run on the ``classes`` set and judged on its ``label_sets``.
    ``embeddings`` are the model's outputs of kind ``embedding``, each compared with FP32's on the same rows.
    """
    class_out, va_out, ml_out = (*outputs, None)[:3]
    heads = _Heads(class_out, va_out, ml_out, tuple(embeddings))
    if (class_out is None or classes is None) and (va_out is None or (va is None and classes is None)):
        raise ExportError(f"{what}: no evaluation data for any output to gate")
    one = {k: v[:1] for k, v in (classes or va).feeds[0].items()}  # type: ignore[union-attr]
    reference = _outputs(fp32, "fp32", heads, classes, va)
    fp32_latency = _latency(fp32, "fp32", one, cfg.latency_iterations)
    reports = {"fp32": PrecisionReport(True, None, round(fp32_latency["p50_ms"], 4), {})}
    outcomes: dict[str, PrecisionOutcome] = {}
    for precision, path in files.items():
        candidate = _outputs(path, precision, heads, classes, va)
        result = _verdict(reference, candidate, heads, classes, va, cfg)
        latency = _latency(path, precision, one, cfg.latency_iterations)
        reports[precision] = result.to_precision_report(round(latency["p50_ms"], 4))
        outcomes[precision] = PrecisionOutcome(result, latency, reference.probs,
                                               candidate.probs if reference.probs is not None else None, None)
        verdict = "passed" if result.passed else "FAILED: " + "; ".join(result.reasons)
        log.info("%s %s: %s (p50 %.3f ms vs fp32 %.3f ms)", what, precision, verdict, latency["p50_ms"],
                 fp32_latency["p50_ms"])
        if not result.passed:
            path.unlink()
    return Judged(reports, outcomes, fp32_latency)
