"""Reference face loops on a face video, one core each: the figures edge-mer's face path is judged against.

    python benchmarks/face_baselines.py [--video /tmp/edge-mer-faces.mp4] [--max-frames N]
                                        [--json OUT] [--shared ../shared] [--cpu K]

Two loops, run one after the other in this process on one pinned core
(``os.sched_setaffinity`` + ``cv2.setNumThreads(1)`` + ONNX Runtime intra/inter op threads 1):

* ``yunet+ort``: ``cv2.FaceDetectorYN`` with ``../shared/models/face_detectors/yunet_n_640_640.onnx``
  at the frame's 640x480 input size, score threshold 0.6, NMS 0.3;
* ``haar-full+ort``: OpenCV's ``haarcascade_frontalface_default.xml`` on the full 640x480
  grey frame, scaleFactor 1.1, minNeighbors 5, minSize 24x24.

Both then take the largest face, cut a square crop around its centre (side = the box's
longer side, shifted to stay inside the frame), convert to grey, resize to 64x64
(``INTER_AREA``), scale ``(p / 255 - 0.5) * 2`` and run the mini-Xception
(``edge_mer/assets/default_bundle/face/mini_xception_fer2013.onnx``) through ONNX Runtime
at batch 1. Frames without a face skip the encoder.

Per loop: ``fps`` = frames / summed per-frame time of grey conversion + detect + crop +
encode (decoding excluded: a frame is decoded, then the timer starts; ``fps_median`` =
1000 / median ms per frame, less sensitive to other load on a shared host), ``found_ratio`` =
frames with >= 1 detection / frames, ``truth_hit_ratio`` = frames whose chosen box has
IoU >= 0.3 with the ground-truth box of the sidecar JSON written by ``make_face_video.py``
(``None`` without a sidecar). For scale (../shared/README.md): the ``fer`` package (Haar +
the same mini-Xception on TensorFlow) runs about 54 fps here and finds 75% of such faces;
it is not installed or used here.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_face_video import sidecar_path, truth_boxes  # noqa: E402

from edge_mer.bench.face_path import one_core  # noqa: E402
from edge_mer.bundle import default_bundle_path  # noqa: E402
from edge_mer.bundle.loader import load_bundle  # noqa: E402
from edge_mer.pipeline.face_models import build_detector  # noqa: E402
from edge_mer.preprocess.face_detect import FaceDetectorOptions  # noqa: E402
from edge_mer.preprocess.face_track import FaceTracker  # noqa: E402

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared"
ENCODER = ROOT / "edge_mer" / "assets" / "default_bundle" / "face" / "mini_xception_fer2013.onnx"
YUNET = Path("models") / "face_detectors" / "yunet_n_640_640.onnx"
YUNET_SCORE, YUNET_NMS = 0.6, 0.3
HAAR_FILE = "haarcascade_frontalface_default.xml"
HAAR_SCALE, HAAR_NEIGHBOURS, HAAR_MIN_SIZE = 1.1, 5, 24
IOU_HIT = 0.3
CROP = 64

Box = tuple[int, int, int, int]
Detector = Callable[[np.ndarray, np.ndarray], list[Box]]


def yunet_detector(shared: Path, size: tuple[int, int]) -> Detector:
    """YuNet-n through ``cv2.FaceDetectorYN`` at ``size`` (width, height); boxes as ints."""
    model = shared / YUNET
    if not model.is_file():
        raise FileNotFoundError(f"YuNet model not found: {model}")
    net = cv2.FaceDetectorYN.create(str(model), "", size, YUNET_SCORE, YUNET_NMS, 5000)

    def detect(frame: np.ndarray, grey: np.ndarray) -> list[Box]:
        _, faces = net.detect(frame)
        return [] if faces is None else [tuple(int(round(v)) for v in f[:4]) for f in faces]
    return detect


def haar_detector() -> Detector:
    """OpenCV's frontal-face Haar cascade on the full grey frame."""
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise RuntimeError("this OpenCV build has no Haar cascades (OpenCV 5 wheels dropped them)")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_FILE)
    if cascade.empty():
        raise RuntimeError(f"cannot load {cv2.data.haarcascades + HAAR_FILE}")

    def detect(frame: np.ndarray, grey: np.ndarray) -> list[Box]:
        found = cascade.detectMultiScale(grey, scaleFactor=HAAR_SCALE, minNeighbors=HAAR_NEIGHBOURS,
                                         minSize=(HAAR_MIN_SIZE, HAAR_MIN_SIZE))
        return [tuple(int(v) for v in f) for f in found]
    return detect


