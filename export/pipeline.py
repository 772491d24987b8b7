"""One export run: for each encoder, prepare, convert (FP16, INT8 Q/DQ), gate on held-out data, time, write.

The steps reuse the runtime's pieces: readers produce inputs through the
runtime preprocessing, every model runs through the runtime's ONNX Runtime
backend, and the output is an ordinary bundle the daemon loads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

# Before the calibration readers, which import onnxruntime: this module turns its telemetry off first.
from edge_mer.backends.onnxrt import onnxruntime_module
from edge_mer.bundle import load_bundle
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer_calibration.datasets import open_dataset, split_by_group, stratified_sample
from edge_mer_calibration.ort_reader import FeedsReader, feeds_from_samples
from edge_mer_calibration.samples import Sample
from edge_mer_calibration.va_csv import is_va_csv, read_va_csv
from edge_mer_export.config import ExportConfig
from edge_mer_export.detector import export_detector
from edge_mer_export.embedding import embedding_outputs
from edge_mer_export.engines import build_engines, write_implicit_cache
from edge_mer_export.errors import ExportError
from edge_mer_export.evaluate import EvalSet, judge, thresholds_of
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.head import export_head, read_head_data, with_heads
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import prepare_model
from edge_mer_export.outputs import (bundle_from_onnx, candidate_path, finish_output, start_output,
                                     with_precisions)
from edge_mer_export.qdq_lint import check_qdq
from edge_mer_export.report import EncoderResult, ExportReport, host_info, write_report
from edge_mer_export.va import va_output

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
    """Samples of ``path`` for ``spec`` (a dataset layout or a V/A CSV), stratified to ``size``."""
    if is_va_csv(path):  # V/A-labelled rows calibrate too (labels are not needed for calibration)
        if groups:
            raise ExportError(f"{what}: {path} is a V/A CSV, which has no speakers or subjects to select")
        return stratified_sample(read_va_csv(path, spec).samples, size, cfg.seed)
    options = {"hop_s": cfg.hop_s}
    if cfg.board:
        options["board"] = cfg.board
    # disable=None: a progress bar on a terminal, nothing in logs and CI.
    samples = list(tqdm(open_dataset(path, spec, **options), desc=what, unit=" samples", disable=None))
    if groups:
        samples, _ = split_by_group(samples, groups)
    return stratified_sample(samples, size, cfg.seed)


def _candidates(cfg: ExportConfig, prepared: Path, out: Path, spec: EncoderSpec,
                calib: list[Sample] | None) -> dict[str, Path]:
    """FP16 and INT8 (calibrated on ``calib``) candidate files of an encoder, by precision."""
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


def _check_disjoint(cfg: ExportConfig, name: str, calib: Path | None, evaluation: Path | None,
                    va_eval: Path | None) -> None:
    """The gate must not score on the data the scales were fitted to."""
    if calib is None or "int8" not in cfg.precisions:
        return
    if va_eval is not None and calib.resolve() == va_eval.resolve():
        raise ExportError(f"encoder {name!r}: calibration and V/A evaluation both read {va_eval}; give "
                          "separate data")
    if evaluation is None or calib.resolve() != evaluation.resolve():
        return
    a, b = cfg.data_for(cfg.calib_groups, name), cfg.data_for(cfg.eval_groups, name)
    if not a or not b or set(a) & set(b):
        raise ExportError(f"encoder {name!r}: calibration and evaluation both read {evaluation}; give "
                          f"--calib-groups and --eval-groups that do not overlap, or separate data")


def _check_data(cfg: ExportConfig, spec: EncoderSpec, name: str) -> tuple[Path | None, Path | None, Path | None]:
    """``(calib, eval, va_eval)`` paths of encoder ``name``, after checking they fit its outputs."""
    eval_path, va_path = cfg.data_for(cfg.eval, name), cfg.data_for(cfg.va_eval, name)
    calib_path, va_out = cfg.data_for(cfg.calib, name), va_output(spec.outputs)
    if spec.class_output is None and va_out is None:
        raise ExportError(f"encoder {name!r} has no probs, logits or valence_arousal output to gate")
    if va_path is not None and va_out is None and name in cfg.va_eval:
        raise ExportError(f"encoder {name!r} has no valence_arousal output; --va-eval {name}=... does not apply")
    va_path = va_path if va_out is not None else None
    if spec.class_output is not None and eval_path is None:
        raise ExportError(f"encoder {name!r} has no evaluation data; give --eval {name}=PATH")
    if spec.class_output is None and va_path is None:
        raise ExportError(f"encoder {name!r} has only a valence_arousal output; give --va-eval {name}=CSV "
                          "(rows path,valence,arousal)")
    if "int8" in cfg.precisions and calib_path is None:
        raise ExportError(f"encoder {name!r} has no calibration data for int8; give --calib {name}=PATH "
                          "(edge-mer never calibrates on random data)")
    _check_disjoint(cfg, name, calib_path, eval_path if spec.class_output is not None else None, va_path)
    return calib_path, eval_path if spec.class_output is not None else None, va_path


def _digests(samples: list[Sample]) -> set[bytes]:
    """One sha256 per sample array (to find samples two data sets share)."""
    return {hashlib.sha256(s.array.tobytes()).digest() for s in samples}


def _va_set(cfg: ExportConfig, spec: EncoderSpec, path: Path, calib: list[Sample] | None) -> EvalSet:
    """The V/A CSV's samples and targets, checked to share no sample with the calibration data."""
    data = read_va_csv(path, spec)
    if cfg.eval_size and cfg.eval_size < len(data):
        rows = np.random.default_rng(cfg.seed).choice(len(data), size=cfg.eval_size, replace=False)
        data = data.subset(sorted(int(i) for i in rows))
    shared = _digests(calib or []) & _digests(data.samples)
    if shared:
        raise ExportError(f"{path}: {len(shared)} V/A evaluation samples are also calibration samples; "
                          "the gate must not score on the data the scales were fitted to")
    return EvalSet(feeds_from_samples(data.samples, spec.inputs[0].name, batch_size=32), targets=data.targets)


