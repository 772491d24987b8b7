"""`edge-mer export` of encoders with a valence_arousal output: the CCC gate through the real CLI.

Tiny real ONNX encoders (pooled brightness / loudness -> Gemm -> Tanh) in
bundles written by the package's writer; V/A CSVs point at generated PNGs and
WAVs in tmp_path, and, with ../shared, at CK+48 images. The evaluation
targets of the face tests are the FP32 model's own outputs plus noise, so a
candidate that loses the FP32 behaviour also loses CCC against the labels.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_mer.bundle import load_bundle
from edge_mer_calibration.va_csv import read_va_csv
from export_models import face_images, va_bundle, write_va_csv, write_wavs


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


def _targets_near_fp32(bundle_dir: Path, csv: Path, noise: float = 0.1) -> Path:
    """Rewrite ``csv`` with the FP32 model's valence/arousal on each row plus seeded noise, clipped to [-1, 1]."""
    spec = load_bundle(bundle_dir).encoder("face")
    data = read_va_csv(csv, spec)
    session = ort.InferenceSession(str(bundle_dir / "face" / "model.onnx"), providers=["CPUExecutionProvider"])
    va = session.run(["va"], {"input_1": np.stack([s.array for s in data.samples])})[0]
    va = np.clip(va + np.random.default_rng(0).normal(0, noise, va.shape), -1, 1)
    rows = [line.split(",")[0] for line in csv.read_text().splitlines()[1:]]
    csv.write_text("path,valence,arousal\n" + "".join(f"{p},{v:.5f},{a:.5f}\n" for p, (v, a) in zip(rows, va)))
    return csv


