"""Tests for benchmarks/device_check.{sh,py}: the skip line without TensorRT, the output comparison, the
ONNX Runtime self-test over every shipped model (all of the input-making code, for real), the bench step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_mer.backends.registry import backend_class
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.feeds import bundle_refs

ROOT = Path(__file__).resolve().parents[3]
# benchmarks/ is a folder of scripts, not a package (as in test_flops.py).
sys.path.insert(0, str(ROOT / "benchmarks"))
import device_check
from device_check import (
    agreement_low,
    bench_summary,
    compare_outputs,
    problems,
    summary_line,
)

TRT_USABLE = backend_class("tensorrt").availability() is None


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT, check=False)


def _row(**fields: Any) -> dict[str, Any]:
    row = {"model": "face", "precision": "int8", "agreement": 0.95, "ort_agreement": 0.95, "rows": 20,
           "min_agreement": 0.9, "slack": 0.05, "max_abs_diff": {"probs": 0.01}, "class_outputs": ["probs"]}
    return {**row, **fields}


@pytest.mark.skipif(TRT_USABLE, reason="TensorRT and a GPU are usable here: the check runs instead of skipping")
def test_shell_skips_in_one_line_without_tensorrt() -> None:
    done = _script()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and done.stdout.endswith("\n")
    assert lines[0].startswith("device check: skipped: TensorRT is not usable here: ")


def test_compare_outputs_counts_top1_rows_and_max_abs_diff() -> None:
    ref = [{"probs": np.array([[0.7, 0.2, 0.1]], np.float32), "boxes": np.zeros((1, 4), np.float32)},
           {"probs": np.array([[0.1, 0.3, 0.6], [0.5, 0.4, 0.1]], np.float32), "boxes": np.ones((1, 4), np.float32)}]
    got = [{"probs": np.array([[0.6, 0.3, 0.1]], np.float32), "boxes": np.full((1, 4), 0.25, np.float32)},
           {"probs": np.array([[0.1, 0.6, 0.3], [0.5, 0.4, 0.1]], np.float32), "boxes": np.ones((1, 4), np.float32)}]
    cmp = compare_outputs(ref, got, ["probs"])
    assert cmp.rows == 3  # one row, then a batch of two
    assert cmp.agreement == pytest.approx(2 / 3)  # the second sample's first row moved its top-1
    assert cmp.max_abs_diff["probs"] == pytest.approx(0.3, abs=1e-6)
    assert cmp.max_abs_diff["boxes"] == pytest.approx(0.25)
    same = compare_outputs(ref, ref, ["probs"])
    assert same.agreement == 1.0 and same.max_abs_diff == {"boxes": 0.0, "probs": 0.0}
    assert compare_outputs(ref, got).agreement is None  # no class output, no top-1


def test_compare_outputs_keeps_nan_and_refuses_mismatches() -> None:
    ref = [{"y": np.array([[1.0, 2.0]])}, {"y": np.array([[1.0, 2.0]])}]
    nan = compare_outputs(ref, [{"y": np.array([[np.nan, 2.0]])}, {"y": np.array([[1.0, 5.0]])}], ["y"])
    assert np.isnan(nan.max_abs_diff["y"])  # a later finite difference does not hide it
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(ref[:1], [{"y": np.ones((1, 3))}])
    with pytest.raises(ValueError, match="differ"):
        compare_outputs(ref[:1], [{"z": np.ones((1, 2))}])
    with pytest.raises(ValueError, match="2 reference samples"):
        compare_outputs(ref, ref[:1])


def test_agreement_gate_and_summary() -> None:
    assert not agreement_low(_row())
    assert not agreement_low(_row(agreement=0.85, ort_agreement=0.875))  # under 0.9, as ORT's own run of the file
    assert agreement_low(_row(agreement=0.80, ort_agreement=0.95))
    assert not agreement_low(_row(agreement=None, ort_agreement=None, class_outputs=[]))
    rows = [_row(), _row(model="speech", agreement=0.5, max_abs_diff={"probs": 0.4}),
            _row(model="detector.blazeface", precision="fp16", agreement=None, class_outputs=[],
                 max_abs_diff={"regressors": float("nan")}),
            {"model": "eeg", "precision": "int8", "error": "BackendError: cannot parse"}]
    found = problems(rows, {"error": "timed out after 30 s"})
    assert found == ["speech/int8 top-1 50.0% < 90.0% (ORT's own 95.0%)",
                     "detector.blazeface/fp16: outputs not finite", "eeg/int8: BackendError: cannot parse",
                     "bench: timed out after 30 s"]
    line = summary_line(rows, {"error": "timed out after 30 s"}, "tensorrt", 12.3)
    assert line.startswith("device check: 3 of 4 engines built, top-1 agreement min 50.0% (speech/int8; ORT int8 "
                           "95.0%), max abs diff max 0.4 (speech/int8 probs), other outputs nan "
                           "(detector.blazeface/fp16 regressors)")
    assert "; 12 s; FAILED (4): speech/int8 top-1" in line and "\n" not in line


def test_bench_summary() -> None:
    bench = {"encoders": {"face": {"fp32": {"p50_ms": 0.5}, "fp16": {"p50_ms": 0.25}, "int8": {"skipped": "gate"}}},
             "pipeline": {"decision_latency_ms": {"p50": 3.14159}}, "face_path": {"fps": 240.4}}
    assert bench_summary(bench) == ("encoder p50 ms (fp32/fp16/int8) face 0.50/0.25/-; decision p50 3.14 ms; "
                                    "face path 240 fps")


def test_onnxruntime_self_check_runs_every_shipped_model(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = _script("--backend", "onnxruntime", "--no-bench", "--samples", "12", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    refs = list(bundle_refs(load_bundle(default_bundle_path()), RunConfig()))
    assert len(lines) == 1 and lines[0].startswith(f"device check: {len(refs)} of {len(refs)} onnxruntime sessions "
                                                   "built, top-1 agreement min ")
    rows = json.loads(out.read_text())["models"]
    assert [(r["model"], r["precision"]) for r in rows] == [(r.name, r.precision) for r in refs]
    for row in rows:
        assert "error" not in row, row
        assert row["agreement_same"] in (None, 1.0) and row["ort_agreement"] == row["agreement"]
        if row["precision"] == "fp32":
            assert set(row["max_abs_diff"].values()) == {0.0}
        if row["model"] != "detector.blazeface":  # every other model has a class output
            assert row["rows"] == 12 and 0.0 <= row["agreement"] <= 1.0
    by_model = {r["model"]: r for r in rows}
    assert by_model["face"]["session_inputs"] == 12 and by_model["speech"]["session_inputs"] == 12
    assert by_model["detector.blazeface"]["session_inputs"] == 12 and by_model["eeg"]["session_inputs"] == 0


def test_bench_step_parses_edge_mer_bench(tmp_path: Path) -> None:
    args = device_check.parse_args(["--backend", "onnxruntime", "--bench-iterations", "10", "--bench-duration", "2"])
    bench = device_check.run_bench(args, None, timeout_s=120)
    assert "error" not in bench, bench
    text = bench_summary(bench)
    assert text.startswith("encoder p50 ms (fp32/fp16/int8) ") and "; decision p50 " in text and " fps" in text


@pytest.mark.trt
def test_tensorrt_check_passes_on_this_gpu() -> None:
    done = _script("--no-bench", "--samples", "8", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert len(done.stdout.splitlines()) == 1 and " engines built, top-1 agreement min " in done.stdout
