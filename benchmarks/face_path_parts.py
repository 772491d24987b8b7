"""Two face-path optimisations measured against what they replaced, in one run on one pinned core.

    python benchmarks/face_path_parts.py [--shared ../shared] [--frames 300] [--repeat 3] [--json out.json]

1. **Detector input without extra copies**: :class:`LetterboxBuffer` (resize straight into a
   preallocated canvas, then one ``cv2.dnn.blobFromImages`` pass for mean, scale, BGR->RGB and
   the NCHW transpose) against the straightforward version (resize, new canvas,
   ``cvtColor``, ``astype``, divide, subtract, ``transpose`` + ``ascontiguousarray``), on the
   frames of the multi-face video (``make_multiface_video.py``, seed 2).
2. **Crops batched across faces**: the face encoder on every face of a frame in one call against
   one call per face, on the same frames' faces as the tracker finds them.

Both report the median per frame and the ratio; machines are noisy, so only the ratio within
this run is a claim.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import make_multiface_video as multiface  # noqa: E402
from blazeface import letterbox  # noqa: E402  - training/blazeface.py, the conversion recipe

from edge_mer.backends.options import BackendOptions, OrtOptions  # noqa: E402
from edge_mer.backends.registry import create_backend  # noqa: E402
from edge_mer.bench.face_path import one_core  # noqa: E402
from edge_mer.bundle import default_bundle_path  # noqa: E402
from edge_mer.bundle.loader import load_bundle  # noqa: E402
from edge_mer.pipeline.face_models import build_detector  # noqa: E402
from edge_mer.preprocess.blazeface import LetterboxBuffer  # noqa: E402
from edge_mer.preprocess.face import FacePreprocessor  # noqa: E402
from edge_mer.preprocess.face_detect import FaceDetectorOptions  # noqa: E402

ONE_THREAD = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(intra_op_threads=1, inter_op_threads=1))


def naive_letterbox(bgr: np.ndarray, size: int = 128) -> np.ndarray:
    """The detector input the obvious way (the recipe's own letterbox, every step allocating), as NCHW."""
    return np.ascontiguousarray(letterbox(bgr, size).transpose(2, 0, 1))[None]


def _median_ms(fn, items, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        for item in items:
            started = time.perf_counter_ns()
            fn(item)
            times.append((time.perf_counter_ns() - started) / 1e6)
    return statistics.median(times)


def measure(shared: Path, frames: int, repeat: int) -> dict:
    video = [f for f, _ in multiface.render_multiface_frames(shared, seed=2, seconds=frames / 30, fps=30)]
    bundle = load_bundle(default_bundle_path())
    spec = bundle.encoder("face")
    detector = build_detector(FaceDetectorOptions(), bundle, ONE_THREAD)
    pre = FacePreprocessor(spec.preprocessing, detector, max_faces=4)
    buffer = LetterboxBuffer((128, 128), 1, "NCHW")
    with one_core() as core, create_backend(bundle.model_ref("face"), ONE_THREAD) as model:
        copies = _median_ms(naive_letterbox, video, repeat)
        in_place = _median_ms(lambda f: (buffer.fill(f), buffer.batch(1)), video, repeat)
        batches = [pre.prepare([f] * len(faces), [x.detection for x in faces])
                   for f in video if len(faces := pre.find_all(f)) > 1]
        name = spec.inputs[0].name
        for b in batches[:5]:
            model.infer({name: b})  # warm both shapes
        one_call = _median_ms(lambda b: model.infer({name: b}), batches, repeat)
        per_face = _median_ms(lambda b: [model.infer({name: b[i:i + 1]}) for i in range(len(b))], batches, repeat)
    detector.close()
    faces = [len(b) for b in batches]
    return {"cpu": core, "frames": len(video), "repeat": repeat,
            "letterbox_ms": {"copies": round(copies, 4), "in_place": round(in_place, 4),
                             "speedup": round(copies / in_place, 2)},
            "encoder_ms_per_frame": {"frames_with_2plus_faces": len(batches),
                                     "mean_faces": round(float(np.mean(faces)), 2) if faces else 0.0,
                                     "one_call_per_face": round(per_face, 4), "one_batch": round(one_call, 4),
                                     "speedup": round(per_face / one_call, 2) if one_call else None}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.shared, args.frames, args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
