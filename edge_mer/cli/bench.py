"""Benchmark encoders, fusion, the whole pipeline on a real-time replay and the face path; print tables, write JSON.

Flags override the TOML file given with --config; each flag sets exactly one
field of the benchmark configuration (shown in its help as [field]).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from edge_mer.backends.registry import BACKENDS
from edge_mer.bench.report import render_markdown, render_text
from edge_mer.bench.run import BenchConfig, run_bench
from edge_mer.cli.flags import Flag, add_flags, config_from_flags
from edge_mer.errors import EdgeMerError
from edge_mer.names import AUTO, PRECISIONS
from edge_mer.preprocess.face_detect import DETECTORS

log = logging.getLogger(__name__)

FLAGS: tuple[Flag, ...] = (
    ("--bundle", "bundle", str, "model bundle directory (default: the bundle shipped in the package)"),
    ("--backend", "backend.name", str, f"auto or one of {', '.join(BACKENDS)}"),
    ("--threads", "backend.onnxruntime.intra_op_threads", int, "ONNX Runtime intra-op threads (default 1; 0 = its own choice)"),
    ("--precisions", "precisions", "list", f"encoder sweep: comma-separated {','.join(PRECISIONS)} (default: all passed)"),
    ("--precision", "precision", str, f"pipeline and face path precision: {AUTO} or one of {', '.join(PRECISIONS)}"),
    ("--iterations", "iterations", int, "timed encoder calls at batch 1 (a quarter of them at the larger batch)"),
    ("--warmup", "warmup", int, "untimed encoder calls first"),
    ("--batch", "batch", int, "the larger batch size (default 8)"),
    ("--session", "session", str, "session directory replayed in real time (default: the packaged demo)"),
    ("--duration", "duration_s", float, "seconds of the session to replay (0 = all of it)"),
    ("--rate-hz", "rate_hz", float, "decisions per second (default 10)"),
    ("--warmup-s", "warmup_s", float, "seconds at the start of the replay left out of the statistics"),
    ("--face-video", "face_video", str, "video for the face path (default: the session's video)"),
    ("--face-frames", "face_frames", int, "frames of it to use (0 = all)"),
    ("--face-detector", "face_detector.kind", str, f"one of {', '.join(DETECTORS)}"),
    ("--face-detector-model", "face_detector.model_path", str,
     "detector model file (YuNet or full-range BlazeFace .onnx; replaces the bundle's BlazeFace)"),
    ("--detect-width", "face_detector.detect_width", int, "full-frame detection width (0 = full size)"),
    ("--no-tracking", "face_detector.track", "no", "detect in the whole frame every frame"),
    ("--cpu", "cpu", int, "CPU the face path is pinned to (default: the last allowed one)"),
    ("--compare", "compare", "flag", "also measure the configurations the optimisations replaced"),
    ("--no-encoders", "encoders", "no", "skip the encoder sweep"),
    ("--no-pipeline", "pipeline", "no", "skip the pipeline replay"),
    ("--no-face-path", "face_path", "no", "skip the face path"),
    ("--no-fusion", "fusion", "no", "skip the fusion rules and heads"),
    ("--json", "json", str, "write the results as JSON to this file (- for stdout)"),
    ("--markdown", "markdown", str, "write a Markdown summary to this file"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FLAGS)


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise EdgeMerError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _check_writable(path: str) -> None:
    """Fail before measuring, not after, when an output file cannot be written."""
    if path == "-":
        return
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise EdgeMerError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if not existed:
        os.remove(path)  # a failed run must not leave an empty result behind


def run(args: argparse.Namespace) -> int:
    config = config_from_flags(BenchConfig, args, FLAGS)
    for path in (config.json, config.markdown):
        if path is not None:
            _check_writable(str(path))
    result = run_bench(config)
    as_json = json.dumps(result, indent=2) + "\n"
    if config.json is not None and str(config.json) == "-":
        sys.stdout.write(as_json)
    else:
        print(render_text(result), flush=True)
        if config.json is not None:
            _write(str(config.json), as_json)
    if config.markdown is not None:
        _write(str(config.markdown), render_markdown(result))
    return 0
