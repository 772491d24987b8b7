"""``edge-mer bench`` for real: the packaged demo session replayed in real time, the default bundle's encoders and
the face path, as a subprocess, with settings small enough to finish in seconds.

The replay lasts 5.5 s (not less): the EEG encoder needs a full 4 s window, and with ``hop_s`` 0.5 its features
are first computed at about 4.4 s of replay, so a shorter replay would have no ``eeg.features`` stage at all.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.precision import resolve_precision
from edge_mer.pipeline.session_run import demo_session_path

#: The detector a default run uses on ONNX Runtime: its fastest passed precision in the shipped bundle.
DETECTOR = "blazeface ({}) on onnxruntime".format(resolve_precision(
    "blazeface", load_bundle(default_bundle_path()).detector("blazeface"), "auto", "onnxruntime"))

STAGES = ("decode.face", "face.detect", "face.crop", "speech.logmel", "eeg.features", "encoder.face",
          "encoder.speech", "fusion")


def _bench(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "bench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def _strict_json(text: str) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"the JSON holds {constant}")

    return json.loads(text, parse_constant=refuse)


def _check_summary(s: dict[str, Any], where: str) -> None:
    assert s["n"] >= 1, where
    assert 0 <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"], (where, s)
    assert all(math.isfinite(s[k]) for k in ("p50", "p95", "p99", "max", "mean")), where


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    folder = tmp_path_factory.mktemp("bench")
    out, md = folder / "bench.json", folder / "bench.md"
    result = _bench("--iterations", "20", "--warmup", "2", "--batch", "4", "--duration", "5.5", "--warmup-s",
                    "0.5", "--face-frames", "60", "--json", str(out), "--markdown", str(md), cwd=folder)
    assert result.returncode == 0, result.stderr
    return result, out, md


@pytest.fixture(scope="module")
def report(full_run) -> dict[str, Any]:
    return _strict_json(full_run[1].read_text(encoding="utf-8"))


def test_json_has_the_required_keys(report: dict[str, Any]) -> None:
    assert {"host", "bundle", "config", "encoders", "pipeline", "face_path", "fusion_rules",
            "fusion_heads"} <= set(report)
    host = report["host"]
    assert host["backend"] == "onnxruntime" and host["cores_available"] >= 1 and host["cpu_model"]
    assert host["packages"]["onnxruntime"] and host["packages"]["numpy"]
    assert report["bundle"] == "edge-mer-default"
    assert report["pipeline"]["gpu_memory"] == {"available": False, "reason": "no GPU backend in use (onnxruntime)"}
    assert report["config"]["iterations"] == 20 and report["config"]["duration_s"] == 5.5


def test_encoders_every_modality_at_fp32(report: dict[str, Any]) -> None:
    encoders = report["encoders"]
    assert {"face", "speech", "eeg"} <= set(encoders)
    for name, per_precision in encoders.items():
        # the default bundle ships fp16 and int8 of every encoder (training/export_default.py)
        assert list(per_precision) == ["fp32", "fp16", "int8"], name
        assert all("p50_ms" in per_precision[p] for p in ("fp16", "int8"))
        r = per_precision["fp32"]
        assert r["batch"] == 1 and r["iterations"] == 20 and r["backend"] == "onnxruntime"
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"], (name, r)
        assert r["throughput_per_s"] > 0
        big = r["larger"]
        assert big["batch"] == 4 and big["iterations"] == 5  # a quarter of the iterations
        assert 0 < big["p50_ms"] <= big["p99_ms"] <= big["max_ms"]


def test_pipeline_section(report: dict[str, Any]) -> None:
    p = report["pipeline"]
    assert p["session"] == str(demo_session_path()) and p["rate_hz"] == 10.0 and p["align_ticks"] is True
    assert p["face_detector"] == "blazeface, tracking on, max_faces 4, align on"
    assert p["decisions"] > 0 and p["warmup_decisions_skipped"] >= 0
    assert p["wall_s"] > 0
    _check_summary(p["decision_latency_ms"], "decision")
    _check_summary(p["tick_ms"], "tick")
    # One end-to-end latency per decision (give or take the one decision that may straddle the warm-up's end).
    assert 0 < p["decision_latency_ms"]["n"] <= p["decisions"] + 1  # decisions with valid evidence only
    stages = p["stages_ms"]
    for stage in STAGES:
        assert stage in stages, f"no {stage} stage (have {sorted(stages)})"
    for stage, s in stages.items():
        _check_summary(s, stage)
    assert "decision" not in stages and "tick" not in stages  # reported on their own
    # Each processed frame is detected, cropped and encoded once; at 15 fps only every other frame is processed.
    assert stages["face.detect"]["n"] <= stages["decode.face"]["n"]
    assert abs(stages["face.crop"]["n"] - stages["face.detect"]["n"]) <= 1
    assert abs(stages["encoder.face"]["n"] - stages["face.detect"]["n"]) <= 1
    assert p["cpu_percent"] > 0
    assert p["peak_rss_mb"] > 50
    assert set(p["valid_share"]) == {"face", "speech", "eeg"}
    assert p["valid_share"]["face"] > 0 and p["valid_share"]["eeg"] > 0
    assert p["power"]["source"] is None and p["power"]["reason"]  # no tegrastats or RAPL here: says why


def test_face_path_section(report: dict[str, Any]) -> None:
    f = report["face_path"]
    assert f["found_ratio"] == 1.0  # every demo frame shows the face
    assert f["fps"] > 0 and f["frames"] == 60
    assert f["video"] == str(Path(demo_session_path()) / "video.mp4")
    assert list(f["variants"]) == ["edge-mer"]
    v = f["variants"]["edge-mer"]
    assert v["fps"] == f["fps"] and v["found_ratio"] == 1.0
    _check_summary(v["frame_ms"], "face path")
    assert v["frame_ms"]["n"] == 60
    assert v["detector"] == {"kind": "blazeface", "detect_width": 320, "track": True, "redetect_every": 30,
                             "model": DETECTOR}
    assert f["detector"]["kind"] == "blazeface"  # face_path.detector.kind: the default detector, shipped
    # Between whole-frame detections the face is found by the detector near its last box or, between
    # detector runs (detect_every), by template matching.
    assert 1 <= v["full_detections"] < 60 and v["template_matches"] > 0
    assert v["region_searches"] + v["template_matches"] >= 60 - v["full_detections"]


def test_terminal_tables_and_markdown_file(full_run, report: dict[str, Any]) -> None:
    result, _, md = full_run
    text = result.stdout
    assert text.startswith("edge-mer bench: ")
    lines = [line.split() for line in text.splitlines()]
    assert ["stage", "p50", "ms", "p99", "ms", "n"] in lines
    assert any(line[:2] == ["encoder", "precision"] for line in lines)
    assert any(line[:3] == ["face", "path", "fps"] for line in lines)
    for stage in STAGES:
        assert any(line and line[0] == stage for line in lines), stage
    for name in report["encoders"]:
        assert any(line[:2] == [name, "fp32"] for line in lines), name
    assert any(line and line[0] == "edge-mer" and line[2] == "100.0%" for line in lines)
    assert "Traceback" not in result.stderr
    markdown = md.read_text(encoding="utf-8")
    assert markdown.startswith("# edge-mer bench")
    assert "| stage | p50 ms | p99 ms | n |" in markdown
    assert "| edge-mer |" in markdown and "| face | fp32 |" in markdown
    assert "| monte_carlo |" in markdown and "| stacked | fp32 |" in markdown


def test_json_to_stdout_and_int8_of_every_encoder(tmp_path: Path) -> None:
    result = _bench("--precisions", "int8", "--no-pipeline", "--no-face-path", "--iterations", "10", "--json", "-",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = _strict_json(result.stdout)  # stdout is the JSON alone
    assert "pipeline" not in report and "face_path" not in report
    assert set(report["encoders"]) >= {"face", "speech", "eeg"}
    for name, per_precision in report["encoders"].items():  # the default bundle ships int8 of every encoder
        assert list(per_precision) == ["int8"] and per_precision["int8"]["p50_ms"] > 0, name


@pytest.mark.parametrize("args, message", [
    (["--precisions", "fp8"], "precisions: 'fp8' is not one of fp32, fp16, int8"),
    (["--iterations", "3"], "iterations must be >= 10 (percentiles need samples), got 3"),
    (["--face-video", "/nonexistent.mp4", "--no-pipeline", "--no-encoders"],
     "face_video /nonexistent.mp4 does not exist; expected a video file"),
    (["--session", "/nonexistent"], "session directory /nonexistent does not exist"),
    (["--no-encoders", "--no-pipeline", "--no-face-path", "--no-fusion"], "nothing to measure"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    result = _bench(*args, "--json", str(out), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge-mer: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == "" and not out.exists()


def test_compare_adds_the_before_pipeline_and_face_path_variants(tmp_path: Path) -> None:
    result = _bench("--compare", "--no-encoders", "--duration", "3", "--face-frames", "30", "--warmup-s", "0.5",
                    "--json", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = _strict_json(result.stdout)
    assert "encoders" not in report and "encoders_default_threads" not in report
    after, before = report["pipeline"], report["pipeline_before"]
    assert after["align_ticks"] is True and before["align_ticks"] is False
    assert after["face_detector"] == "blazeface, tracking on, max_faces 4, align on"
    assert before["face_detector"] == "blazeface, tracking off, max_faces 4, align on"
    for p in (after, before):
        assert p["decisions"] > 0
        _check_summary(p["decision_latency_ms"], "decision")
        for stage in ("decode.face", "face.detect", "face.crop", "encoder.face", "fusion"):
            _check_summary(p["stages_ms"][stage], stage)
    variants = report["face_path"]["variants"]
    assert list(variants) == ["edge-mer", "no tracking", "full frame, no tracking"]
    assert variants["edge-mer"]["detector"] == {"kind": "blazeface", "detect_width": 320, "track": True,
                                                "redetect_every": 30, "model": DETECTOR}
    assert variants["no tracking"]["detector"]["track"] is False
    assert variants["full frame, no tracking"]["detector"] == {"kind": "blazeface", "detect_width": 0, "track": False,
                                                               "redetect_every": 30,
                                                               "model": DETECTOR}
    for label, v in variants.items():
        assert v["found_ratio"] == 1.0, label
        assert v["frame_ms"]["n"] == 30
    # Without tracking every frame is a full-frame detection; with it, most are region searches.
    assert variants["no tracking"]["full_detections"] == 30 and variants["no tracking"]["region_searches"] == 0
    assert variants["full frame, no tracking"]["full_detections"] == 30
    tracked = variants["edge-mer"]
    assert tracked["full_detections"] < 30 and tracked["region_searches"] + tracked["template_matches"] >= 20
    assert report["face_path"]["fps"] == variants["edge-mer"]["fps"]
