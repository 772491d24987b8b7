"""Build the session `edge-mer bench` is measured on: all three modalities at real device rates.

48 s of CK+48 faces in 640x480 video at 30 fps, EMO-DB speech (speaker 08)
resampled to 16 kHz, and GU EEG (subject 1) resampled to 250 Hz (a Cyton's
and BrainFlow's synthetic board's rate), labelled happy/sad/fear twice. The
data stay in ../shared; the session is written to --out (not committable).

    python benchmarks/make_bench_session.py [--shared ../shared] [--out /tmp/edge-mer-bench-session]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from edge_mer_calibration.sessions import SessionRates, build_session

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("happy", "sad", "fear", "happy", "sad", "fear")
RATES = SessionRates(fps=30, frame_size=(640, 480), audio_rate=16000, eeg_rate=250)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-bench-session"))
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per labelled segment (at most 15)")
    args = parser.parse_args()
    if not (args.shared / "data").is_dir():
        parser.error(f"--shared {args.shared} has no data/ folder; expected the ../shared checkout")
    if not 1.0 <= args.seconds <= 15.0:
        parser.error(f"--seconds {args.seconds}: expected 1..15 (a GU trial is 15 s)")
    if args.out.exists():
        if not args.out.is_dir() or (any(args.out.iterdir()) and not (args.out / "session.json").is_file()):
            parser.error(f"--out {args.out} exists and is not a session directory; refusing to replace it")
        shutil.rmtree(args.out)
    build_session(args.shared, args.out, LABELS, args.seconds, rates=RATES)
    print(args.out)


if __name__ == "__main__":
    main()
