"""Export FP16 and TensorRT-ready INT8 encoders, gated on held-out data, into a new bundle with a report.

Flags override the TOML file given with --config (its keys are the fields of
edge_mer_export.config.ExportConfig); each flag sets exactly one field (shown
in its help as [field]).
"""
from __future__ import annotations

import argparse
import logging
import sys
import typing

from edge_mer.cli.flags import Flag, Table, add_flags, config_from_flags
from edge_mer.names import QUANTIZED_PRECISIONS
from edge_mer_export.config import ALL_ENCODERS, DEFAULT_METHOD, ExportConfig, Method

log = logging.getLogger(__name__)

_DATA = Table(key="ENCODER", value="PATH", default=ALL_ENCODERS)
_VA_DATA = Table(key="ENCODER", value="CSV", default=ALL_ENCODERS)
_GROUPS = Table(key="ENCODER", value="G1,G2", default=ALL_ENCODERS, lists=True)

FLAGS: tuple[Flag, ...] = (
    ("source", "source", str, "a bundle directory, or an ONNX encoder with --entry (required)"),
    ("--out", "out", str, "new bundle directory to write (required)"),
    ("--calib", "calib", _DATA, "calibration data: image folder, FER CSV, video, WAV folder, session, GU .mat "
                                "folder, BrainFlow file; repeat per encoder"),
    ("--eval", "eval", _DATA, "labelled evaluation data for the gate, disjoint from the calibration data"),
    ("--calib-groups", "calib_groups", _GROUPS, "use only these speakers/subjects of the calibration data"),
    ("--eval-groups", "eval_groups", _GROUPS, "use only these speakers/subjects of the evaluation data"),
    ("--entry", "entry", str, "manifest entry (JSON) of a bare ONNX source"),
    ("--encoder", "encoders", "append", "export only this encoder; repeatable (default: every encoder with "
                                        "--eval data)"),
    ("--precisions", "precisions", "list", f"comma-separated: {', '.join(QUANTIZED_PRECISIONS)} (default all)"),
    ("--method", "method", str, f"INT8 calibration method: {', '.join(typing.get_args(Method))} "
                                f"(default {DEFAULT_METHOD})"),
    ("--calib-size", "calib_size", int, "calibration samples, stratified (default 256)"),
    ("--eval-size", "eval_size", int, "evaluation samples, stratified; 0 = all (default)"),
    ("--seed", "seed", int, "sampling seed (default 0)"),
    ("--max-accuracy-drop", "max_accuracy_drop", float, "largest accuracy drop vs FP32 that passes, in points "
                                                        "(default 1.0)"),
    ("--min-agreement", "min_agreement", float, "smallest top-1 agreement with FP32 that passes (default 0.97)"),
    ("--latency-iterations", "latency_iterations", int, "timed runs per precision (default 50)"),
    ("--engines", "engines", "flag", "also build TensorRT engines (where TensorRT exists; normally on the device)"),
    ("--cache-dir", "cache_dir", str, "calibration statistics cache"),
    ("--board", "board", str, "BrainFlow board of --calib/--eval BrainFlow files"),
    ("--hop-s", "hop_s", float, "EEG window hop in seconds (default 2)"),
    ("--detector-eval", "detector_eval", str, "video whose frames gate the face detector (exports it too)"),
    ("--detector-calib", "detector_calib", str, "another video whose frames calibrate the detector's INT8"),
    ("--detector-every", "detector_every", int, "use every n-th frame of those videos (default 10)"),
    ("--detector-frames", "detector_frames", int, "at most this many evaluation frames (default 300)"),
    ("--detector-calib-frames", "detector_calib_frames", int,
     "at most this many calibration frames for the detector's INT8 (default 256)"),
    ("--min-detection-recall", "min_detection_recall", float, "smallest share of FP32 faces found (default 0.95)"),
    ("--min-detection-iou", "min_detection_iou", float, "smallest mean IoU with FP32 boxes (default 0.85)"),
    ("--va-eval", "va_eval", _VA_DATA, "valence/arousal evaluation data of an encoder with a valence_arousal "
                                       "output: CSV of path,valence,arousal rows"),
    ("--max-ccc-drop", "max_ccc_drop", float, "largest valence/arousal CCC loss vs FP32 and vs the V/A labels "
                                              "that passes, absolute (default 0.02)"),
    ("--head-eval", "head_eval", str, "fusion-head evaluation data (.npz: one array per head input, labels, "
                                      "label_sets for multilabel outputs); exports every shipped fusion head too"),
    ("--head-calib", "head_calib", str, "other fusion-head data (.npz) that calibrates the heads' INT8"),
    ("--max-map-drop", "max_map_drop", float, "largest mAP loss vs fp32 of a multilabel output that passes, "
                                              "absolute (default 0.02)"),
    ("--min-embedding-cosine", "min_embedding_cosine", float, "smallest mean cosine similarity with fp32 of an "
                                                              "embedding output that passes (default 0.98)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FLAGS)


def load_config(args: argparse.Namespace) -> ExportConfig:
    """The TOML file (if any) with the flags applied on top, validated once."""
    return config_from_flags(ExportConfig, args, FLAGS)


def run(args: argparse.Namespace) -> int:
    from edge_mer_export.pipeline import export  # lazy: --help must not need the heavy imports

    result = export(load_config(args))
    print(f"bundle written to {result.bundle}; report {result.report_md}")
    if not result.any_passed:
        print("edge-mer: error: no precision passed the accuracy gate; see the report", file=sys.stderr)
        return 1
    return 0
