"""Quantize the bundle's face detector (FP16, INT8 Q/DQ) and gate it on detections, not on class labels.

The gate runs the FP32 and the candidate network through the runtime's own
detector (letterbox, network, BlazeFace decoding, weighted NMS) on held-out
video frames and compares boxes: **recall** (FP32 faces the candidate finds
with IoU >= 0.5), the **mean IoU** of those matches, and **extra** boxes per
frame the FP32 model did not give. Calibration frames come from another video
(``--detector-calib``), through the same letterbox as on the device.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.backends.registry import create_backend
from edge_mer.bundle.loader import Bundle, sha256_file
from edge_mer.bundle.schema import DetectorSpec, PrecisionReport
from edge_mer.pipeline.face_models import build_detector
from edge_mer.preprocess.detection import Detection
from edge_mer.preprocess.face_detect import FaceDetectorOptions
from edge_mer.preprocess.face_track import iou
from edge_mer_calibration.detector import detector_feeds, read_frames
from edge_mer_calibration.ort_reader import FeedsReader
from edge_mer_export.config import ExportConfig
from edge_mer_export.errors import ExportError
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.gate import LATENCY_OPTIONS, measure_latency
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import prepare_model
from edge_mer_export.outputs import candidate_path, with_precisions
from edge_mer_export.qdq_lint import check_qdq
from edge_mer_export.qdq_placement import stem_convs

log = logging.getLogger(__name__)

#: A candidate box is the same face as an FP32 one at this IoU or more.
MATCH_IOU = 0.5


@dataclass(frozen=True)
class DetectionGate:
    """How close a candidate detector must stay to FP32 on the evaluation frames."""

    min_recall: float = 0.95
    min_mean_iou: float = 0.85
    max_extra_per_frame: float = 0.05


def compare_detections(reference: list[list[Detection]], candidate: list[list[Detection]]) -> dict[str, float]:
    """Recall of the reference faces, mean IoU of the matches, extra candidate boxes per frame."""
    total = matched = extra = 0
    ious: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        used: set[int] = set()
        for r in ref:
            total += 1
            best = max(((iou(r.box, c.box), i) for i, c in enumerate(cand) if i not in used), default=(0.0, -1))
            if best[0] >= MATCH_IOU:
                matched += 1
                used.add(best[1])
                ious.append(best[0])
        extra += len(cand) - len(used)
    return {"faces": float(total), "recall": matched / total if total else 1.0,
            "mean_iou": float(np.mean(ious)) if ious else (1.0 if total == 0 else 0.0),
            "extra_per_frame": extra / max(1, len(reference))}


def _reasons(metrics: dict[str, float], gate: DetectionGate) -> list[str]:
    out = []
    if metrics["recall"] < gate.min_recall:
        out.append(f"recall {metrics['recall']:.3f} < {gate.min_recall}")
    if metrics["mean_iou"] < gate.min_mean_iou:
        out.append(f"mean IoU {metrics['mean_iou']:.3f} < {gate.min_mean_iou}")
    if metrics["extra_per_frame"] > gate.max_extra_per_frame:
        out.append(f"{metrics['extra_per_frame']:.3f} extra boxes per frame > {gate.max_extra_per_frame}")
    return out


def _detect_all(path: Path, bundle: Bundle, name: str, frames: list[np.ndarray]) -> list[list[Detection]]:
    detector = build_detector(FaceDetectorOptions(kind=name, model_path=path, track=False, min_size=1), bundle)
    try:
        return [detector.detect(frame) for frame in frames]
    finally:
        detector.close()


def _latency_ms(path: Path, precision: str, feed: dict[str, np.ndarray], iterations: int) -> float:
    ref = ModelRef(path.stem, precision, {precision: ModelFile(path, sha256_file(path))})
    with create_backend(ref, LATENCY_OPTIONS) as backend:
        return round(measure_latency(backend, feed, iterations=iterations)["p50_ms"], 4)


def _at_least_opset_13(path: Path) -> Path:
    """``path`` converted in place to opset 13 when older: per-channel Q/DQ (the ``axis`` attribute) needs 13.

    tflite2onnx writes opset 11; the conversion only renames attributes, the arithmetic is unchanged.
    """
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        onnx.save(version_converter.convert_version(model, 13), str(path))
        log.info("%s: opset %d -> 13 for per-channel INT8", path.name, opset)
    return path


def export_detector(cfg: ExportConfig, bundle: Bundle, name: str, out: Path, work: Path
                    ) -> tuple[DetectorSpec, dict[str, Any]]:
    """FP16/INT8 candidates of detector ``name``, gated against FP32 on ``cfg.detector_eval``'s frames."""
    spec = bundle.detector(name)
    if cfg.detector_eval is None:
        raise ExportError(f"detector {name!r} has no evaluation video; give --detector-eval VIDEO")
    if "int8" in cfg.precisions and cfg.detector_calib is None:
        raise ExportError(f"detector {name!r} has no calibration video for int8; give --detector-calib VIDEO "
                          "(edge-mer never calibrates on random data)")
    if cfg.detector_calib is not None and cfg.detector_calib.resolve() == cfg.detector_eval.resolve():
        raise ExportError(f"detector {name!r}: --detector-calib and --detector-eval are the same video "
                          f"{cfg.detector_eval}; the gate must not score on the frames the scales were fitted to")
    fp32 = bundle.path(spec.models["fp32"])
    layout = "NCHW" if spec.inputs[0].shape[1] == 3 else "NHWC"
    evaluation = read_frames(cfg.detector_eval, cfg.detector_every, cfg.detector_frames)
    feeds_eval = detector_feeds(evaluation[:1], spec.inputs[0].name, spec.decoding, layout)
    prepared = _at_least_opset_13(prepare_model(fp32, work / f"detector.{name}.prepared.onnx"))
    # The stem stays float in INT8: it loses too many faces quantized (see stem_convs).
    stem = stem_convs(onnx.load(str(prepared)))
    files: dict[str, Path] = {}
    for precision in cfg.precisions:
        target = candidate_path(out, spec, precision)  # type: ignore[arg-type]  # same fields as an encoder's
        if precision == "fp16":
            files["fp16"] = make_fp16(prepared, target)
        else:
            calib = read_frames(cfg.detector_calib, cfg.detector_every, cfg.detector_calib_frames)
            feeds = detector_feeds(calib, spec.inputs[0].name, spec.decoding, layout)
            files["int8"] = make_int8(prepared, target, lambda: FeedsReader(feeds), method=cfg.method,
                                      cache_dir=cfg.cache_dir, keep_float=stem)
            check_qdq(files["int8"])
    reference = _detect_all(fp32, bundle, name, evaluation)
    reports = {"fp32": PrecisionReport(True, None, _latency_ms(fp32, "fp32", feeds_eval[0], cfg.latency_iterations))}
    results: dict[str, Any] = {"eval": {"source": str(cfg.detector_eval), "frames": len(evaluation)},
                               "calibration": {"source": str(cfg.detector_calib), "float_layers": stem}, "precisions": {}}
    gate = DetectionGate(cfg.min_detection_recall, cfg.min_detection_iou)
    for precision, path in files.items():
        metrics = compare_detections(reference, _detect_all(path, bundle, name, evaluation))
        reasons = _reasons(metrics, gate)
        latency = _latency_ms(path, precision, feeds_eval[0], cfg.latency_iterations)
        reports[precision] = PrecisionReport(not reasons, "; ".join(reasons) or None, latency,
                                             {k: round(v, 4) for k, v in metrics.items()})
        results["precisions"][precision] = {"passed": not reasons, "reasons": reasons, "metrics": metrics,
                                            "p50_ms": latency}
        log.info("detector %s %s: %s (recall %.3f, mean IoU %.3f; p50 %.3f ms vs fp32 %.3f ms)", name, precision,
                 "passed" if not reasons else "FAILED: " + "; ".join(reasons), metrics["recall"],
                 metrics["mean_iou"], latency, reports["fp32"].cpu_latency_ms)
        if reasons:
            path.unlink()
    results["fp32_p50_ms"] = reports["fp32"].cpu_latency_ms
    results["thresholds"] = dataclasses.asdict(gate)
    updated = with_precisions(out, spec, files, reports)  # type: ignore[arg-type]
    return updated, results  # type: ignore[return-value]


def detector_markdown(name: str, det: dict[str, Any]) -> list[str]:
    """The export report's section for one detector (``det`` as :func:`export_detector` returns it)."""
    def cell(text: object) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"## Detector {cell(name)}", "", f"{det['eval']['frames']} frames of {cell(det['eval']['source'])}; "
             f"FP32 p50 {det['fp32_p50_ms']} ms.", "",
             "| precision | result | recall | mean IoU | extra/frame | p50 ms |", "|---|---|---|---|---|---|"]
    for precision, r in det["precisions"].items():
        m = r["metrics"]
        lines.append(f"| {precision} | {'pass' if r['passed'] else cell('; '.join(r['reasons']))} | "
                     f"{m['recall']:.3f} | {m['mean_iou']:.3f} | {m['extra_per_frame']:.3f} | {r['p50_ms']} |")
    float_layers = det.get("calibration", {}).get("float_layers") or []
    if float_layers:
        lines += ["", f"INT8 keeps {len(float_layers)} stem layers in float: {cell(', '.join(float_layers))}."]
    return lines + [""]
