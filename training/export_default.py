"""FP16 and INT8 of the default bundle's speech encoder and fusion head, through `edge-mer export` and its gate.

Speech calibrates on EMO-DB speakers 08-11 and is gated on speakers 12-15
(the gate compares each precision with FP32 on the same windows; held-out
accuracy is speech.py's). The head calibrates on split-A pairings and is
gated on split-B pairings (``fusion_head.py --head-data``). The passing files
and the manifest of the exported bundle replace the default bundle's; the
export report goes to ``training/results/export_default/``.

    python training/export_default.py [--shared ../shared]   # after fusion_head.py
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "edge_mer" / "assets" / "default_bundle"
REPORT = ROOT / "training" / "results" / "export_default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--head-data", type=Path, default=Path("/tmp/edge-mer-head-data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-default-export"))
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle to export and update in place")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    emodb = args.shared / "data" / "speech" / "emodb"
    subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "export", str(args.bundle), "--out", str(args.out),
                    "--encoder", "speech", "--calib", f"speech={emodb}", "--calib-groups", "speech=08,09,10,11",
                    "--eval", f"speech={emodb}", "--eval-groups", "speech=12,13,14,15",
                    "--head-calib", str(args.head_data / "head_calib.npz"),
                    "--head-eval", str(args.head_data / "head_eval.npz")], check=True)
    for folder in ("speech", "fusion"):
        for path in sorted((args.out / folder).glob("*.onnx")):
            shutil.copyfile(path, args.bundle / folder / path.name)
    shutil.copyfile(args.out / "manifest.json", args.bundle / "manifest.json")
    if args.bundle == BUNDLE:
        if REPORT.exists():
            shutil.rmtree(REPORT)
        shutil.copytree(args.out / "report", REPORT, ignore=shutil.ignore_patterns("*.png"))
    subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "info", "--bundle", str(args.bundle)], check=True)


if __name__ == "__main__":
    main()
