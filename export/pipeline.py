"""One export run: for each encoder, prepare, convert (FP16, INT8 Q/DQ), gate on held-out data, time, write.

The steps reuse the runtime's pieces: readers produce inputs through the
runtime preprocessing, every model runs through the runtime's ONNX Runtime
backend, and the output is an ordinary bundle the daemon loads.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_mer.backends.base import ModelFile, ModelRef
# Before the calibration readers, which import onnxruntime: this module turns its telemetry off first.
from edge_mer.backends.onnxrt import onnxruntime_module
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.numeric import softmax
from edge_mer.bundle import load_bundle
from edge_mer.bundle.loader import Bundle, sha256_file
from edge_mer.bundle.schema import EncoderSpec, PrecisionReport
from edge_mer_calibration.datasets import open_dataset, split_by_group, stratified_sample
from edge_mer_calibration.ort_reader import FeedsReader, feeds_from_samples
from edge_mer_calibration.samples import Sample
from edge_mer_export.config import ExportConfig
from edge_mer_export.detector import export_detector
from edge_mer_export.engines import build_engines, write_implicit_cache
from edge_mer_export.errors import ExportError
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.gate import LATENCY_OPTIONS, GateThresholds, gate, measure_latency
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import prepare_model
from edge_mer_export.outputs import (bundle_from_onnx, candidate_path, finish_output, start_output,
                                     with_precisions)
from edge_mer_export.qdq_lint import check_qdq
from edge_mer_export.report import EncoderResult, ExportReport, PrecisionOutcome, host_info, write_report

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ExportResult:
    """The written bundle, its report files, and whether any candidate precision passed."""

    bundle: Path
    report_json: Path
    report_md: Path
    any_passed: bool


def _samples(cfg: ExportConfig, path: Path, spec: EncoderSpec, size: int, groups: tuple[str, ...] | None,
             what: str) -> list[Sample]:
    options = {"hop_s": cfg.hop_s}
    if cfg.board:
        options["board"] = cfg.board
    # disable=None: a progress bar on a terminal, nothing in logs and CI.
    samples = list(tqdm(open_dataset(path, spec, **options), desc=what, unit=" samples", disable=None))
    if groups:
        samples, _ = split_by_group(samples, groups)
    return stratified_sample(samples, size, cfg.seed)


def _run(path: Path, precision: str, feeds: list[dict[str, np.ndarray]], output: str) -> np.ndarray:
    ref = ModelRef(path.stem, precision, {precision: ModelFile(path, sha256_file(path))})
    with create_backend(ref, BackendOptions(name="onnxruntime")) as backend:
        batches = tqdm(feeds, desc=f"evaluating {path.name}", unit=" batches", disable=None)
        return np.concatenate([backend.infer(f)[output] for f in batches])


def _latency(path: Path, precision: str, feed: dict[str, np.ndarray], iterations: int) -> dict:
    ref = ModelRef(path.stem, precision, {precision: ModelFile(path, sha256_file(path))})
    with create_backend(ref, LATENCY_OPTIONS) as backend:
        return measure_latency(backend, feed, iterations=iterations)


def _probs(raw: np.ndarray, kind: str) -> np.ndarray:
    return softmax(np.asarray(raw, dtype=np.float64)) if kind == "logits" else raw.astype(np.float64)


def _candidates(cfg: ExportConfig, prepared: Path, out: Path, spec: EncoderSpec,
                calib: list[Sample] | None) -> dict[str, Path]:
    files: dict[str, Path] = {}
    input_name = spec.inputs[0].name
    for precision in cfg.precisions:
        target = candidate_path(out, spec, precision)
        if precision == "fp16":
            files["fp16"] = make_fp16(prepared, target)
        else:
            feeds = feeds_from_samples(calib or [], input_name, batch_size=1)
            files["int8"] = make_int8(prepared, target, lambda: FeedsReader(feeds), method=cfg.method,
                                      cache_dir=cfg.cache_dir)
            check_qdq(files["int8"])
    return files


def _check_disjoint(cfg: ExportConfig, name: str, calib: Path | None, evaluation: Path) -> None:
    """The gate must not score on the data the scales were fitted to."""
    if calib is None or "int8" not in cfg.precisions or calib.resolve() != evaluation.resolve():
        return
    a, b = cfg.data_for(cfg.calib_groups, name), cfg.data_for(cfg.eval_groups, name)
    if not a or not b or set(a) & set(b):
        raise ExportError(f"encoder {name!r}: calibration and evaluation both read {evaluation}; give "
                          f"--calib-groups and --eval-groups that do not overlap, or separate data")


def export_encoder(cfg: ExportConfig, bundle: Bundle, name: str, out: Path, work: Path) -> tuple[EncoderSpec,
                                                                                                  EncoderResult]:
    """Candidates for one encoder, gated against its FP32 model on the evaluation data."""
    spec = bundle.encoder(name)
    eval_path, calib_path = cfg.data_for(cfg.eval, name), cfg.data_for(cfg.calib, name)
    if eval_path is None:
        raise ExportError(f"encoder {name!r} has no evaluation data; give --eval {name}=PATH")
    if "int8" in cfg.precisions and calib_path is None:
        raise ExportError(f"encoder {name!r} has no calibration data for int8; give --calib {name}=PATH "
                          "(edge-mer never calibrates on random data)")
    _check_disjoint(cfg, name, calib_path, eval_path)
    calib = (_samples(cfg, calib_path, spec, cfg.calib_size, cfg.data_for(cfg.calib_groups, name),
                      f"{name} calibration data") if "int8" in cfg.precisions else None)
    evaluation = _samples(cfg, eval_path, spec, cfg.eval_size, cfg.data_for(cfg.eval_groups, name),
                          f"{name} evaluation data")
    if not evaluation or (calib is not None and not calib):
        raise ExportError(f"encoder {name!r}: no usable samples in {eval_path if not evaluation else calib_path}")
    log.info("%s: %d calibration, %d evaluation samples", name, len(calib or []), len(evaluation))
    fp32 = bundle.path(spec.models["fp32"])
    prepared = prepare_model(fp32, work / f"{name}.prepared.onnx")
    files = _candidates(cfg, prepared, out, spec, calib)
    updated, result = _gate_all(cfg, spec, name, fp32, files, evaluation, calib, (calib_path, eval_path), out)
    if calib is not None:
        feeds = feeds_from_samples(calib, spec.inputs[0].name, batch_size=1)
        result = dataclasses.replace(result, implicit_cache=write_implicit_cache(out, bundle, name, feeds))
    return updated, result


def _gate_all(cfg: ExportConfig, spec: EncoderSpec, name: str, fp32: Path, files: dict[str, Path],
              evaluation: list[Sample], calib: list[Sample] | None, paths: tuple, out: Path
              ) -> tuple[EncoderSpec, EncoderResult]:
    output = spec.class_output
    feeds = feeds_from_samples(evaluation, spec.inputs[0].name, batch_size=32)
    one = {k: v[:1] for k, v in feeds[0].items()}
    labels = [spec.labels.index(spec_label(spec, s.label)) for s in evaluation]
    thresholds = GateThresholds(max_accuracy_drop=cfg.max_accuracy_drop, min_agreement=cfg.min_agreement)
    reference = _probs(_run(fp32, "fp32", feeds, output.name), output.kind)
    fp32_latency = _latency(fp32, "fp32", one, cfg.latency_iterations)
    reports = {"fp32": PrecisionReport(True, None, round(fp32_latency["p50_ms"], 4), {})}
    outcomes = {}
    for precision, path in files.items():
        candidate = _probs(_run(path, precision, feeds, output.name), output.kind)
        result = gate(reference, candidate, labels, len(spec.labels), thresholds)
        latency = _latency(path, precision, one, cfg.latency_iterations)
        reports[precision] = result.to_precision_report(round(latency["p50_ms"], 4))
        outcomes[precision] = PrecisionOutcome(result, latency, reference, candidate, None)
        verdict = "passed" if result.passed else "FAILED: " + "; ".join(result.reasons)
        log.info("%s %s: %s (p50 %.3f ms vs fp32 %.3f ms)", name, precision, verdict, latency["p50_ms"],
                 fp32_latency["p50_ms"])
        if not result.passed:
            path.unlink()
    updated = with_precisions(out, spec, files, reports)
    encoder = EncoderResult(name=name, modality=spec.modality, labels=list(spec.labels), n_eval=len(evaluation),
                            n_calib=len(calib or []), calib_source=str(paths[0]), eval_source=str(paths[1]),
                            precisions=outcomes, fp32_latency=fp32_latency)
    return updated, encoder


def spec_label(spec: EncoderSpec, canonical: str | None) -> str:
    """The model label whose canonical name is ``canonical`` (readers give canonical labels)."""
    for model_label, target in spec.label_map.items():
        if target == canonical:
            return model_label
    raise ExportError(f"evaluation label {canonical!r} is not among the encoder's labels {list(spec.labels)}")


def export(cfg: ExportConfig) -> ExportResult:
    """Run the whole export and write the bundle and its report into ``cfg.out``."""
    started = time.monotonic()
    onnxruntime_module()  # telemetry events off before the first session
    with tempfile.TemporaryDirectory(prefix="edge-mer-export-") as tmp:
        work = Path(tmp)
        bundle = (bundle_from_onnx(cfg.source, cfg.entry, work) if cfg.entry is not None
                  else load_bundle(cfg.source))
        names = cfg.encoders or tuple(n for n in bundle.manifest.encoders if cfg.data_for(cfg.eval, n) is not None)
        detectors = tuple(bundle.manifest.detectors) if cfg.detector_eval is not None else ()
        if not names and not detectors:
            raise ExportError("no encoder selected: give --eval ENCODER=PATH (or --encoder NAME), "
                              "or --detector-eval VIDEO for the face detector")
        created = not cfg.out.exists()
        out = start_output(bundle, cfg.out)
        try:
            updated, results, detector_specs, detector_results = {}, [], {}, {}
            for name in names:
                updated[name], result = export_encoder(cfg, bundle, name, out, work)
                results.append(result)
            for name in detectors:
                detector_specs[name], detector_results[name] = export_detector(cfg, bundle, name, out, work)
            finish_output(out, bundle.manifest, updated, detector_specs)
        except BaseException:
            # Leave no half-written bundle behind (a retry would find the directory not empty).
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
    engines = build_engines(out, names) if cfg.engines else "skipped (--engines not given)"
    thresholds = GateThresholds(max_accuracy_drop=cfg.max_accuracy_drop, min_agreement=cfg.min_agreement)
    report = ExportReport(encoders=results, thresholds=thresholds,
                          host={**host_info(), "engines": engines, "seconds": round(time.monotonic() - started, 1)},
                          detectors=detector_results)
    report_json, report_md = write_report(out / "report", report)
    any_passed = any(r.passed for spec in (*updated.values(), *detector_specs.values())
                     for p, r in spec.precisions.items() if p != "fp32")
    return ExportResult(out, report_json, report_md, any_passed)
