"""Face-tracker settings against a face video's true boxes: found, on the true face, cost per frame.

    python benchmarks/face_tracking_sweep.py --video /tmp/edge-mer-faces-val.mp4 \\
        --variant detect_every=1 --variant detect_every=3 --variant tile_every=0 [--json out.json]

The video comes from ``make_face_video.py`` (its sidecar holds every frame's true face box; the
validation video of the closing notes is ``--faces 20 --seed 7``). Each ``--variant`` sets
``FaceDetectorOptions`` fields (``key=value,key=value``; none: the defaults) on BlazeFace from the
default bundle; the tracker follows the primary face through every frame, in order. Per variant:
``found`` (frames with a face), ``truth_hit`` (frames whose face overlaps the true box with IoU >=
0.3), ``ms_per_frame`` (tracker only, one thread, decoding excluded), and the counts of whole-frame
detections, region searches and template matches. It also reports the box geometry behind the
manifest's ``face_scale``/``face_shift``: the median true side over the detected box's side, and
the true centre's offset from the box centre in box sides (negative: above).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from make_face_video import sidecar_path, truth_boxes  # noqa: E402

from edge_mer.backends.options import BackendOptions, OrtOptions  # noqa: E402
from edge_mer.bundle import default_bundle_path  # noqa: E402
from edge_mer.bundle.loader import load_bundle  # noqa: E402
from edge_mer.config import from_dict  # noqa: E402
from edge_mer.pipeline.face_models import build_detector  # noqa: E402
from edge_mer.preprocess.face_detect import FaceDetectorOptions  # noqa: E402
from edge_mer.preprocess.face_track import FaceTracker, iou  # noqa: E402

ONE_THREAD = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(intra_op_threads=1, inter_op_threads=1))


def parse_variant(text: str) -> FaceDetectorOptions:
    """``key=value,...`` -> options (values read as JSON where they parse, else as strings)."""
    fields = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            fields[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[key.strip()] = value
    return from_dict(FaceDetectorOptions, fields)


def sweep(video: Path, options: FaceDetectorOptions) -> dict:
    truth = truth_boxes(json.loads(sidecar_path(video).read_text()))
    detector = build_detector(options, load_bundle(default_bundle_path()), ONE_THREAD)
    tracker = FaceTracker(detector)
    found = hit = frames = 0
    spent_ns = 0
    geometry = []
    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frames >= len(truth):
                break
            started = time.perf_counter_ns()
            face = tracker.find(frame)
            spent_ns += time.perf_counter_ns() - started
            if face is not None:
                found += 1
                t = truth[frames]
                if iou(face.box, t) >= 0.3:
                    hit += 1
                    side = max(face.box[2], face.box[3])
                    geometry.append((t[2] / side, ((t[1] + t[3] / 2) - (face.box[1] + face.box[3] / 2)) / side))
            frames += 1
    finally:
        cap.release()
        detector.close()
    scale, shift = np.median(np.array(geometry), axis=0) if geometry else (float("nan"), float("nan"))
    return {"options": {k: v for k, v in dataclasses.asdict(options).items() if v != getattr(FaceDetectorOptions(), k)},
            "frames": frames, "found": round(found / frames, 4), "truth_hit": round(hit / frames, 4),
            "ms_per_frame": round(spent_ns / 1e6 / frames, 3), "full_detections": tracker.full_detections,
            "region_searches": tracker.region_searches, "template_matches": tracker.template_matches,
            "true_side_over_box": round(float(scale), 3), "true_centre_offset": round(float(shift), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], help="key=value,... of FaceDetectorOptions")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    rows = [sweep(args.video, parse_variant(v)) for v in (args.variant or [""])]
    for r in rows:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps({"video": str(args.video), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
