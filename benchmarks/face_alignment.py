"""Face accuracy with and without eye alignment (and per crop margin) on the project's own face video.

    python benchmarks/face_alignment.py [--video /tmp/edge-mer-faces.mp4] [--every 3] [--margins 0,0.1] [--detector haar]
                                        [--bundle edge_mer/assets/default_bundle] [--json out.json]

The video comes from ``benchmarks/make_face_video.py``: one CK+48 face per
segment, tilted (rolled) by up to 30 degrees, with its class in the sidecar.
Each ``every``-th frame goes through the daemon's face path (BlazeFace from
the bundle, tracking, crop, the bundle's face encoder) with ``align`` on and
off, for each crop margin; a frame counts as correct when the primary face's
top label is the segment's class (CK+ ``anger``/``sadness`` read as
``angry``/``sad``; ``contempt`` segments are left out: FER2013 has no such
class). Reported overall, and for frames tilted by more than 10 degrees
(the roll interpolated over the segment as the video builder draws it).
CK+48 faces are not used to choose anything: they are held-out people.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from make_face_video import sidecar_path  # noqa: E402

from edge_mer.backends.registry import create_backend  # noqa: E402
from edge_mer.bundle import default_bundle_path  # noqa: E402
from edge_mer.bundle.labels import to_canonical  # noqa: E402
from edge_mer.bundle.loader import load_bundle  # noqa: E402
from edge_mer.pipeline.face_models import build_detector  # noqa: E402
from edge_mer.preprocess.face import FacePreprocessor  # noqa: E402
from edge_mer.preprocess.face_detect import FaceDetectorOptions  # noqa: E402

log = logging.getLogger("face_alignment")
CKPLUS_TO_CANONICAL = {"anger": "angry", "sadness": "sad", "disgust": "disgust", "fear": "fear", "happy": "happy",
                       "surprise": "surprise"}
TILTED_DEGREES = 10.0


def frame_truth(sidecar: dict) -> list[tuple[str | None, float]]:
    """Per frame: the canonical class (None for contempt) and the roll in degrees."""
    out: list[tuple[str | None, float]] = []
    for seg in sidecar["segments"]:
        start, end = seg["start_frame"], seg["end_frame"]
        roll0, roll1 = seg["appearance"]["roll_degrees"]
        label = CKPLUS_TO_CANONICAL.get(seg["class"])
        for i in range(end - start):
            out.append((label, roll0 + (roll1 - roll0) * i / max(1, end - start - 1)))
    return out


def evaluate(video: Path, bundle_dir: Path, every: int, margin: float, align: bool, kind: str = "blazeface") -> dict:
    """Accuracy of the face path on ``video`` with one margin and alignment setting."""
    bundle = load_bundle(bundle_dir)
    spec = bundle.encoder("face")
    truth = frame_truth(json.loads(sidecar_path(video).read_text()))
    params = dataclasses.replace(spec.preprocessing, margin=margin)
    detector = build_detector(FaceDetectorOptions(kind=kind), bundle)
    pre = FacePreprocessor(params, detector, align=align)
    counts = {"all": [0, 0], "tilted": [0, 0], "missed": 0}
    with create_backend(bundle.model_ref("face")) as model:
        cap = cv2.VideoCapture(str(video))
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            face = pre.find(frame)  # every frame: the tracker follows the video in time order
            label, roll = truth[index] if index < len(truth) else (None, 0.0)
            if index % every == 0 and label is not None:
                if face is None:
                    counts["missed"] += 1
                else:
                    probs = model.infer({spec.inputs[0].name: pre.prepare([frame], [face])})[spec.class_output.name]
                    canonical = to_canonical(np.asarray(probs[0], np.float64), spec.labels, spec.label_map)
                    hit = int(max(canonical, key=canonical.get) == label)
                    for key in ("all",) + (("tilted",) if abs(roll) > TILTED_DEGREES else ()):
                        counts[key][0] += hit
                        counts[key][1] += 1
            index += 1
        cap.release()
    detector.close()
    return {"detector": kind, "margin": margin, "align": align, "frames_scored": counts["all"][1], "no_face": counts["missed"],
            "accuracy": round(counts["all"][0] / max(1, counts["all"][1]), 4),
            "tilted_frames": counts["tilted"][1],
            "tilted_accuracy": round(counts["tilted"][0] / max(1, counts["tilted"][1]), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=Path("/tmp/edge-mer-faces.mp4"))
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--margins", default="0,0.1")
    parser.add_argument("--detector", default="blazeface", help="face.detector.kind (haar has no eye keypoints)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [evaluate(args.video, args.bundle, args.every, float(m), align, args.detector)
            for m in args.margins.split(",") for align in (False, True)]
    for r in rows:
        log.info("%s margin %.2f align %-5s: accuracy %.3f on %d frames (%d without a face); tilted >%g deg: %.3f on %d",
                 r["detector"], r["margin"], r["align"], r["accuracy"], r["frames_scored"], r["no_face"], TILTED_DEGREES,
                 r["tilted_accuracy"], r["tilted_frames"])
    if args.json:
        args.json.write_text(json.dumps({"video": str(args.video), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