def _class_set(spec: EncoderSpec, name: str, path: Path, evaluation: list[Sample]) -> EvalSet:
    """Labelled evaluation samples as feeds and class indices."""
    unlabelled = sum(s.label is None for s in evaluation)
    if unlabelled:
        raise ExportError(f"encoder {name!r}: {unlabelled} evaluation samples of {path} have no class label; "
                          "the accuracy gate needs labelled data (a V/A CSV goes to --va-eval)")
    labels = [spec.labels.index(spec_label(spec, s.label)) for s in evaluation]
    return EvalSet(feeds_from_samples(evaluation, spec.inputs[0].name, batch_size=32), labels=labels)


def export_encoder(cfg: ExportConfig, bundle: Bundle, name: str, out: Path, work: Path) -> tuple[EncoderSpec,
                                                                                                  EncoderResult]:
    """Candidates for one encoder, gated against its FP32 model on the evaluation data."""
    spec = bundle.encoder(name)
    calib_path, eval_path, va_path = _check_data(cfg, spec, name)
    calib = (_samples(cfg, calib_path, spec, cfg.calib_size, cfg.data_for(cfg.calib_groups, name),
                      f"{name} calibration data") if "int8" in cfg.precisions else None)
    evaluation = (_samples(cfg, eval_path, spec, cfg.eval_size, cfg.data_for(cfg.eval_groups, name),
                           f"{name} evaluation data") if eval_path is not None else None)
    if evaluation is not None and not evaluation:
        raise ExportError(f"encoder {name!r}: no usable samples in {eval_path}")
    if calib is not None and not calib:
        raise ExportError(f"encoder {name!r}: no usable samples in {calib_path}")
    classes = _class_set(spec, name, eval_path, evaluation) if evaluation is not None else None
    va = _va_set(cfg, spec, va_path, calib) if va_path is not None else None
    log.info("%s: %d calibration, %d evaluation, %d V/A evaluation samples", name, len(calib or []),
             len(evaluation or []), 0 if va is None else len(va.targets))
    fp32 = bundle.path(spec.models["fp32"])
    prepared = prepare_model(fp32, work / f"{name}.prepared.onnx")
    files = _candidates(cfg, prepared, out, spec, calib)
    judged = judge(cfg, name, fp32, files, (spec.class_output, va_output(spec.outputs)), classes, va,
                   embedding_outputs(spec.outputs))
    updated = with_precisions(out, spec, files, judged.reports)
    sources = " + ".join(str(p) for p in (eval_path, va_path) if p is not None)
    n_eval = len(evaluation) if evaluation else (len(va.targets) if va is not None else 0)
    result = EncoderResult(name=name, modality=spec.modality, labels=list(spec.labels), n_eval=n_eval,
                           n_calib=len(calib or []), calib_source=str(calib_path), eval_source=sources,
                           precisions=judged.outcomes, fp32_latency=judged.fp32_latency)
    if calib is not None:
        feeds = feeds_from_samples(calib, spec.inputs[0].name, batch_size=1)
        result = dataclasses.replace(result, implicit_cache=write_implicit_cache(out, bundle, name, feeds))
    return updated, result


