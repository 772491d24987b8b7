"""Per-modality and fused accuracy of `edge-mer run --replay --fast` on sessions of people no model saw.

Each session (:func:`edge_mer_calibration.sessions.build_session`) puts CK+48
faces (a dataset the face model never saw), one speaker of the speech folds
2-3 (EMO-DB, RAVDESS or TESS) and one GU subject of 7 8 10 11 side by side,
label by label; the bundle is the default one with the speech and EEG
encoders swapped for the fold models that never heard that speaker or saw
that subject (training/results/*_folds), so every modality is held out, and
the fusion head and the temperatures were fitted on other people (folds
0-1, subjects 1 2 3 6, FER2013 PublicTest). EEG has no model above chance,
so every session has one modality at chance.

    python training/replay_eval.py [--rules learned,learned:attention,reliability,monte_carlo] [--out /tmp/edge-mer-replay]
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
FOLDS = ROOT / "training" / "results"
ENGLISH = ("angry", "disgust", "fear", "happy", "sad", "surprise")
EMODB = ("angry", "disgust", "fear", "happy", "sad")  # EMO-DB has no surprise, CK+48 no boredom
#: (speaker, its speech fold, GU subject, face offset): speakers of folds 2-3 only.
SESSIONS = (("12", 2, "sub7", 0), ("14", 3, "sub8", 1), ("ravdess_05", 2, "sub10", 2),
            ("ravdess_08", 3, "sub11", 3), ("ravdess_14", 2, "sub7", 4), ("ravdess_23", 3, "sub8", 5),
            ("tess_YAF", 2, "sub10", 6))
SECONDS, SKIP_S, RATE_HZ = 10.0, 4.0, 2.0


def run_session(shared: Path, out: Path, spec: tuple[str, int, str, int], rules: list[str]) -> dict:
    speaker, fold, subject, offset = spec
    labels = EMODB if speaker.isdigit() else ENGLISH
    session = build_session(shared, out / "session", labels=labels + labels[::-1], seconds=SECONDS,
                            speaker=speaker, subject=subject, face_offset=offset)
    bundle = heldout_bundle(default_bundle_path(), out / "bundle", {
        "speech": FOLDS / "speech_folds" / f"fold_{fold}.onnx",
        "eeg": FOLDS / "eeg_folds" / "eeg" / f"{subject}.onnx"})
    segments = json.loads((session / "session.json").read_text())["labels"]
    report: dict = {"speaker": speaker, "subject": subject, "labels": list(labels), "rules": {}}
    for rule in rules:
        # ``learned:attention`` is the learned rule running the shipped head ``attention``.
        name, _, head = rule.partition(":")
        path = out / f"decisions_{rule.replace(':', '_')}.jsonl"
        subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(session), "--fast",
                        "--bundle", str(bundle), "--rate-hz", str(RATE_HZ), "--fusion-rule", name,
                        *(["--fusion-head", head] if head else []), "--jsonl", str(path)],
                       check=True, stdout=subprocess.DEVNULL)
        scores = score_decisions([json.loads(line) for line in path.read_text().splitlines()], segments, SKIP_S)
        report["rules"][rule] = scores["fused_accuracy"]
        report["modalities"] = {m: s["accuracy"] for m, s in scores["modalities"].items()}
        report["decisions"] = scores["decisions"]
    report["best_single"] = max(v for v in report["modalities"].values() if v is not None)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--rules", default="learned,reliability,weighted_mean")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-replay"))
    parser.add_argument("--report", type=Path, default=FOLDS / "replay_eval.json")
    args = parser.parse_args()
    rules = args.rules.split(",")
    if args.out.exists():
        shutil.rmtree(args.out)
    reports = []
    for spec in SESSIONS:
        reports.append(run_session(args.shared, args.out / spec[0], spec, rules))
        r = reports[-1]
        print(f"{r['speaker']:>11} {r['subject']:>5}: " + " ".join(f"{m} {v:.3f}" for m, v in r["modalities"].items())
              + " | " + " ".join(f"{k} {v:.3f}" for k, v in r["rules"].items()), flush=True)
    summary = {rule: {"mean_fused": sum(r["rules"][rule] for r in reports) / len(reports),
                      "mean_best_single": sum(r["best_single"] for r in reports) / len(reports),
                      "sessions_at_or_above_best_single": sum(r["rules"][rule] >= r["best_single"] for r in reports)}
               for rule in rules}
    args.report.write_text(json.dumps({"sessions": reports, "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
