"""The export report: JSON round trip, Markdown table and links, valid PNG plots."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from edge_mer.errors import ConfigError
from edge_mer_export.gate import GateThresholds, gate
from edge_mer_export.report import (EncoderResult, ExportReport, PrecisionOutcome, host_info, report_json,
                                    write_report)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELS = ("angry", "happy", "sad")


def _probs(pred: np.ndarray, k: int, p: float) -> np.ndarray:
    out = np.full((len(pred), k), (1.0 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def build_report() -> ExportReport:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=60)
    ref = _probs(np.where(np.arange(60) < 6, (labels + 1) % 3, labels), 3, 0.8)
    fp16 = np.clip(ref + rng.normal(0, 1e-3, ref.shape), 0, 1)
    int8 = _probs(np.zeros(60, dtype=np.int64), 3, 0.9)
    thresholds = GateThresholds(max_kl=0.05)
    latency = {"p50_ms": 1.25, "p90_ms": 1.5, "mean_ms": 1.3, "min_ms": 1.0, "max_ms": 2.0,
               "warmup": 10.0, "iterations": 50.0}
    face = EncoderResult(
        name="face", modality="face", labels=LABELS, n_eval=60, n_calib=32, calib_source="CK+48 | calib split",
        eval_source="CK+48 held out", precisions={
            "int8": PrecisionOutcome(gate(ref, int8, labels, 3, thresholds, class_names=LABELS), latency, ref, int8),
            "fp16": PrecisionOutcome(gate(ref, fp16, labels, 3, thresholds, class_names=LABELS), latency, ref, fp16),
            "fp32": PrecisionOutcome(latency=latency),
        })
    eeg = EncoderResult(name="eeg", modality="eeg", labels=LABELS, n_eval=0, n_calib=None, calib_source="",
                        eval_source="none", precisions={"int8": PrecisionOutcome(skipped_reason="no calibration data")},
                        implicit_cache="skipped: TensorRT is not installed")
    host = {"platform": "test-host", "python": "3.11"}
    return ExportReport(encoders=(face, eeg), thresholds=thresholds, host=host, created="2025-01-01T00:00:00+00:00")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_report(tmp_path_factory.mktemp("report"), build_report())


def test_json_round_trip(written: tuple[Path, Path]) -> None:
    json_path, _ = written
    assert json_path.name == "export_report.json"
    data = json.loads(json_path.read_text())
    assert set(data) == {"format", "created", "host", "thresholds", "encoders", "detectors"} and data["detectors"] == {}
    assert data["thresholds"] == {"max_accuracy_drop": 1.0, "min_agreement": 0.97, "max_kl": 0.05,
                                  "max_abs_diff": None, "min_ccc": None}
    assert data["host"]["platform"] == "test-host"
    face = data["encoders"]["face"]
    assert face["datasets"] == {"eval": {"source": "CK+48 held out", "n": 60},
                                "calibration": {"source": "CK+48 | calib split", "n": 32}}
    assert list(face["precisions"]) == ["fp32", "fp16", "int8"]
    fp32, fp16, int8 = (face["precisions"][p] for p in ("fp32", "fp16", "int8"))
    assert fp32["status"] == "reference" and fp32["metrics"]["accuracy"] == pytest.approx(0.9)
    assert fp16["status"] == "pass" and fp16["passed"] is True and fp16["reasons"] == []
    assert int8["passed"] is False and int8["reasons"][0].startswith("accuracy drop")
    assert {"agreement", "kl", "accuracy_drop_pt", "macro_f1", "recall_sad"} <= set(int8["metrics"])
    assert int8["latency"]["p50_ms"] == 1.25
    assert sum(map(sum, int8["confusion"])) == 60 and all(row[1:] == [0, 0] for row in int8["confusion"])
    assert int8["plots"] == {"confusion": "plots/face_int8_confusion.png", "scatter": "plots/face_int8_scatter.png"}
    skipped = data["encoders"]["eeg"]["precisions"]
    assert list(skipped) == ["int8"]
    assert skipped["int8"] == {"status": "skipped", "passed": False, "reasons": ["no calibration data"],
                               "metrics": {}, "latency": None, "confusion": [], "plots": {}}
    assert "probs" not in json_path.read_text()  # arrays stay out of the JSON


def test_markdown_table_and_links(written: tuple[Path, Path]) -> None:
    _, md_path = written
    text = md_path.read_text()
    assert "| encoder | precision | accuracy | drop (pt) | agreement | KL | p50 latency (ms) | result |" in text
    assert re.search(r"^\| face \| fp16 \| 90\.0% \| 0\.0 \| 100\.0% \| [^|]+ \| 1\.25 \| pass \|$", text, re.M)
    assert re.search(r"^\| face \| int8 \| .* \| \*\*FAIL\*\* \|$", text, re.M)
    assert "| eeg | int8 | – | – | – | – | – | skipped: no calibration data |" in text
    assert "CK+48 \\| calib split" in text  # pipes in free text are escaped
    assert "- TensorRT implicit-INT8 calibration cache: skipped: TensorRT is not installed" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "plots/face_int8_confusion.png" in links and "plots/face_fp16_scatter.png" in links
    assert "plots/face_fp32_confusion.png" in links and "plots/face_fp32_scatter.png" not in links
    for link in links:
        assert not Path(link).is_absolute() and (md_path.parent / link).is_file()


def test_plots_are_valid_pngs(written: tuple[Path, Path]) -> None:
    plots = sorted((written[0].parent / "plots").iterdir())
    assert [p.name for p in plots] == ["face_fp16_confusion.png", "face_fp16_scatter.png", "face_fp32_confusion.png",
                                       "face_int8_confusion.png", "face_int8_scatter.png"]
    for path in plots:
        head = path.read_bytes()[:24]
        assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
        width, height = struct.unpack(">II", head[16:24])
        assert width > 200 and height > 200


def test_output_is_deterministic(written: tuple[Path, Path], tmp_path: Path) -> None:
    again = write_report(tmp_path, build_report())
    for first, second in zip(written, again):
        assert first.read_bytes() == second.read_bytes()
    for png in (written[0].parent / "plots").iterdir():
        assert png.read_bytes() == (tmp_path / "plots" / png.name).read_bytes()


def test_non_finite_values_become_null() -> None:
    report = build_report()
    face = report.encoders[0]
    odd = EncoderResult(face.name, face.modality, face.labels, face.n_eval, face.n_calib, face.calib_source,
                        face.eval_source, {"fp32": PrecisionOutcome(latency={"p50_ms": float("nan")})})
    data = report_json(ExportReport((odd,), report.thresholds, {}, report.created), {})
    assert data["encoders"]["face"]["precisions"]["fp32"]["latency"] == {"p50_ms": None}
    json.dumps(data, allow_nan=False)


def test_reference_row_from_fp32_latency_and_default_created() -> None:
    report = build_report()
    face = report.encoders[0]
    gated = {p: o for p, o in face.precisions.items() if p != "fp32"}
    enc = EncoderResult(face.name, face.modality, list(face.labels), face.n_eval, face.n_calib, face.calib_source,
                        face.eval_source, gated, fp32_latency={"p50_ms": 2.5})
    fresh = ExportReport([enc], report.thresholds, {"engines": "skipped", "cache": {"face": "x"}})
    data = report_json(fresh, {})
    fp32 = data["encoders"]["face"]["precisions"]["fp32"]
    assert fp32["status"] == "reference" and fp32["latency"] == {"p50_ms": 2.5}
    assert fp32["metrics"]["accuracy"] == pytest.approx(0.9)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", fresh.created)
    assert data["encoders"]["face"]["implicit_int8_cache"] is None


def test_validation() -> None:
    report = build_report()
    gated = report.encoders[0].precisions["fp16"].gate
    with pytest.raises(ConfigError, match="either gated or skipped"):
        PrecisionOutcome(gate=gated, skipped_reason="x")
    with pytest.raises(ConfigError, match="together"):
        PrecisionOutcome(reference_probs=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="differ in shape"):
        PrecisionOutcome(reference_probs=np.zeros((2, 3)), candidate_probs=np.zeros((3, 3)))
    with pytest.raises(ConfigError, match="unique"):
        ExportReport(report.encoders[:1] * 2, report.thresholds, {}, report.created)
    assert {"platform", "python", "numpy", "onnxruntime"} <= set(host_info())