def spec_label(spec: EncoderSpec, canonical: str | None) -> str:
    """The model label whose canonical name is ``canonical`` (readers give canonical labels)."""
    for model_label, target in spec.label_map.items():
        if target == canonical:
            return model_label
    raise ExportError(f"evaluation label {canonical!r} is not among the encoder's labels {list(spec.labels)}")


def _selected(cfg: ExportConfig, bundle: Bundle) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The encoders and detectors to export (encoders: ``--encoder``, else those with evaluation data)."""
    names = cfg.encoders or tuple(n for n in bundle.manifest.encoders
                                  if cfg.data_for(cfg.eval, n) is not None
                                  or (cfg.data_for(cfg.va_eval, n) is not None
                                      and va_output(bundle.manifest.encoders[n].outputs) is not None))
    detectors = tuple(bundle.manifest.detectors) if cfg.detector_eval is not None else ()
    if not names and not detectors and cfg.head_eval is None:
        raise ExportError("no encoder selected: give --eval ENCODER=PATH or --va-eval ENCODER=CSV (or --encoder "
                          "NAME), --detector-eval VIDEO for the face detector, or --head-eval NPZ for the fusion heads")
    return names, detectors


def export(cfg: ExportConfig) -> ExportResult:
    """Run the whole export and write the bundle and its report into ``cfg.out``."""
    started = time.monotonic()
    onnxruntime_module()  # telemetry events off before the first session
    with tempfile.TemporaryDirectory(prefix="edge-mer-export-") as tmp:
        work = Path(tmp)
        bundle = (bundle_from_onnx(cfg.source, cfg.entry, work) if cfg.entry is not None
                  else load_bundle(cfg.source))
        names, detectors = _selected(cfg, bundle)
        head_data = read_head_data(cfg, bundle) if cfg.head_eval is not None else {}  # bad data fails first
        created = not cfg.out.exists()
        out = start_output(bundle, cfg.out)
        try:
            updated, results, detector_specs, detector_results = {}, [], {}, {}
            for name in names:
                updated[name], result = export_encoder(cfg, bundle, name, out, work)
                results.append(result)
            for name in detectors:
                detector_specs[name], detector_results[name] = export_detector(cfg, bundle, name, out, work)
            exported = {name: export_head(cfg, bundle, data, out, work) for name, data in head_data.items()}
            heads = {name: spec for name, (spec, _) in exported.items()}
            finish_output(out, with_heads(bundle.manifest, heads), updated, detector_specs)
        except BaseException:
            # Leave no half-written bundle behind (a retry would find the directory not empty).
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
    engines = build_engines(out, names) if cfg.engines else "skipped (--engines not given)"
    report = ExportReport(encoders=results, thresholds=thresholds_of(cfg)[0],
                          host={**host_info(), "engines": engines, "seconds": round(time.monotonic() - started, 1)},
                          detectors=detector_results, heads=[result for _, result in exported.values()],
                          max_ccc_drop=cfg.max_ccc_drop, max_map_drop=cfg.max_map_drop,
                          min_embedding_cosine=cfg.min_embedding_cosine)
    report_json, report_md = write_report(out / "report", report)
    models = (*updated.values(), *detector_specs.values(), *heads.values())
    # Only what this run converted counts: a precision carried over from the source bundle was gated before.
    any_passed = any(r.passed for spec in models for p, r in spec.precisions.items() if p in cfg.precisions)
    return ExportResult(out, report_json, report_md, any_passed)
