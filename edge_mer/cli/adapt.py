"""Adapt the bundle to one user from a labelled session: per-encoder temperatures, a per-user EEG head.

Writes a bundle overlay (run it with ``edge-mer run --bundle OUT``) and
``OUT/adapt_report.json``; prints the cross-validated accuracy and ECE of each
encoder before (as shipped) and after adaptation. Flags map 1:1 onto the
fields of :class:`~edge_mer.adapt.options.AdaptOptions` (shown as [field]).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge_mer.adapt.options import AdaptOptions
from edge_mer.adapt.run import Adaptation, adapt
from edge_mer.cli.flags import Flag, add_flags, config_from_flags

log = logging.getLogger(__name__)

FLAGS: tuple[Flag, ...] = (
    ("--session", "session", Path, "the labelled session directory (edge-mer run --record DIR, or built)"),
    ("--out", "out", Path, "the overlay directory to write: new, empty, or an earlier overlay (replaced)"),
    ("--labels", "labels", Path, "labels file, CSV start_s,end_s,label or JSON (default: session.json's labels)"),
    ("--bundle", "bundle", Path, "the base bundle (default: the bundle shipped in the package)"),
    ("--folds", "folds", int, "cross-validation folds over contiguous label blocks, 2..10 (default 3)"),
    ("--encoder", "encoders", "append", "adapt this encoder (repeatable; default: those a run would use)"),
    ("--step-s", "step_s", float, "spacing of the analysis windows in seconds (default 0.5, a 2 Hz run's)"),
    ("--head-l2", "head_l2", float, "L2 penalty of the per-user EEG head (default 0.1)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FLAGS)


def _table(result: Adaptation) -> list[str]:
    lines = [f"{'encoder':<12} {'method':<12} {'n':>5}  {'accuracy before -> after':<26} {'ECE before -> after':<22}"]
    for name, r in result.results.items():
        extra = f"T={r.temperature:.3g}" if r.temperature is not None else f"labels {','.join(r.head.classes)}"
        lines.append(f"{name:<12} {r.method.replace('_', ' '):<12} {r.before.n:>5}  "
                     f"{r.before.accuracy:>8.3f} -> {r.after.accuracy:<14.3f} "
                     f"{r.before.ece:>6.3f} -> {r.after.ece:<12.3f} {extra}")
    lines += [f"skipped {modality}: {reason}" for modality, reason in result.skipped.items()]
    return lines


def run(args: argparse.Namespace) -> int:
    options = config_from_flags(AdaptOptions, args, FLAGS)
    result = adapt(options)
    for line in _table(result):
        print(line)
    print(f"cross-validated within the session ({options.folds} folds over contiguous label blocks); "
          f"overlay written to {result.bundle.root}; use it with: edge-mer run --bundle {result.bundle.root}")
    return 0
