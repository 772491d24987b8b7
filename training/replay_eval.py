"""Per-modality and fused accuracy of `edge-mer run --replay --fast` on a labelled session from ../shared.

The session (happy, sad, fear; 8 s each) uses CK+48 faces, one EMO-DB speaker
and one GU subject. The bundle is the default one with the speech and EEG
encoders swapped for their leave-one-out fold models that never saw that
speaker or subject (training/results/*_folds), so every modality is held out.

    python training/replay_eval.py [--speaker 08] [--subject sub1] [--out /tmp/edge-mer-replay]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from edge_mer.bundle import default_bundle_path
from edge_mer_calibration.sessions import build_session, heldout_bundle, score_decisions

ROOT = Path(__file__).resolve().parents[1]


def evaluate(shared: Path, out: Path, speaker: str, subject: str, rate_hz: float = 2.0) -> dict:
    if out.exists():
        shutil.rmtree(out)
    session = build_session(shared, out / "session", speaker=speaker, subject=subject)
    folds = ROOT / "training" / "results"
    bundle = heldout_bundle(default_bundle_path(), out / "bundle", {
        "speech": folds / "speech_folds" / f"speaker_{speaker}.onnx",
        "eeg": folds / "eeg_folds" / "eeg" / f"{subject}.onnx"})
    decisions_path = out / "decisions.jsonl"
    subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(session), "--fast",
                    "--bundle", str(bundle), "--rate-hz", str(rate_hz), "--jsonl", str(decisions_path)],
                   check=True)
    decisions = [json.loads(line) for line in decisions_path.read_text().splitlines()]
    labels = json.loads((session / "session.json").read_text())["labels"]
    return score_decisions(decisions, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--speaker", default="08")
    parser.add_argument("--subject", default="sub1")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-replay"))
    args = parser.parse_args()
    print(json.dumps(evaluate(args.shared, args.out, args.speaker, args.subject), indent=2))


if __name__ == "__main__":
    main()
