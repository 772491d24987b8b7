"""edge_mer.bench.report: the terminal tables and the Markdown summary of an ``edge-mer bench`` result.

The result is a real one: ``run_bench`` on the default bundle (encoder sweep at fp32/fp16/int8, the face path
with the ``--compare`` variants) with short settings; the pipeline sections, which need a real-time replay of
several seconds, are built with the exact keys ``bench_pipeline`` returns and real ``summarize`` outputs.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import pytest

from edge_mer.bench.latency import summarize
from edge_mer.bench.report import HEADERS, render_markdown, render_text
from edge_mer.bench.run import BenchConfig, run_bench

STAGES = ("decode.face", "face.detect", "face.crop", "speech.logmel", "eeg.features", "encoder.eeg",
          "encoder.face", "encoder.speech", "fusion")
VARIANTS = ("edge-mer", "no tracking", "full frame, no tracking")


def _pipeline(seed: int, power: dict[str, Any], *, align: bool, detector: str) -> dict[str, Any]:
    """A pipeline section with bench_pipeline's keys, from real summaries of plausible samples."""
    rng = np.random.default_rng(seed)
    stages = {name: summarize(rng.lognormal(0.0, 0.5, 30 + i)) for i, name in enumerate(STAGES)}
    stages["custom.stage"] = summarize(rng.lognormal(0.0, 0.5, 5))  # unknown stages are listed too
    return {
        "session": "/data/sessions/demo", "rate_hz": 10.0, "align_ticks": align, "face_detector": detector,
        "eeg_hop_s": 0.5, "numpy_threads": 1, "ort_intra_op_threads": 1,
        "streams": {"face": {"rate": 30.0}, "speech": {"rate": 16000.0}, "eeg": {"rate": 250.0}},
        "decisions": 45, "warmup_decisions_skipped": 10, "wall_s": 4.51,
        "decision_latency_ms": summarize(rng.lognormal(1.0, 0.4, 45)), "tick_ms": summarize(rng.lognormal(0.8, 0.4, 45)),
        "stages_ms": stages, "cpu_percent": 12.5, "peak_rss_mb": 210.3,
        "valid_share": {"face": 1.0, "speech": 0.6, "eeg": 0.5}, "power": power,
    }


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    out = run_bench(BenchConfig(pipeline=False, fusion=False, compare=True, iterations=10, warmup=1, batch=2,
                                precisions=("fp32", "fp16", "int8"), face_frames=8))
    out["pipeline"] = _pipeline(0, {"source": None, "reason": "tegrastats not found; no RAPL"}, align=True,
                                detector="haar, detect_width 320, tracking on")
    out["pipeline_before"] = _pipeline(1, {"source": "rapl", "package_power_mean_w": 3.5}, align=False,
                                       detector="haar, detect_width full, tracking off")
    real = {name: dict(per) for name, per in out["encoders"].items()}
    # The default bundle ships every precision, so the bench skips nothing: one skip is written in
    # (as a bundle whose int8 failed its gate gives it) to test how the reports show it.
    out["encoders"]["eeg_cyton"]["int8"] = {"skipped": "int8 failed its export gate"}
    out["real_encoders"] = real
    return out


