"""`edge-mer export` of a learned fusion head: real tiny ONNX head, real ORT sessions, the real CLI and daemon.

The head (face 7 + speech 7 probabilities + mask -> MLP -> softmax over 8
labels) is added to a copy of the default bundle; its evaluation and
calibration ``.npz`` files come from one seeded process with different seeds.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mer.backends.options import BackendOptions
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.fusion.learned import LearnedHead, LearnedOptions
from edge_mer.names import ReasonCode
from edge_mer.results import ModalityResult
from edge_mer.sessions import demo_session_path
from edge_mer_export.qdq_lint import check_qdq
from export_models import (FACE_LABELS, HEAD_LABELS, SPEECH_LABELS, face_images, head_bundle, head_rows,
                           write_head_npz, write_wavs)


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def head_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("head")
    return {"bundle": head_bundle(root / "bundle"),
            "eval": write_head_npz(root / "eval.npz", head_rows(300, seed=1)),
            "calib": write_head_npz(root / "calib.npz", head_rows(200, seed=2)),
            "root": root}


@pytest.fixture(scope="module")
def head_only(head_data: dict[str, Path]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = head_data["root"] / "out"
    result = _cli("export", str(head_data["bundle"]), "--out", str(out), "--head-eval", str(head_data["eval"]),
                  "--head-calib", str(head_data["calib"]), "--latency-iterations", "5")
    return out, result


def test_head_fp16_and_int8_pass_the_default_gate_and_are_recorded(head_only) -> None:
    out, result = head_only
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(out)  # hashes and ONNX signatures of the new head files verified
    head = bundle.manifest.fusion.head
    assert set(head.models) == {"fp32", "fp16", "int8"}
    assert (out / "fusion" / "head.fp16.onnx").is_file() and (out / "fusion" / "head.int8.onnx").is_file()
    for precision in ("fp16", "int8"):
        report = head.precisions[precision]
        assert report.passed and report.cpu_latency_ms > 0 and report.metrics["n_eval"] == 300
        assert report.metrics["agreement"] >= 0.97 and report.metrics["accuracy_drop_pt"] <= 1.0
    assert head.precisions["fp32"].passed
    check_qdq(bundle.path(head.models["int8"]))
    source = load_bundle(default_bundle_path()).manifest.encoders  # no encoder selected: each keeps its files
    assert all(set(e.models) == set(source[n].models) for n, e in bundle.manifest.encoders.items())


def test_the_report_has_a_fusion_head_section(head_only) -> None:
    out, _ = head_only
    report = json.loads((out / "report" / "export_report.json").read_text())
    assert report["encoders"] == {} and report["thresholds"]["max_ccc_drop"] == 0.02
    section = report["fusion_head"]
    assert section["modality"] == "fusion" and section["labels"] == list(HEAD_LABELS)
    assert section["datasets"]["eval"]["n"] == 300 and section["datasets"]["calibration"]["n"] == 200
    assert [section["precisions"][p]["status"] for p in ("fp32", "fp16", "int8")] == ["reference", "pass", "pass"]
    markdown = (out / "report" / "export_report.md").read_text()
    assert "| fusion_head | int8 |" in markdown and "## fusion_head (fusion)" in markdown


def test_the_exported_int8_head_fuses_like_fp32(head_only) -> None:
    out, _ = head_only
    bundle = load_bundle(out)
    face = dict(zip(FACE_LABELS, np.full(7, 0.02)))
    face["happy"] = 0.88
    results = [ModalityResult(modality="face", encoder="face", valid=True, probs=face),
               ModalityResult(modality="speech", encoder="speech", valid=False, reason="silence",
                              code=ReasonCode.SILENCE)]
    fused = {}
    for precision in ("fp32", "int8"):
        # The modality check off: a lone face would otherwise be passed through without the head.
        with LearnedHead(bundle, precision=precision, backend_options=BackendOptions(name="onnxruntime"),
                         options=LearnedOptions(min_confidence=0.0, single_passthrough=False, min_skill=0.0)) as rule:
            assert rule.precision == precision
            fused[precision] = rule.fuse(results, {"face": 1.0, "speech": 1.0})
    assert max(fused["int8"], key=fused["int8"].get) == max(fused["fp32"], key=fused["fp32"].get) == "happy"
    assert max(abs(fused["int8"][k] - fused["fp32"][k]) for k in HEAD_LABELS) < 0.05


def test_a_head_calibrated_on_tiny_probabilities_fails_its_int8_gate(head_data: dict[str, Path]) -> None:
    rows = head_rows(100, seed=3)
    for name in ("face", "speech"):  # all mass on no label: ranges far below the evaluation data's
        present = rows["mask"][:, [0 if name == "face" else 1]] > 0
        rows[name] = np.where(present, np.full(rows[name].shape, 0.01), 0.0).astype(np.float32)
    calib = write_head_npz(head_data["root"] / "tiny.npz", rows)
    out = head_data["root"] / "out-broken"
    result = _cli("export", str(head_data["bundle"]), "--out", str(out), "--head-eval", str(head_data["eval"]),
                  "--head-calib", str(calib), "--latency-iterations", "3")
    assert result.returncode == 0, result.stderr  # fp16 passed
    head = load_bundle(out).manifest.fusion.head
    assert set(head.models) == {"fp32", "fp16"} and not (out / "fusion" / "head.int8.onnx").exists()
    assert not head.precisions["int8"].passed and "top-1 agreement" in head.precisions["int8"].reason


@pytest.fixture(scope="module")
def full_export(head_data: dict[str, Path]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Encoders and head in one run, encoders on generated data (their gate is not under test here)."""
    root = head_data["root"]
    face_images(root / "face_eval", 21, seed=11, classes=True)
    face_images(root / "face_calib", 21, seed=12, classes=True)
    for split, seed in (("speech_eval", 13), ("speech_calib", 14)):
        for i, label in enumerate(SPEECH_LABELS):
            write_wavs(root / split / label, 2, seed * 10 + i)
    out = root / "out-full"
    result = _cli("export", str(head_data["bundle"]), "--out", str(out), "--latency-iterations", "3",
                  "--eval", f"face={root / 'face_eval'}", "--calib", f"face={root / 'face_calib'}",
                  "--eval", f"speech={root / 'speech_eval'}", "--calib", f"speech={root / 'speech_calib'}",
                  "--head-eval", str(head_data["eval"]), "--head-calib", str(head_data["calib"]),
                  "--min-agreement", "0", "--max-accuracy-drop", "100")
    return out, result


def test_the_daemon_runs_the_int8_head_with_int8_encoders(full_export) -> None:
    out, result = full_export
    assert result.returncode == 0, result.stderr
    manifest = load_bundle(out).manifest
    assert {"int8", "fp16"} <= set(manifest.fusion.head.models) and "int8" in manifest.encoders["face"].models
    run = _cli("--log-level", "INFO", "run", "--replay", str(demo_session_path()), "--fast", "--bundle", str(out),
               "--fusion-rule", "learned", "--precision", "int8", "--no-eeg", "--rate-hz", "1",
               "--no-head-passthrough", "--head-min-confidence", "0", "--head-min-skill", "0")  # the head every tick
    assert run.returncode == 0, run.stderr[-3000:]
    assert "fusion_head: head.int8.onnx" in run.stderr
    decisions = [json.loads(line) for line in run.stdout.splitlines()]
    fused = [d for d in decisions if d["label"] != "unknown"]
    assert fused and all(set(d["probs"]) == set(HEAD_LABELS) for d in fused)
