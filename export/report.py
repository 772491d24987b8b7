"""The export report: ``export_report.json`` for machines, ``export_report.md`` with plots for people.

:func:`write_report` turns an :class:`ExportReport` (gate verdicts, latencies
and the raw outputs the verdicts were computed from) into two files and a
``plots/`` folder beside them (plots need matplotlib, the ``[export]`` extra;
without it the report says so).  Arrays go into the plots only, never into
the JSON.  Plots are drawn with the Agg canvas (no pyplot state), without a software tag.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.names import PRECISIONS
from edge_mer.config import require, to_dict
from edge_mer_export.detector import detector_markdown
from edge_mer_export.embedding import embedding_summary_md
from edge_mer_export.gate import GateResult, GateThresholds
from edge_mer_export.multilabel import multilabel_summary_md
from edge_mer_export.plots import MAX_SCATTER_ROWS as MAX_SCATTER_ROWS
from edge_mer_export.plots import plot_confusion, plot_scatter
from edge_mer_export.va import va_summary_md

log = logging.getLogger(__name__)

FORMAT = "edge-mer-export-report/1"
JSON_NAME = "export_report.json"
MARKDOWN_NAME = "export_report.md"
PLOTS_DIR = "plots"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
PLOTS_SKIPPED = "skipped: matplotlib is not installed (pip install 'edge-mer[export]' draws them)"


@dataclass(frozen=True)
class PrecisionOutcome:
    """One precision of one encoder: its gate verdict, latency, and the outputs behind them.

    A precision with neither ``gate`` nor ``skipped_reason`` is the FP32
    reference.  ``reference_probs`` / ``candidate_probs`` ([n, k]) only feed the
    scatter plot.
    """

    gate: GateResult | None = None
    latency: dict[str, float] | None = None
    reference_probs: np.ndarray | None = field(default=None, repr=False, compare=False)
    candidate_probs: np.ndarray | None = field(default=None, repr=False, compare=False)
    skipped_reason: str | None = None

    def __post_init__(self) -> None:
        require(self.gate is None or self.skipped_reason is None, "a precision is either gated or skipped, not both")
        require((self.reference_probs is None) == (self.candidate_probs is None),
                "reference_probs and candidate_probs must be given together")
        if self.reference_probs is not None:
            require(np.shape(self.reference_probs) == np.shape(self.candidate_probs),
                    f"reference_probs {np.shape(self.reference_probs)} and candidate_probs "
                    f"{np.shape(self.candidate_probs)} differ in shape")

    @property
    def status(self) -> str:
        """``pass``, ``fail``, ``skipped`` or ``reference``."""
        if self.skipped_reason is not None:
            return "skipped"
        if self.gate is None:
            return "reference"
        return "pass" if self.gate.passed else "fail"


@dataclass(frozen=True)
class EncoderResult:
    """Everything the report says about one encoder, precisions by name.

    ``fp32_latency`` is the reference's latency when ``precisions`` has no
    ``fp32`` entry; ``implicit_cache`` a one-line note on the TensorRT
    implicit-INT8 calibration cache (written, or why it was skipped);
    ``notes`` one-line remarks on how to read its figures (e.g. what a
    fusion head's class truth is).
    """

    name: str
    modality: str
    labels: Sequence[str]
    n_eval: int
    n_calib: int | None
    calib_source: str
    eval_source: str
    precisions: dict[str, PrecisionOutcome]
    fp32_latency: dict[str, float] | None = None
    implicit_cache: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(bool(self.name), "encoder name must not be empty")
        require(self.n_eval >= 0, f"encoder {self.name}: n_eval must be >= 0, got {self.n_eval}")
        require(self.n_calib is None or self.n_calib >= 0,
                f"encoder {self.name}: n_calib must be >= 0 or None, got {self.n_calib}")


@dataclass(frozen=True)
class ExportReport:
    """The whole export run: encoders in report order, thresholds, host facts, ISO creation time.

    ``created`` defaults to now (UTC, seconds); pass it for byte-identical reports.
    """

    encoders: Sequence[EncoderResult]
    thresholds: GateThresholds
    host: dict[str, Any]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    #: Per exported face detector: its detection gate per precision (see :mod:`edge_mer_export.detector`).
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The exported fusion heads (see :mod:`edge_mer_export.head`), each named by its model name
    #: (``fusion_head``, ``fusion_head.<name>``); the valence/arousal CCC, multilabel mAP and embedding
    #: cosine thresholds.
    heads: Sequence[EncoderResult] = ()
    max_ccc_drop: float | None = None
    max_map_drop: float | None = None
    min_embedding_cosine: float | None = None

    def __post_init__(self) -> None:
        names = [e.name for e in (*self.encoders, *self.heads)]
        require(len(set(names)) == len(names), f"encoder names must be unique, got {names}")


def _all(report: ExportReport) -> list[EncoderResult]:
    """The encoders in report order, then the fusion heads (default first)."""
    return [*report.encoders, *report.heads]


def host_info() -> dict[str, str]:
    """Platform, Python and key package versions of the export host."""
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or "unknown", "cpu_count": str(os.cpu_count() or 0),
            "python": sys.version.split()[0]}
    for package in ("numpy", "onnx", "onnxruntime"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def _ordered(encoder: EncoderResult) -> list[tuple[str, PrecisionOutcome]]:
    """Precisions in fp32, fp16, int8 order (others after, sorted), with an fp32 row added if absent."""
    known = [p for p in PRECISIONS if p in encoder.precisions]
    rows = [(p, encoder.precisions[p]) for p in known + sorted(set(encoder.precisions) - set(known))]
    if "fp32" not in encoder.precisions and (_reference_gate(encoder) is not None or encoder.fp32_latency):
        rows.insert(0, ("fp32", PrecisionOutcome(latency=encoder.fp32_latency)))
    return rows


def _reference_gate(encoder: EncoderResult) -> GateResult | None:
    """The first gate of the encoder; its FP32 side describes the reference."""
    return next((o.gate for _, o in sorted(encoder.precisions.items(), key=lambda kv: _rank(kv[0]))
                 if o.gate is not None), None)


def _rank(precision: str) -> tuple[int, str]:
    return (PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS), precision)


def _confusion_of(encoder: EncoderResult, outcome: PrecisionOutcome) -> tuple[tuple[int, ...], ...]:
    if outcome.gate is not None:
        return outcome.gate.confusion
    ref = _reference_gate(encoder)
    return ref.confusion_fp32 if ref is not None and outcome.status == "reference" else ()


def _metrics_of(encoder: EncoderResult, outcome: PrecisionOutcome) -> dict[str, float]:
    if outcome.gate is not None:
        return dict(outcome.gate.metrics)
    ref = _reference_gate(encoder)
    if ref is None or outcome.status != "reference":
        return {}
    keys = ("n_eval", "n_va", "ml_n", "accuracy_fp32", "macro_f1_fp32", "ccc_valence_fp32", "ccc_arousal_fp32",
            "ccc_mean_fp32", "ml_map_fp32", "ml_mean_f1_fp32")
    return {k.removesuffix("_fp32"): ref.metrics[k] for k in keys if k in ref.metrics}


def _write_plots(out_dir: Path, encoder: EncoderResult) -> dict[str, dict[str, str]]:
    """Draw every plot the encoder has data for; relative POSIX paths by precision and kind."""
    plots: dict[str, dict[str, str]] = {}
    for precision, outcome in _ordered(encoder):
        stem = f"{_UNSAFE.sub('_', encoder.name)}_{_UNSAFE.sub('_', precision)}"
        made: dict[str, str] = {}
        confusion = _confusion_of(encoder, outcome)
        k = len(confusion) or (0 if outcome.reference_probs is None else np.shape(outcome.reference_probs)[1])
        names = encoder.labels if len(encoder.labels) == k else tuple(str(i) for i in range(k))
        if confusion:
            acc = _metrics_of(encoder, outcome).get("accuracy", math.nan)
            title = f"{encoder.name} {precision}: accuracy {100 * acc:.1f}% (n={sum(map(sum, confusion))})"
            made["confusion"] = f"{PLOTS_DIR}/{stem}_confusion.png"
            plot_confusion(out_dir / made["confusion"], confusion, names, title)
        if outcome.reference_probs is not None and outcome.candidate_probs is not None and precision != "fp32":
            made["scatter"] = f"{PLOTS_DIR}/{stem}_scatter.png"
            plot_scatter(out_dir / made["scatter"], outcome.reference_probs, outcome.candidate_probs, names,
                         f"{encoder.name}: fp32 vs {precision} outputs", precision)
        plots[precision] = made
    return plots


def _clean(value: Any) -> Any:
    """JSON-ready builtins: numpy scalars unwrapped, non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _precision_json(encoder: EncoderResult, outcome: PrecisionOutcome, plots: dict[str, str]) -> dict[str, Any]:
    status = outcome.status
    reasons = list(outcome.gate.reasons) if outcome.gate is not None else []
    if outcome.skipped_reason is not None:
        reasons = [outcome.skipped_reason]
    return {"status": status, "passed": status in ("pass", "reference"), "reasons": reasons,
            "metrics": _metrics_of(encoder, outcome), "latency": outcome.latency,
            "confusion": _confusion_of(encoder, outcome), "plots": plots}


def _encoder_json(enc: EncoderResult, plots: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One encoder's (or the fusion head's) entry of the JSON report."""
    return {"modality": enc.modality, "labels": list(enc.labels),
            "datasets": {"eval": {"source": enc.eval_source, "n": enc.n_eval},
                         "calibration": {"source": enc.calib_source, "n": enc.n_calib}},
            "implicit_int8_cache": enc.implicit_cache, "notes": list(enc.notes),
            "precisions": {p: _precision_json(enc, o, plots.get(p, {})) for p, o in _ordered(enc)}}


def report_json(report: ExportReport, plots: dict[str, dict[str, dict[str, str]]]) -> dict[str, Any]:
    """The machine-readable report as builtins (no arrays).

    Each exported fusion head has a top-level section under its model name (``fusion_head``,
    ``fusion_head.<name>``), listed in ``fusion_heads``; neither key appears when no head was exported.
    """
    encoders = {enc.name: _encoder_json(enc, plots.get(enc.name, {})) for enc in report.encoders}
    thresholds = to_dict(report.thresholds)
    if report.max_ccc_drop is not None:
        thresholds["max_ccc_drop"] = report.max_ccc_drop
    if report.max_map_drop is not None:
        thresholds["max_map_drop"] = report.max_map_drop
    if report.min_embedding_cosine is not None:
        thresholds["min_embedding_cosine"] = report.min_embedding_cosine
    heads = {h.name: _encoder_json(h, plots.get(h.name, {})) for h in report.heads}
    listed = {"fusion_heads": list(heads)} if heads else {}
    return _clean({"format": FORMAT, "created": report.created, "host": dict(report.host),
                   "thresholds": thresholds, "encoders": encoders, "detectors": dict(report.detectors),
                   **listed, **heads})


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _result_cell(outcome: PrecisionOutcome) -> str:
    status = outcome.status
    if status == "skipped":
        return f"skipped: {_cell(outcome.skipped_reason)}"
    return {"pass": "pass", "fail": "**FAIL**", "reference": "reference"}[status]


def _summary_md(report: ExportReport) -> list[str]:
    lines = ["## Summary", "",
             "| encoder | precision | accuracy | drop (pt) | agreement | KL | p50 latency (ms) | result |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for enc in _all(report):
        for precision, outcome in _ordered(enc):
            m = _metrics_of(enc, outcome)
            p50 = (outcome.latency or {}).get("p50_ms")
            lines.append(f"| {_cell(enc.name)} | {precision} | {_pct(m.get('accuracy'))} | "
                         f"{_num(m.get('accuracy_drop_pt'), '.1f')} | {_pct(m.get('agreement'))} | "
                         f"{_num(m.get('kl'), '.3g')} | {_num(p50, '.2f')} | {_result_cell(outcome)} |")
    rows = [(_cell(e.name), p, _metrics_of(e, o), _result_cell(o)) for e in _all(report) for p, o in _ordered(e)]
    return lines + [""] + va_summary_md(rows) + multilabel_summary_md(rows) + embedding_summary_md(rows)


def _limit(value: float | None, template: str) -> str:
    return "not gated" if value is None else template.format(value)


def _thresholds_md(t: GateThresholds, max_ccc_drop: float | None = None, max_map_drop: float | None = None,
                   min_embedding_cosine: float | None = None) -> list[str]:
    lines = ["## Thresholds", "",
             f"- accuracy drop at most {t.max_accuracy_drop:g} pt (percentage points of top-1 accuracy vs fp32)",
             f"- top-1 agreement with fp32 at least {100 * t.min_agreement:.1f}%",
             f"- mean KL(fp32 || candidate): {_limit(t.max_kl, 'at most {:g} nats')}",
             f"- max abs probability difference: {_limit(t.max_abs_diff, 'at most {:g}')}",
             f"- valence/arousal CCC vs fp32: {_limit(t.min_ccc, 'at least {:g}')}" if max_ccc_drop is None else
             f"- valence/arousal CCC lost vs fp32 and vs V/A labels: at most {max_ccc_drop:g} per axis"]
    if max_map_drop is not None:
        lines.append(f"- multilabel outputs: mAP lost vs fp32 on the true label sets at most {max_map_drop:g}")
    if min_embedding_cosine is not None:
        lines.append(f"- embedding outputs: mean cosine similarity with fp32 at least {min_embedding_cosine:g}")
    return lines + [""]


def _format_metric(name: str, value: float) -> str:
    if name in ("n_eval", "n_va", "ml_n", "nonfinite_rows", "ml_out_of_range_rows"):
        return str(int(value))
    if name == "accuracy_drop_pt":
        return f"{value:.2f} pt"
    if name.startswith(("accuracy", "agreement", "recall_")):
        return _pct(value)
    return f"{value:.4g}"


def _precision_md(enc: EncoderResult, precision: str, outcome: PrecisionOutcome, plots: dict[str, str]) -> list[str]:
    lines = [f"### {_cell(enc.name)} {precision}: {_result_cell(outcome)}", ""]
    if outcome.gate is not None and outcome.gate.reasons:
        lines += [f"- {_cell(r)}" for r in outcome.gate.reasons] + [""]
    metrics = _metrics_of(enc, outcome)
    latency = outcome.latency or {}
    if metrics or latency:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {_cell(k)} | {_format_metric(k, v)} |" for k, v in metrics.items()]
        if latency:
            shown = " / ".join(_num(latency.get(k), ".3f") for k in ("p50_ms", "p90_ms", "mean_ms"))
            lines.append(f"| latency p50 / p90 / mean (ms) | {shown} |")
        lines.append("")
    if "confusion" in plots:
        lines += [f"![{_cell(enc.name)} {precision} confusion matrix]({plots['confusion']})", ""]
    if "scatter" in plots:
        lines += [f"![{_cell(enc.name)} fp32 vs {precision} probabilities]({plots['scatter']})", ""]
    return lines


def _encoder_md(enc: EncoderResult, plots: dict[str, dict[str, str]]) -> list[str]:
    calib = "none" if enc.n_calib is None else f"{_cell(enc.calib_source)}, n = {enc.n_calib}"
    lines = [f"## {_cell(enc.name)} ({_cell(enc.modality)})", "",
             f"- classes: {', '.join(enc.labels) or 'none'}",
             f"- evaluation data: {_cell(enc.eval_source)}, n = {enc.n_eval}",
             f"- calibration data: {calib}"]
    if enc.implicit_cache is not None:
        lines.append(f"- TensorRT implicit-INT8 calibration cache: {_cell(enc.implicit_cache)}")
    lines += [f"- note: {_cell(note)}" for note in enc.notes]
    lines.append("")
    for precision, outcome in _ordered(enc):
        lines += _precision_md(enc, precision, outcome, plots.get(precision, {}))
    return lines


def report_markdown(report: ExportReport, plots: dict[str, dict[str, dict[str, str]]]) -> str:
    """The human-readable report; image links are relative to the Markdown file."""
    host = ", ".join(f"{k} {v if isinstance(v, str) else json.dumps(_clean(v), sort_keys=True)}"
                     for k, v in report.host.items())
    lines = ["# edge-mer export report", "", f"Created {report.created} on {_cell(host) or 'unknown host'}.", ""]
    lines += _summary_md(report) + _thresholds_md(report.thresholds, report.max_ccc_drop, report.max_map_drop,
                                                  report.min_embedding_cosine)
    for enc in _all(report):
        lines += _encoder_md(enc, plots.get(enc.name, {}))
    for name, det in report.detectors.items():
        lines += detector_markdown(name, det)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(out_dir: Path, report: ExportReport) -> tuple[Path, Path]:
    """Write ``export_report.json``, ``export_report.md`` and (with matplotlib) ``plots/*.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    drawn = importlib.util.find_spec("matplotlib") is not None
    if not drawn:  # the verdicts need no plots: say why there are none (host line and JSON) and go on
        log.warning("export report plots %s", PLOTS_SKIPPED)
        report = replace(report, host={**report.host, "plots": PLOTS_SKIPPED})
    plots = {enc.name: _write_plots(out_dir, enc) for enc in _all(report)} if drawn else {}
    json_path = out_dir / JSON_NAME
    json_path.write_text(json.dumps(report_json(report, plots), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out_dir / MARKDOWN_NAME
    md_path.write_text(report_markdown(report, plots), encoding="utf-8")
    log.info("export report written to %s and %s", json_path, md_path)
    return json_path, md_path