@pytest.fixture(scope="module")
def face_va(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("face-va")
    bundle = va_bundle(root / "bundle", "face", with_classes=True)
    face_images(root / "class_eval", 28, seed=1, classes=True)
    va_eval = write_va_csv(root / "va_eval" / "va.csv", face_images(root / "va_eval" / "img", 48, seed=2), seed=3)
    calib = write_va_csv(root / "calib" / "va.csv", face_images(root / "calib" / "img", 32, seed=4), seed=5)
    grey = write_va_csv(root / "grey" / "va.csv", face_images(root / "grey" / "img", 8, seed=6, grey=128), seed=7)
    return {"root": root, "bundle": bundle, "class_eval": root / "class_eval",
            "va_eval": _targets_near_fp32(bundle, va_eval), "calib": calib, "grey": grey}


def _export(data: dict[str, Path], out: str, calib: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    target = data["root"] / out
    result = _cli("export", str(data["bundle"]), "--out", str(target), "--eval", f"face={data['class_eval']}",
                  "--va-eval", f"face={data['va_eval']}", "--calib", f"face={data[calib]}",
                  "--latency-iterations", "3", "--min-agreement", "0.9", "--max-accuracy-drop", "10")
    return target, result


def test_class_and_va_outputs_get_both_gates_and_the_report_shows_ccc(face_va: dict[str, Path]) -> None:
    out, result = _export(face_va, "out", "calib")
    assert result.returncode == 0, result.stderr
    spec = load_bundle(out).encoder("face")
    assert set(spec.models) == {"fp32", "fp16", "int8"}
    for precision in ("fp16", "int8"):
        m = spec.precisions[precision].metrics
        assert spec.precisions[precision].passed and m["n_eval"] == 28 and m["n_va"] == 48
        assert m["agreement"] >= 0.9 and m["ccc_valence_vs_fp32"] > 0.98 and m["ccc_arousal_vs_fp32"] > 0.98
        assert m["ccc_mean_fp32"] > 0.8 and abs(m["ccc_mean_drop"]) < 0.02  # the targets follow fp32
    report = json.loads((out / "report" / "export_report.json").read_text())
    face = report["encoders"]["face"]
    assert face["precisions"]["fp32"]["metrics"]["ccc_valence"] == pytest.approx(spec.precisions["int8"].metrics[
        "ccc_valence_fp32"])
    assert face["datasets"]["eval"]["source"].endswith("va.csv")
    markdown = (out / "report" / "export_report.md").read_text()
    table = markdown.split("## Valence/arousal (CCC)")[1].split("## Thresholds")[0]
    assert "| face | int8 | " in table and "| face | fp32 | – | – | 0.9" in table
    assert "| ccc_valence_vs_fp32 |" in markdown and "at most 0.02 per axis" in markdown


def test_an_int8_calibrated_on_grey_images_fails_the_ccc_gate(face_va: dict[str, Path]) -> None:
    out, result = _export(face_va, "out-grey", "grey")
    assert result.returncode == 0, result.stderr  # fp16 passed
    spec = load_bundle(out).encoder("face")
    assert set(spec.models) == {"fp32", "fp16"} and spec.precisions["fp16"].passed
    reason = spec.precisions["int8"].reason
    assert not spec.precisions["int8"].passed
    assert "valence CCC vs fp32" in reason and "CCC vs labels drops" in reason, reason
    markdown = (out / "report" / "export_report.md").read_text()
    assert "CCC vs labels drops" in markdown and "| face | int8 |" in markdown


def test_a_va_only_speech_encoder_exports_with_va_eval_alone(tmp_path: Path) -> None:
    bundle = va_bundle(tmp_path / "bundle", "speech", with_classes=False)
    va_eval = write_va_csv(tmp_path / "eval" / "va.csv", write_wavs(tmp_path / "eval" / "w", 16, seed=1), seed=2)
    # Calibration covers the evaluation's loudness range and a little more, as calibration data should.
    calib = write_va_csv(tmp_path / "calib" / "va.csv",
                         write_wavs(tmp_path / "calib" / "w", 12, seed=3, levels_db=(-36.0, -3.0)), seed=4)
    out = tmp_path / "out"
    result = _cli("export", str(bundle), "--out", str(out), "--va-eval", f"speech={va_eval}",
                  "--calib", f"speech={calib}", "--latency-iterations", "3")
    assert result.returncode == 0, result.stderr
    spec = load_bundle(out).encoder("speech")
    assert set(spec.models) == {"fp32", "fp16", "int8"}
    metrics = spec.precisions["int8"].metrics
    assert metrics["n_eval"] == metrics["n_va"] == 16 and "agreement" not in metrics
    assert {"ccc_valence_vs_fp32", "ccc_mean", "ccc_arousal_drop"} <= set(metrics)
    missing = _cli("export", str(bundle), "--out", str(tmp_path / "o2"), "--encoder", "speech",
                   "--calib", f"speech={calib}")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "edge-mer: error: encoder 'speech' has only a valence_arousal output; give --va-eval speech=CSV "
        "(rows path,valence,arousal)"]


@pytest.mark.shared
def test_ckplus_images_with_affect_coordinates(tmp_path: Path, shared_dir: Path) -> None:
    """A V/A CSV over copies of real CK+48 images, each at its emotion's valence/arousal."""
    affect = load_bundle(va_bundle(tmp_path / "bundle", "face", with_classes=False)).manifest.affect.valence_arousal
    folders = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "sadness": "sad",
               "surprise": "surprise"}
    splits: dict[str, list[tuple[Path, str]]] = {"eval": [], "calib": []}
    for folder, label in folders.items():
        images = sorted((shared_dir / "data" / "face" / "ckplus48" / folder).glob("*.png"))
        for split, chosen in (("eval", images[:12]), ("calib", images[-6:])):
            for image in chosen:
                copy = tmp_path / split / folder / image.name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, copy)
                splits[split].append((copy, label))
    for split, rows in splits.items():
        lines = [f"{p.relative_to(tmp_path / split).as_posix()},{affect[label][0]},{affect[label][1]}"
                 for p, label in rows]
        (tmp_path / split / "va.csv").write_text("path,valence,arousal\n" + "\n".join(lines) + "\n")
    result = _cli("export", str(tmp_path / "bundle"), "--out", str(tmp_path / "out"), "--latency-iterations", "3",
                  "--va-eval", f"face={tmp_path / 'eval' / 'va.csv'}",
                  "--calib", f"face={tmp_path / 'calib' / 'va.csv'}")
    assert result.returncode == 0, result.stderr
    metrics = load_bundle(tmp_path / "out").encoder("face").precisions["int8"].metrics
    assert metrics["n_va"] == 72 and metrics["ccc_valence_vs_fp32"] > 0.98
    assert -1.0 <= metrics["ccc_valence_fp32"] <= 1.0 and "ccc_mean_drop" in metrics