def _runs(lines: list[str], keep) -> list[list[str]]:
    """Maximal runs of consecutive lines for which ``keep(line)`` holds."""
    runs, current = [], []
    for line in lines:
        if keep(line):
            current.append(line)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def _md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of stripped cells (header and separator included)."""
    tables = _runs(text.splitlines(), lambda line: line.startswith("|"))
    for table in tables:
        for line in table:
            assert line.endswith("|"), line
    return [[[c.strip() for c in line[1:-1].split("|")] for line in table] for table in tables]


def _text_tables(text: str) -> list[list[str]]:
    """Every terminal table: the runs of lines indented by two spaces."""
    return _runs(text.splitlines(), lambda line: line.startswith("  "))


def test_the_real_result_has_what_the_report_shows(result: dict[str, Any]) -> None:
    assert set(result["real_encoders"]) == {"eeg", "eeg_cyton", "face", "speech"}
    for per_precision in result["real_encoders"].values():  # every encoder ships fp16 and int8
        for precision in ("fp32", "fp16", "int8"):
            assert per_precision[precision]["batch"] == 1 and per_precision[precision]["larger"]["batch"] == 2
    assert set(result["encoders_default_threads"]) == set(result["encoders"])
    assert tuple(result["face_path"]["variants"]) == VARIANTS


def test_text_has_every_stage_encoder_row_skip_and_face_variant(result: dict[str, Any]) -> None:
    text = render_text(result)
    host = result["host"]
    assert text.splitlines()[0] == (f"edge-mer bench: {host['cpu_model']}, {host['cores_available']} cores, "
                                    f"backend onnxruntime, bundle edge-mer-default")
    lines = text.splitlines()
    for stage in STAGES + ("custom.stage",):
        assert sum(1 for line in lines if line.split() and line.split()[0] == stage) == 2  # both pipelines
    assert sum("tick (one decision's compute)" in line for line in lines) == 2
    assert sum("decision (newest sample to output)" in line for line in lines) == 2
    for name, per_precision in result["encoders"].items():
        for precision, r in per_precision.items():
            row = [line for line in lines if line.split()[:2] == [name, precision]]
            assert row, (name, precision)
            if "skipped" in r:
                assert f"skipped: {r['skipped']}" in row[0]
            else:
                assert f"{r['p50_ms']:.2f}" in row[0] and f"{r['p99_ms']:.2f}" in row[0]
    for label in VARIANTS:
        assert any(line.strip().startswith(label + " ") for line in lines), label
    assert "Pipeline: /data/sessions/demo (face 30/s, speech 16000/s, eeg 250/s) in real time, 10 decisions/s; " \
           "align_ticks True" in text
    assert "Pipeline before the optimisations: /data/sessions/demo" in text
    assert "Encoders with ONNX Runtime's default thread count" in text
    assert "Encoders, 1 ONNX Runtime thread(s)" in text
    assert f"Face path on CPU {result['face_path']['cpu']}: " in text and "8 frames, face fp32" in text


def test_text_tables_are_aligned(result: dict[str, Any]) -> None:
    tables = _text_tables(render_text(result))
    assert len(tables) == 5  # pipeline, pipeline before, encoders, encoders default threads, face path
    headers = [t[0].split() for t in tables]
    assert headers[0][0] == "stage" and headers[2][:2] == ["encoder", "precision"] and headers[4][:2] == ["face",
                                                                                                         "path"]
    for table in tables:
        widths = {len(line) for line in table}
        assert len(widths) == 1, table


def test_pipeline_lines_show_cpu_memory_decisions_and_power(result: dict[str, Any]) -> None:
    text = render_text(result)
    assert "CPU 12.5% of one core, peak RSS 210.3 MB" in text
    assert "power n/a (tegrastats not found; no RAPL)" in text
    assert "power package 3.5 W (RAPL)" in text
    assert "45 decisions in 4.51 s" in text
    jetson = copy.deepcopy(result)
    jetson["pipeline"]["power"] = {"source": "tegrastats", "available": True, "reason": None, "samples": 4,
                                   "power_mean_w": 6.2, "power_max_w": 7.0}
    assert "power 6.20 W mean (tegrastats)" in render_text(jetson)


def test_markdown_tables_are_well_formed(result: dict[str, Any]) -> None:
    md = render_markdown(result)
    assert md.startswith("# edge-mer bench\n") and md.endswith("\n")
    tables = _md_tables(md)
    assert len(tables) == 5
    expected_headers = [HEADERS["stages"], HEADERS["stages"], HEADERS["encoders"], HEADERS["encoders"],
                        HEADERS["face"]]
    for table, header in zip(tables, expected_headers):
        assert table[0] == header
        assert table[1] == ["---"] * len(header)
        assert len(table) > 2
        for row in table[2:]:
            assert len(row) == len(header), row


def test_markdown_has_every_stage_encoder_row_skip_and_face_variant(result: dict[str, Any]) -> None:
    md = render_markdown(result)
    host = result["host"]
    assert f"Host: {host['cpu_model']}, {host['cores_available']} cores ({host['machine']}, {host['system']})" in md
    for name, version in host["packages"].items():
        assert f"{name} {version}" in md
    tables = _md_tables(md)
    stage_rows = {row[0]: row for row in tables[0][2:]}
    for stage in STAGES + ("custom.stage",):
        s = result["pipeline"]["stages_ms"][stage]
        assert stage_rows[stage] == [stage, f"{s['p50']:.2f}", f"{s['p99']:.2f}", str(s["n"])]
    d = result["pipeline"]["decision_latency_ms"]
    assert stage_rows["decision (newest sample to output)"] == ["decision (newest sample to output)", f"{d['p50']:.2f}", f"{d['p99']:.2f}",
                                                 str(d["n"])]
    assert "tick (one decision's compute)" in stage_rows
    # Pipeline order first, then the encoders, fusion, and anything else.
    order = [row[0] for row in tables[0][2:]]
    assert order[:5] == ["decode.face", "face.detect", "face.crop", "speech.logmel", "eeg.features"]
    assert order[5:9] == ["encoder.eeg", "encoder.face", "encoder.speech", "fusion"]
    assert order[9:] == ["custom.stage", "tick (one decision's compute)", "decision (newest sample to output)"]
    encoder_rows = {(row[0], row[1]): row for row in tables[2][2:]}
    for name, per_precision in result["encoders"].items():
        for precision, r in per_precision.items():
            row = encoder_rows[(name, precision)]
            if "skipped" in r:
                assert row[2] == f"skipped: {r['skipped']}" and row[3:] == [""] * 7
            else:
                big = r["larger"]
                assert row[2:] == [f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['p99_ms']:.2f}",
                                   f"{r['max_ms']:.2f}", f"{r['throughput_per_s']:.0f}", "2",
                                   f"{big['p50_ms']:.2f}", f"{big['throughput_per_s']:.0f}"]
    assert {(row[0], row[1]) for row in tables[3][2:]} == {(n, "fp32") for n in result["encoders"]}
    face_rows = {row[0]: row for row in tables[4][2:]}
    assert tuple(face_rows) == VARIANTS
    for label, v in result["face_path"]["variants"].items():
        assert face_rows[label] == [label, f"{v['fps']:.0f}", f"{100 * v['found_ratio']:.1f}%",
                                    f"{v['frame_ms']['p50']:.2f}", f"{v['frame_ms']['p99']:.2f}",
                                    str(v["full_detections"])]


def test_partial_results_and_empty_samples(result: dict[str, Any]) -> None:
    only_encoders = {k: result[k] for k in ("host", "bundle", "config", "encoders")}
    md = render_markdown(only_encoders)
    assert len(_md_tables(md)) == 1 and "Pipeline" not in md and "Face path" not in md
    assert len(_text_tables(render_text(only_encoders))) == 1
    # No larger batch (--batch 1) and a pipeline whose decisions all fell in the warm-up.
    sparse = copy.deepcopy(result)
    for per_precision in sparse["encoders"].values():
        per_precision["fp32"].pop("larger")
    p = sparse["pipeline"]
    p["decision_latency_ms"] = summarize([])
    p["tick_ms"] = summarize([])
    p["stages_ms"]["fusion"] = summarize([])
    tables = _md_tables(render_markdown(sparse))
    rows = {row[0]: row for row in tables[0][2:]}
    assert rows["decision (newest sample to output)"] == ["decision (newest sample to output)", "-", "-", "0"]
    assert rows["fusion"] == ["fusion", "-", "-", "0"]
    face_fp32 = next(row for row in tables[2][2:] if row[:2] == ["face", "fp32"])
    assert face_fp32[7:] == ["-", "-", "-"]
    for table in tables:
        assert all(len(row) == len(table[0]) for row in table)
    assert "decision (newest sample to output)" in render_text(sparse)


def test_markdown_numbers_are_plain(result: dict[str, Any]) -> None:
    md = render_markdown(result)
    for table in _md_tables(md):
        for row in table[2:]:
            for cell in row[2:]:
                assert cell == "" or cell == "-" or cell.startswith("skipped: ") or \
                    re.fullmatch(r"\d+(\.\d+)?%?", cell), cell