def edge_mer_detector(options: FaceDetectorOptions) -> Detector:
    """edge-mer's own detection: full frame, then tracking (see FaceTracker); BlazeFace from the default bundle."""
    tracker = FaceTracker(build_detector(options, load_bundle(default_bundle_path())))

    def detect(frame: np.ndarray, grey: np.ndarray) -> list[Box]:
        face = tracker.find(frame)
        return [] if face is None else [face.box]

    return detect


def encoder_session(path: Path = ENCODER) -> ort.InferenceSession:
    """The mini-Xception on ONNX Runtime's CPU provider, one intra-op and one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def square_crop(grey: np.ndarray, box: Box) -> np.ndarray:
    """A square window centred on ``box`` (side = its longer side), shifted to lie inside the image."""
    height, width = grey.shape
    x, y, w, h = box
    side = max(1, min(max(w, h), width, height))
    x0 = int(np.clip(round(x + w / 2 - side / 2), 0, width - side))
    y0 = int(np.clip(round(y + h / 2 - side / 2), 0, height - side))
    return grey[y0:y0 + side, x0:x0 + side]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def frames_of(video: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """Decoded BGR frames of ``video``, at most ``max_frames``."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise RuntimeError(f"cannot open {video}")
    try:
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                return
            count += 1
            yield frame
    finally:
        capture.release()


