"""FP16 and INT8 of every model in the default bundle, through `edge-mer export` and its gate.

Calibration and gate data never share a person:

- face: calibrates on 512 FER2013 train images (256, the default, gave 96.9% agreement), gated on CK+48 (927 images of the 6 shared classes);
- speech: calibrates on EMO-DB speakers 08-11, gated on speakers 12-15;
- eeg and eeg_cyton: calibrate on GU subjects 1 2 3 6, gated on subjects 7 8 10 11;
- the BlazeFace detector: calibrates on the frames of a make_face_video.py video (seed 7, 60 faces)
  and is gated on another (seed 0, 140 faces); its stem stays float in INT8, a choice made on a
  third video (seed 3) before the gate ran (training/README.md);
- the fusion heads (every shipped one): calibrate on split-A pairings, gated on split-B pairings
  (``fusion_attention.py`` writes one file of every head's inputs); the multi-label head's
  ``label_sets`` there are each row's own label (:func:`with_label_sets`): a fidelity gate against
  FP32; its figures on compound label sets come from ``fusion_compound.py``.

The gate compares each precision with FP32 on the same inputs (held-out accuracy is the training
recipes'). The passing files and the manifest of the exported bundle replace the default bundle's;
the export report goes to ``training/results/export_default/``.

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


#: (name, faces, seed) of the detector videos: calibration and gate.
VIDEOS = (("calib", 60, 7), ("eval", 140, 0))


def _video(folder: Path, name: str, faces: int, seed: int, shared: Path) -> Path:
    """benchmarks/make_face_video.py's video, made once (about a minute each)."""
    path = folder / f"{name}.mp4"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_face_video.py"), "--shared", str(shared),
                        "--out", str(path), "--faces", str(faces), "--seed", str(seed)], check=True)
    return path


def with_label_sets(source: Path, target: Path, bundle: Path) -> Path:
    """``source`` head data plus ``label_sets``: each row's label, one-hot over the multi-label head's labels."""
    import numpy as np

    from edge_mer.bundle import load_bundle

    heads = load_bundle(bundle).manifest.fusion.named_heads().values()
    outputs = [o for head in heads for o in head.outputs if o.kind == "multilabel"]
    with np.load(source, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    if outputs:
        labels = outputs[0].labels
        arrays["label_sets"] = np.array([[float(label == name) for name in labels] for label in arrays["labels"]],
                                        dtype=np.float32)
    np.savez_compressed(target, **arrays)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--head-data", type=Path, default=Path("/tmp/edge-mer-head-data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-default-export"))
    parser.add_argument("--videos", type=Path, default=Path("/tmp/edge-mer-detector-videos"))
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle to export and update in place")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    data = args.shared / "data"
    emodb, gu = data / "speech" / "emodb", data / "eeg" / "gu"
    videos = {name: _video(args.videos, name, faces, seed, args.shared) for name, faces, seed in VIDEOS}
    head_calib = with_label_sets(args.head_data / "head_calib.npz", args.head_data / "head_calib_sets.npz", args.bundle)
    head_eval = with_label_sets(args.head_data / "head_eval.npz", args.head_data / "head_eval_sets.npz", args.bundle)
    eeg = []
    for name in ("eeg", "eeg_cyton"):
        eeg += ["--calib", f"{name}={gu}", "--calib-groups", f"{name}=sub1,sub2,sub3,sub6",
                "--eval", f"{name}={gu}", "--eval-groups", f"{name}=sub7,sub8,sub10,sub11"]
    subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "export", str(args.bundle), "--out", str(args.out),
                    "--calib", f"face={data / 'face' / 'fer2013' / 'train'}", "--eval", f"face={data / 'face' / 'ckplus48'}",
                    "--calib", f"speech={emodb}", "--calib-groups", "speech=08,09,10,11",
                    "--eval", f"speech={emodb}", "--eval-groups", "speech=12,13,14,15", *eeg,
                    "--detector-calib", str(videos["calib"]), "--detector-eval", str(videos["eval"]),
                    "--calib-size", "512", "--head-calib", str(head_calib), "--head-eval", str(head_eval)],
                   check=True)
    for folder in ("face", "speech", "eeg", "fusion"):
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
