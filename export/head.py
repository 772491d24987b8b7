"""Quantize every shipped fusion head (FP16, INT8 Q/DQ) and gate each on held-out head inputs.

Each head of ``fusion.named_heads()`` (the default head, then
``fusion.heads``) goes through the encoders' steps:
:func:`~edge_mer_export.onnx_checks.prepare_model`,
:func:`~edge_mer_export.fp16.make_fp16`, :func:`~edge_mer_export.int8.make_int8`
(its ``mask`` input's own path kept float, see :mod:`edge_mer_export.int8`)
and :func:`~edge_mer_export.qdq_lint.check_qdq`, then
:func:`~edge_mer_export.evaluate.judge` with the encoders' thresholds
(accuracy drop and top-1 agreement on its class output, CCC on a
``valence_arousal`` output, mAP drop on a ``multilabel`` output's
``label_sets``). Its data are ``.npz`` files of head inputs
(:mod:`edge_mer_calibration.head`): ``--head-eval`` (labelled) gates,
``--head-calib`` (another file, no row shared with the evaluation file)
calibrates. One pair of files serves every head: each reads the arrays it
declares, and skips those another shipped head declares. The results go to
each head's ``FusionHead.precisions`` and to one report section per head,
named :func:`~edge_mer.bundle.loader.head_model_name` (``fusion_head`` for
the default head, ``fusion_head.<name>`` for the others).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.bundle.loader import Bundle, head_model_name
from edge_mer.bundle.schema import FusionHead, Manifest, TensorInfo
from edge_mer.errors import BundleError
from edge_mer.fusion.learned import MASK_INPUT, head_layout
from edge_mer_calibration.head import LABEL_SETS_KEY, VA_KEY, HeadRows, read_head_npz
from edge_mer_calibration.ort_reader import FeedsReader
from edge_mer_export.config import ExportConfig
from edge_mer_export.embedding import embedding_outputs
from edge_mer_export.errors import ExportError
from edge_mer_export.evaluate import EvalSet, judge
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.int8 import make_int8
from edge_mer_export.multilabel import multilabel_output
from edge_mer_export.onnx_checks import prepare_model
from edge_mer_export.outputs import candidate_path, with_precisions
from edge_mer_export.qdq_lint import check_qdq
from edge_mer_export.report import EncoderResult
from edge_mer_export.va import va_output

log = logging.getLogger(__name__)

#: Rows per evaluation batch when the head's inputs have a batch axis.
EVAL_BATCH = 32
#: The report's note on a head with a multilabel output, whose data give one class per row from a label set.
MULTILABEL_TRUTH_NOTE = ("class-gate truth: the head data's `labels`, for label-set rows the first label of each "
                         "set (edge_mer_calibration.compound.first_members); its accuracy is meaningful only as a "
                         "drop relative to fp32, the multilabel output is judged on the full label sets")


def _heads(bundle: Bundle) -> dict[str, FusionHead]:
    """Every shipped head by name, each checked against the runtime's input convention."""
    heads = bundle.manifest.fusion.named_heads()
    if not heads:
        raise ExportError(f"--head-eval was given but bundle {bundle.manifest.name} has no fusion.head to export")
    for name, head in heads.items():
        try:
            head_layout(bundle, head)  # the runtime's input convention, so the exported head is one the daemon runs
        except BundleError as exc:
            raise ExportError(f"bundle {bundle.manifest.name}, fusion head {name!r}: {exc}") from None
    return heads


def _check_shared_inputs(heads: dict[str, FusionHead]) -> None:
    """Heads read the same array for an input of the same name, so they must declare it alike (mask aside)."""
    seen: dict[str, tuple[str, TensorInfo]] = {}
    for name, head in heads.items():
        for tensor in head.inputs:
            first = seen.setdefault(tensor.name, (name, tensor))
            other, declared = first
            if tensor.name != MASK_INPUT and (declared.shape[-1], declared.labels, declared.kind) != (
                    tensor.shape[-1], tensor.labels, tensor.kind):
                raise ExportError(f"fusion heads {other!r} and {name!r} declare input {tensor.name!r} differently "
                                  f"(width, labels or kind); one head-data array cannot feed both")


def _arrays(head: FusionHead) -> set[str]:
    """The arrays of a head-data file this head declares (inputs and the truths its outputs need)."""
    names = {t.name for t in head.inputs}
    names |= {VA_KEY} if va_output(head.outputs) is not None else set()
    return names | ({LABEL_SETS_KEY} if multilabel_output(head.outputs) is not None else set())


def _sampled(rows: HeadRows, size: int, seed: int) -> HeadRows:
    """At most ``size`` rows (0: all), drawn with ``seed`` and kept in file order."""
    if size == 0 or size >= len(rows):
        return rows
    chosen = np.random.default_rng(seed).choice(len(rows), size=size, replace=False)
    return rows.subset(sorted(int(i) for i in chosen))


@dataclass(frozen=True)
class HeadData:
    """One shipped head to export (``name``; report and model name ``model``), its evaluation and calibration rows."""

    name: str
    model: str
    head: FusionHead
    evaluation: HeadRows
    calib: HeadRows | None


