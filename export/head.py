"""Quantize the bundle's learned fusion head (FP16, INT8 Q/DQ) and gate it on held-out head inputs.

The head goes through the encoders' steps: :func:`~edge_mer_export.onnx_checks.prepare_model`,
:func:`~edge_mer_export.fp16.make_fp16`, :func:`~edge_mer_export.int8.make_int8`
and :func:`~edge_mer_export.qdq_lint.check_qdq`, then
:func:`~edge_mer_export.evaluate.judge` with the encoders' thresholds
(accuracy drop and top-1 agreement on its class output, CCC on a
``valence_arousal`` output). Its data are ``.npz`` files of head inputs
(:mod:`edge_mer_calibration.head`): ``--head-eval`` (labelled) gates,
``--head-calib`` (another file, no row shared with the evaluation file)
calibrates. The results go to ``FusionHead.precisions`` and the report's
fusion-head section.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.bundle.loader import HEAD_MODEL_NAME, Bundle
from edge_mer.bundle.schema import FusionHead, TensorInfo
from edge_mer.errors import BundleError
from edge_mer.fusion.learned import head_layout
from edge_mer_calibration.head import HeadRows, read_head_npz
from edge_mer_calibration.ort_reader import FeedsReader
from edge_mer_export.config import ExportConfig
from edge_mer_export.errors import ExportError
from edge_mer_export.evaluate import EvalSet, judge
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import prepare_model
from edge_mer_export.outputs import candidate_path, with_precisions
from edge_mer_export.qdq_lint import check_qdq
from edge_mer_export.report import EncoderResult
from edge_mer_export.va import va_output

log = logging.getLogger(__name__)

#: Rows per evaluation batch when the head's inputs have a batch axis.
EVAL_BATCH = 32


def _head(bundle: Bundle) -> FusionHead:
    """The bundle's fusion head, checked against the runtime's input convention."""
    head = bundle.manifest.fusion.head
    if head is None:
        raise ExportError(f"--head-eval was given but bundle {bundle.manifest.name} has no fusion.head to export")
    try:
        head_layout(bundle, head)  # the runtime's input convention, so the exported head is one the daemon runs
    except BundleError as exc:
        raise ExportError(f"bundle {bundle.manifest.name}: {exc}") from None
    return head


def _sampled(rows: HeadRows, size: int, seed: int) -> HeadRows:
    """At most ``size`` rows (0: all), drawn with ``seed`` and kept in file order."""
    if size == 0 or size >= len(rows):
        return rows
    chosen = np.random.default_rng(seed).choice(len(rows), size=size, replace=False)
    return rows.subset(sorted(int(i) for i in chosen))


@dataclass(frozen=True)
class HeadData:
    """The head to export, its evaluation rows and (for int8) its calibration rows."""

    head: FusionHead
    evaluation: HeadRows
    calib: HeadRows | None


def read_head_data(cfg: ExportConfig, bundle: Bundle) -> HeadData:
    """The bundle's head (checked against the runtime's convention) and its data, read and checked up front."""
    head = _head(bundle)
    return HeadData(head, *_read(cfg, head))


def _read(cfg: ExportConfig, head: FusionHead) -> tuple[HeadRows, HeadRows | None]:
    """The evaluation rows and (for int8) the calibration rows, checked to be disjoint."""
    labels, va = _class_output(head).labels, va_output(head.outputs) is not None
    eval_path, calib_path = cfg.head_eval, cfg.head_calib
    if eval_path is None:
        raise ExportError("the fusion head has no evaluation data; give --head-eval NPZ")
    if "int8" in cfg.precisions and calib_path is None:
        raise ExportError("the fusion head has no calibration data for int8; give --head-calib NPZ "
                          "(edge-mer never calibrates on random data)")
    evaluation = read_head_npz(eval_path, head.inputs, labels, need_labels=True, allow_va=va)
    if calib_path is None or "int8" not in cfg.precisions:
        return _sampled(evaluation, cfg.eval_size, cfg.seed), None
    calib = read_head_npz(calib_path, head.inputs, labels, need_labels=False, allow_va=va)
    if calib.digest == evaluation.digest:
        raise ExportError(f"--head-calib {cfg.head_calib} and --head-eval {cfg.head_eval} hold the same data; "
                          "the gate must not score on the rows the scales were fitted to")
    shared = calib.row_keys() & evaluation.row_keys()
    if shared:
        raise ExportError(f"{len(shared)} rows of --head-calib {cfg.head_calib} also appear in --head-eval "
                          f"{cfg.head_eval}; give disjoint calibration and evaluation rows")
    return _sampled(evaluation, cfg.eval_size, cfg.seed), _sampled(calib, cfg.calib_size, cfg.seed)


def _class_output(head: FusionHead) -> TensorInfo:
    """The head's one probs/logits output (:func:`head_layout` checked there is one)."""
    return next(o for o in head.outputs if o.kind in ("probs", "logits"))


def _candidates(cfg: ExportConfig, prepared: Path, out: Path, head: FusionHead, calib: HeadRows | None
                ) -> dict[str, Path]:
    """FP16 and INT8 (calibrated on ``calib``) candidate files of the head, by precision."""
    files: dict[str, Path] = {}
    for precision in cfg.precisions:
        target = candidate_path(out, head, precision)  # type: ignore[arg-type]  # same models field as an encoder
        if precision == "fp16":
            files["fp16"] = make_fp16(prepared, target)
        else:
            feeds = calib.feeds(1) if calib is not None else []
            files["int8"] = make_int8(prepared, target, lambda: FeedsReader(feeds), method=cfg.method,
                                      cache_dir=cfg.cache_dir)
            check_qdq(files["int8"])
    return files


def export_head(cfg: ExportConfig, bundle: Bundle, data: HeadData, out: Path, work: Path
                ) -> tuple[FusionHead, EncoderResult]:
    """FP16/INT8 candidates of the bundle's fusion head, gated against FP32 on ``data`` (:func:`read_head_data`)."""
    head, evaluation, calib = data.head, data.evaluation, data.calib
    output = _class_output(head)
    log.info("fusion head: %d calibration, %d evaluation rows", len(calib) if calib is not None else 0,
             len(evaluation))
    fp32 = bundle.path(head.models["fp32"])
    prepared = prepare_model(fp32, work / f"{HEAD_MODEL_NAME}.prepared.onnx")
    files = _candidates(cfg, prepared, out, head, calib)
    fixed_batch = any(t.shape and t.shape[0] == 1 for t in head.inputs)
    feeds = evaluation.feeds(1 if fixed_batch else EVAL_BATCH)
    labels = [output.labels.index(label) for label in evaluation.labels or ()]
    va_out = va_output(head.outputs)
    classes = EvalSet(feeds, labels=labels)
    va = EvalSet(feeds, targets=evaluation.va) if va_out is not None else None
    judged = judge(cfg, "fusion head", fp32, files, (output, va_out), classes, va)
    updated = with_precisions(out, head, files, judged.reports)  # type: ignore[arg-type]
    result = EncoderResult(name=HEAD_MODEL_NAME, modality="fusion", labels=list(output.labels),
                           n_eval=len(evaluation), n_calib=len(calib) if calib is not None else 0,
                           calib_source=str(cfg.head_calib), eval_source=str(cfg.head_eval),
                           precisions=judged.outcomes, fp32_latency=judged.fp32_latency)
    return updated, result  # type: ignore[return-value]
