"""Export FP16 and TensorRT-ready INT8 encoders, gated on held-out data, into a new bundle with a report.

Each flag sets one field of edge_mer_export.config.ExportConfig (shown as [field]).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_mer.errors import ConfigError
from edge_mer_export.config import ExportConfig

log = logging.getLogger(__name__)


def _table(values: list[str] | None, flag: str, convert, form: str) -> dict:
    table: dict = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        key, target = (name, rest) if sep else ("*", value)
        if not target or not key:
            raise ConfigError(f"{flag} {value!r}: expected {form} or ENCODER={form}")
        if key in table:
            raise ConfigError(f"{flag} names {key!r} twice")
        table[key] = convert(target)
    return table


def _groups(text: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in text.split(",") if g.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a bundle directory, or an ONNX encoder with --entry [source]")
    parser.add_argument("--out", type=Path, required=True, help="new bundle directory to write [out]")
    parser.add_argument("--calib", action="append", metavar="[ENCODER=]PATH",
                        help="calibration data: image folder, FER CSV, video, WAV folder, session, GU .mat folder, "
                             "BrainFlow file; repeat per encoder [calib]")
    parser.add_argument("--eval", action="append", metavar="[ENCODER=]PATH",
                        help="labelled evaluation data for the gate, disjoint from the calibration data [eval]")
    parser.add_argument("--calib-groups", action="append", metavar="[ENCODER=]G1,G2",
                        help="use only these speakers/subjects of the calibration data [calib_groups]")
    parser.add_argument("--eval-groups", action="append", metavar="[ENCODER=]G1,G2",
                        help="use only these speakers/subjects of the evaluation data [eval_groups]")
    parser.add_argument("--entry", type=Path, help="manifest entry (JSON) of a bare ONNX source [entry]")
    parser.add_argument("--encoder", action="append", dest="encoders", metavar="NAME",
                        help="export only this encoder; repeatable (default: every encoder with --eval data) "
                             "[encoders]")
    parser.add_argument("--precisions", help="comma-separated: fp16, int8 (default both) [precisions]")
    parser.add_argument("--method", choices=["entropy", "minmax", "percentile"],
                        help="INT8 calibration method (default minmax) [method]")
    parser.add_argument("--calib-size", type=int, help="calibration samples, stratified (default 256) [calib_size]")
    parser.add_argument("--eval-size", type=int, help="evaluation samples, stratified; 0 = all (default) [eval_size]")
    parser.add_argument("--seed", type=int, help="sampling seed (default 0) [seed]")
    parser.add_argument("--max-accuracy-drop", type=float,
                        help="largest accuracy drop vs FP32 that passes, in points (default 1.0) [max_accuracy_drop]")
    parser.add_argument("--min-agreement", type=float,
                        help="smallest top-1 agreement with FP32 that passes (default 0.97) [min_agreement]")
    parser.add_argument("--latency-iterations", type=int, help="timed runs per precision (default 50) "
                                                                "[latency_iterations]")
    parser.add_argument("--engines", action="store_const", const=True, help="also build TensorRT engines (where "
                        "TensorRT exists; normally on the device) [engines]")
    parser.add_argument("--cache-dir", type=Path, help="calibration statistics cache [cache_dir]")
    parser.add_argument("--board", help="BrainFlow board of --calib/--eval BrainFlow files [board]")
    parser.add_argument("--hop-s", type=float, help="EEG window hop in seconds (default 2) [hop_s]")


_PLAIN = ("entry", "method", "calib_size", "eval_size", "seed", "max_accuracy_drop", "min_agreement",
          "latency_iterations", "engines", "cache_dir", "board", "hop_s")


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """The ExportConfig the flags describe; flags not given keep the dataclass defaults."""
    fields = {name: getattr(args, name) for name in _PLAIN if getattr(args, name) is not None}
    if args.precisions is not None:
        precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
        bad = [p for p in precisions if p not in ("fp16", "int8")]
        if bad:
            raise ConfigError(f"--precisions {args.precisions!r}: {bad[0]!r} is not one of fp16, int8")
        fields["precisions"] = precisions
    return ExportConfig(source=args.source, out=args.out, calib=_table(args.calib, "--calib", Path, "PATH"),
                        eval=_table(args.eval, "--eval", Path, "PATH"),
                        calib_groups=_table(args.calib_groups, "--calib-groups", _groups, "G1,G2"),
                        eval_groups=_table(args.eval_groups, "--eval-groups", _groups, "G1,G2"),
                        encoders=tuple(args.encoders or ()), **fields)


def run(args: argparse.Namespace) -> int:
    from edge_mer_export.pipeline import export  # lazy: --help must not need the heavy imports

    result = export(config_from_args(args))
    print(f"bundle written to {result.bundle}; report {result.report_md}")
    if not result.any_passed:
        print("edge-mer: error: no precision passed the accuracy gate; see the report", file=sys.stderr)
        return 1
    return 0
