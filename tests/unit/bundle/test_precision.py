from __future__ import annotations

import dataclasses

import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.schema import FileEntry, PrecisionReport
from edge_mer.errors import BundleError
from edge_mer.bundle.precision import AUTO_MARGIN, resolve_precision

FAKE = FileEntry("face/x.onnx", "0" * 64)


def _spec(**reports: PrecisionReport):
    spec = load_bundle(default_bundle_path()).encoder("face")
    models = {"fp32": spec.models["fp32"]} | {p: FAKE for p, r in reports.items() if r.passed and p != "fp32"}
    return dataclasses.replace(spec, models=models, precisions=reports)


def test_auto_without_gate_results_is_fp32() -> None:
    spec = _spec()
    assert resolve_precision("face", spec, "auto", "onnxruntime") == "fp32"
    assert resolve_precision("face", spec, "auto", "tensorrt") == "fp32"


def test_the_default_bundle_face_runs_int8_on_tensorrt_and_its_fastest_on_onnxruntime() -> None:
    spec = load_bundle(default_bundle_path()).encoder("face")
    assert resolve_precision("face", spec, "auto", "tensorrt") == "int8"
    latency = {p: r.cpu_latency_ms for p, r in spec.precisions.items()}
    fastest = min(latency, key=latency.get)
    expected = fastest if latency[fastest] <= (1 - AUTO_MARGIN) * latency["fp32"] else "fp32"
    assert resolve_precision("face", spec, "auto", "onnxruntime") == expected


def test_a_lower_precision_must_be_clearly_faster_to_replace_fp32() -> None:
    near = _spec(fp32=PrecisionReport(True, None, 0.62), fp16=PrecisionReport(True, None, 0.57))
    assert resolve_precision("face", near, "auto", "onnxruntime") == "fp32"  # 8% apart: timing noise
    clear = _spec(fp32=PrecisionReport(True, None, 0.62), fp16=PrecisionReport(True, None, 0.50))
    assert resolve_precision("face", clear, "auto", "onnxruntime") == "fp16"


def test_auto_picks_the_fastest_passed_precision_on_onnxruntime() -> None:
    spec = _spec(fp32=PrecisionReport(True, None, 2.0), fp16=PrecisionReport(True, None, 3.5),
                 int8=PrecisionReport(True, None, 1.2))
    assert resolve_precision("face", spec, "auto", "onnxruntime") == "int8"


def test_auto_never_picks_int8_where_it_measured_slower_than_fp32() -> None:
    spec = _spec(fp32=PrecisionReport(True, None, 1.0), fp16=PrecisionReport(True, None, 3.0),
                 int8=PrecisionReport(True, None, 1.4))
    assert resolve_precision("face", spec, "auto", "onnxruntime") == "fp32"


def test_auto_skips_failed_precisions_and_prefers_low_precision_on_tensorrt() -> None:
    spec = _spec(fp32=PrecisionReport(True, None, 2.0), fp16=PrecisionReport(True, None, 3.0),
                 int8=PrecisionReport(False, "top-1 agreement 90.0% < 97.0%", 0.5))
    assert resolve_precision("face", spec, "auto", "onnxruntime") == "fp32"
    assert resolve_precision("face", spec, "auto", "tensorrt") == "fp16"


def test_asking_for_a_failed_or_missing_precision_is_a_clear_error() -> None:
    spec = _spec(fp32=PrecisionReport(True, None, 2.0),
                 int8=PrecisionReport(False, "accuracy drop 2.1 pt > 1.0 pt allowed", 0.5))
    with pytest.raises(BundleError, match=r"encoder 'face': int8 failed its export gate \(accuracy drop 2.1 pt"):
        resolve_precision("face", spec, "int8", "onnxruntime")
    with pytest.raises(BundleError, match="encoder 'face' has no fp16 model in this bundle"):
        resolve_precision("face", spec, "fp16", "onnxruntime")