def read_head_data(cfg: ExportConfig, bundle: Bundle) -> dict[str, HeadData]:
    """Every shipped head (checked against the runtime's convention) and its data, read and checked up front."""
    heads = _heads(bundle)
    _check_shared_inputs(heads)
    declared = {name: _arrays(head) for name, head in heads.items()}
    masks = {next(t.labels for t in head.inputs if t.name == MASK_INPUT) for head in heads.values()}
    data = {}
    for name, head in heads.items():
        shared = sorted(set().union(*declared.values()) - declared[name])
        rows = _read(cfg, head, shared, need_mask_labels=len(masks) > 1)
        data[name] = HeadData(name, head_model_name(bundle.manifest, name), head, *rows)
    return data


def _read(cfg: ExportConfig, head: FusionHead, shared: list[str], need_mask_labels: bool
          ) -> tuple[HeadRows, HeadRows | None]:
    """The evaluation rows and (for int8) the calibration rows, checked to be disjoint."""
    labels, va = _class_output(head).labels, va_output(head.outputs) is not None
    multilabel = multilabel_output(head.outputs)
    eval_path, calib_path = cfg.head_eval, cfg.head_calib
    if eval_path is None:
        raise ExportError("the fusion head has no evaluation data; give --head-eval NPZ")
    if "int8" in cfg.precisions and calib_path is None:
        raise ExportError("the fusion head has no calibration data for int8; give --head-calib NPZ "
                          "(edge-mer never calibrates on random data)")
    options = {"allow_va": va, "multilabel": multilabel, "shared": shared, "need_mask_labels": need_mask_labels}
    evaluation = read_head_npz(eval_path, head.inputs, labels, need_labels=True,
                               need_label_sets=multilabel is not None, **options)
    if calib_path is None or "int8" not in cfg.precisions:
        return _sampled(evaluation, cfg.eval_size, cfg.seed), None
    calib = read_head_npz(calib_path, head.inputs, labels, need_labels=False, **options)
    if calib.digest == evaluation.digest:
        raise ExportError(f"--head-calib {cfg.head_calib} and --head-eval {cfg.head_eval} hold the same data; "
                          "the gate must not score on the rows the scales were fitted to")
    shared_rows = calib.row_keys() & evaluation.row_keys()
    if shared_rows:
        raise ExportError(f"{len(shared_rows)} rows of --head-calib {cfg.head_calib} also appear in --head-eval "
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
            # The validity mask's own path (the additive mask bias) stays float, see edge_mer_export.int8.
            files["int8"] = make_int8(prepared, target, lambda: FeedsReader(feeds), method=cfg.method,
                                      cache_dir=cfg.cache_dir, float_inputs=(MASK_INPUT,))
            check_qdq(files["int8"])
    return files


def export_head(cfg: ExportConfig, bundle: Bundle, data: HeadData, out: Path, work: Path
                ) -> tuple[FusionHead, EncoderResult]:
    """FP16/INT8 candidates of one shipped head, gated against its FP32 on ``data`` (:func:`read_head_data`)."""
    head, evaluation, calib = data.head, data.evaluation, data.calib
    output, va_out, ml_out = _class_output(head), va_output(head.outputs), multilabel_output(head.outputs)
    log.info("fusion head %s: %d calibration, %d evaluation rows", data.name, len(calib) if calib is not None else 0,
             len(evaluation))
    fp32 = bundle.path(head.models["fp32"])
    prepared = prepare_model(fp32, work / f"{data.model}.prepared.onnx")
    files = _candidates(cfg, prepared, out, head, calib)
    fixed_batch = any(t.shape and t.shape[0] == 1 for t in head.inputs)
    feeds = evaluation.feeds(1 if fixed_batch else EVAL_BATCH)
    labels = [output.labels.index(label) for label in evaluation.labels or ()]
    classes = EvalSet(feeds, labels=labels, label_sets=evaluation.label_sets)
    va = EvalSet(feeds, targets=evaluation.va) if va_out is not None else None
    judged = judge(cfg, f"fusion head {data.name!r}", fp32, files, (output, va_out, ml_out), classes, va,
                   embedding_outputs(head.outputs))
    updated = with_precisions(out, head, files, judged.reports)  # type: ignore[arg-type]
    result = EncoderResult(name=data.model, modality="fusion", labels=list(output.labels),
                           n_eval=len(evaluation), n_calib=len(calib) if calib is not None else 0,
                           calib_source=str(cfg.head_calib), eval_source=str(cfg.head_eval),
                           precisions=judged.outcomes, fp32_latency=judged.fp32_latency,
                           notes=(MULTILABEL_TRUTH_NOTE,) if ml_out is not None else ())
    return updated, result  # type: ignore[return-value]


def with_heads(manifest: Manifest, updated: dict[str, FusionHead]) -> Manifest:
    """``manifest`` with the exported heads (by shipped name) in place; head, head_name and heads otherwise kept."""
    if not updated:
        return manifest
    fusion = manifest.fusion
    heads = {name: updated.get(name, head) for name, head in fusion.heads.items()}
    rebuilt = dataclasses.replace(fusion, head=updated.get(fusion.head_name, fusion.head), heads=heads)
    return dataclasses.replace(manifest, fusion=rebuilt)
