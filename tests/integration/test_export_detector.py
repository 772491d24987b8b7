"""`edge-mer export --detector-eval`: the shipped BlazeFace quantized and gated on detections, then run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import load_bundle
from edge_mer.pipeline.face_models import build_detector
from edge_mer.preprocess.detection import Detection
from edge_mer.preprocess.face_detect import FaceDetectorOptions
from edge_mer_export.detector import compare_detections

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from make_face_video import build_face_video  # noqa: E402


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


def test_compare_detections_counts_recall_iou_and_extra_boxes() -> None:
    a, b = Detection((0, 0, 100, 100), 0.9), Detection((300, 300, 50, 50), 0.8)
    near = Detection((5, 0, 100, 100), 0.9)
    metrics = compare_detections([[a, b], []], [[near], [Detection((0, 0, 10, 10), 0.6)]])
    assert metrics["faces"] == 2 and metrics["recall"] == 0.5
    assert metrics["mean_iou"] == pytest.approx(95 * 100 / (2 * 100 * 100 - 95 * 100))
    assert metrics["extra_per_frame"] == 0.5


@pytest.mark.shared
def test_fp16_detector_passes_the_detection_gate_and_the_daemon_runs_it(tmp_path: Path, shared_dir: Path) -> None:
    evaluation = build_face_video(shared_dir, tmp_path / "eval.mp4", faces=6, seconds_per_face=1.0, seed=3)
    out = tmp_path / "bundle"
    result = _cli("export", str(default_bundle_path()), "--out", str(out), "--precisions", "fp16",
                  "--detector-eval", str(evaluation), "--detector-every", "3", "--latency-iterations", "5")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report" / "export_report.json").read_text())
    fp16 = report["detectors"]["blazeface"]["precisions"]["fp16"]
    assert fp16["passed"] and fp16["metrics"]["recall"] >= 0.95 and fp16["metrics"]["faces"] > 0
    bundle = load_bundle(out)
    spec = bundle.detector("blazeface")
    assert set(spec.models) == {"fp32", "fp16"} and spec.precisions["fp16"].metrics["mean_iou"] >= 0.85
    detector = build_detector(FaceDetectorOptions(precision="fp16"), bundle)
    try:
        assert "blazeface (fp16)" in detector.network.description
        assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    finally:
        detector.close()
    run = _cli("run", "--bundle", str(out), "--replay", str(Path(default_bundle_path()).parent / "demo_session"),
               "--fast", "--jsonl", "-", "--face-detector-precision", "fp16", "--no-speech", "--no-eeg")
    assert run.returncode == 0, run.stderr
    decisions = [json.loads(line) for line in run.stdout.splitlines()]
    assert decisions and sum(d["modalities"]["face"]["valid"] for d in decisions) >= len(decisions) // 2


def test_int8_without_calibration_video_is_a_one_line_error(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not a video")
    result = _cli("export", str(default_bundle_path()), "--out", str(tmp_path / "o"), "--precisions", "int8",
                  "--detector-eval", str(video))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--detector-calib" in result.stderr