def measure_loop(video: Path, detect: Detector, session: ort.InferenceSession,
                 truth: list[Box] | None = None, max_frames: int | None = None) -> dict:
    """Run one detect + crop + encode loop over the video; decoding is outside the timer."""
    input_name = session.get_inputs()[0].name
    times: list[float] = []
    found = hits = 0
    for index, frame in enumerate(frames_of(video, max_frames)):
        start = time.perf_counter()
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes = detect(frame, grey)
        chosen = max(boxes, key=lambda b: b[2] * b[3]) if boxes else None
        if chosen is not None:
            crop = cv2.resize(square_crop(grey, chosen), (CROP, CROP), interpolation=cv2.INTER_AREA)
            feed = ((crop.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, None]
            session.run(None, {input_name: feed})
        times.append(time.perf_counter() - start)
        found += chosen is not None
        if chosen is not None and truth is not None and index < len(truth):
            hits += iou(chosen, truth[index]) >= IOU_HIT
    frames = len(times)
    if frames == 0:
        raise RuntimeError(f"no frames decoded from {video}")
    ms = np.asarray(times) * 1000.0
    return {"frames": frames, "fps": frames / float(np.sum(times)), "ms_mean": float(ms.mean()),
            "fps_median": 1000.0 / float(np.percentile(ms, 50)),
            "ms_p50": float(np.percentile(ms, 50)), "ms_p95": float(np.percentile(ms, 95)),
            "found_ratio": found / frames, "truth_hit_ratio": hits / frames if truth is not None else None}


def load_truth(video: Path) -> list[Box] | None:
    """Per-frame truth boxes from the sidecar JSON beside ``video``, or None when there is none."""
    path = sidecar_path(video)
    if not path.is_file():
        log.warning("no sidecar %s: truth_hit_ratio will be None", path)
        return None
    return truth_boxes(json.loads(path.read_text()))


LOOPS = ("yunet+ort", "haar-full+ort", "edge-mer-blazeface", "edge-mer-haar", "edge-mer-yunet")


def _detectors(names: tuple[str, ...], shared: Path, size: tuple[int, int]) -> dict[str, Detector]:
    yunet = FaceDetectorOptions(kind="yunet", model_path=shared / YUNET)
    makers = {"yunet+ort": lambda: yunet_detector(shared, size), "haar-full+ort": haar_detector,
              "edge-mer-blazeface": lambda: edge_mer_detector(FaceDetectorOptions()),
              "edge-mer-haar": lambda: edge_mer_detector(FaceDetectorOptions(kind="haar")),
              "edge-mer-yunet": lambda: edge_mer_detector(yunet)}
    return {name: makers[name]() for name in names}


def run_baselines(video: Path, shared: Path = DEFAULT_SHARED, max_frames: int | None = None,
                  cpu: int | None = None, encoder: Path = ENCODER, loops: tuple[str, ...] = LOOPS[:2]) -> dict:
    """The chosen loops on one pinned core; returns settings and per-loop results.

    ``edge-mer-haar`` and ``edge-mer-yunet`` run edge-mer's detector with its
    defaults (full-frame detection at 320 px wide, then tracking) inside the
    same crop and encode loop, so their truth hits compare with the references'.
    """
    truth = load_truth(video)
    width, height = next(frames_of(video, 1)).shape[1::-1]
    results: dict[str, dict] = {}
    with one_core(cpu) as pinned:
        session = encoder_session(encoder)  # created after pinning: its threads inherit the core
        for name, detect in _detectors(loops, shared, (width, height)).items():
            started = time.perf_counter()
            results[name] = measure_loop(video, detect, session, truth, max_frames)
            results[name]["wall_s"] = time.perf_counter() - started
            log.info("%s: %s", name, results[name])
    return {
        "video": str(video), "size": [width, height], "cpu": pinned, "threads": 1, "iou_hit": IOU_HIT,
        "settings": {
            "yunet+ort": {"model": YUNET.as_posix(), "input_size": [width, height],
                          "score_threshold": YUNET_SCORE, "nms_threshold": YUNET_NMS},
            "haar-full+ort": {"cascade": HAAR_FILE, "scale_factor": HAAR_SCALE,
                              "min_neighbors": HAAR_NEIGHBOURS, "min_size": HAAR_MIN_SIZE},
            "encoder": {"model": "edge_mer/assets/default_bundle/face/mini_xception_fer2013.onnx",
                        "input": [1, 1, CROP, CROP], "scale": "(p / 255 - 0.5) * 2",
                        "onnxruntime": ort.__version__, "intra_op_threads": 1, "inter_op_threads": 1},
            "opencv": cv2.__version__},
        "loops": results}


def format_table(report: dict) -> str:
    """A small fixed-width table of the per-loop results."""
    lines = [f"{'loop':<15} {'frames':>7} {'fps':>7} {'fps@p50':>8} {'ms/frame':>9} {'p95 ms':>7} {'found':>6} "
             f"{'truth hit':>10}"]
    for name, r in report["loops"].items():
        hit = "-" if r["truth_hit_ratio"] is None else f"{r['truth_hit_ratio']:.3f}"
        lines.append(f"{name:<15} {r['frames']:>7d} {r['fps']:>7.1f} {r['fps_median']:>8.1f} {r['ms_mean']:>9.2f} "
                     f"{r['ms_p95']:>7.2f} {r['found_ratio']:>6.3f} {hit:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=Path("/tmp/edge-mer-faces.mp4"))
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the highest allowed)")
    parser.add_argument("--loops", default=",".join(LOOPS[:2]),
                        help=f"comma-separated loops among {', '.join(LOOPS)} (default: the two references)")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        parser.error(f"no video at {args.video} (build one with benchmarks/make_face_video.py)")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be >= 1")
    if not (args.shared / YUNET).is_file():
        parser.error(f"no {YUNET} under --shared {args.shared}")
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {args.cpu} is not one of {sorted(os.sched_getaffinity(0))}")
    loops = tuple(name.strip() for name in args.loops.split(",") if name.strip())
    unknown = [name for name in loops if name not in LOOPS]
    if unknown or not loops:
        parser.error(f"--loops {args.loops!r}: expected names among {', '.join(LOOPS)}")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    report = run_baselines(args.video, args.shared, args.max_frames, args.cpu, loops=loops)
    print(format_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
