"""Build a camera-like 640x480 test video with exactly one real face in every frame.

    python benchmarks/make_face_video.py [--shared ../shared] [--out /tmp/edge-mer-faces.mp4]
                                         [--faces 140] [--seconds-per-face 2] [--fps 30] [--seed 0]

The faces are CK+48 crops (``../shared/data/face/ckplus48/<class>/*.png``, 48x48 grey),
``faces`` distinct images stratified over the 7 classes (seeded; one image per CK+
sequence before a second one from the same sequence), each shown for
``seconds_per_face``. Per face (all drawn from the seed, see :class:`FaceVideoStyle`):

* a square face of 100..250 px side (CK+48 upscaled with ``INTER_CUBIC``), at a random
  position fully inside the frame, drifting linearly (at most 1.5 px/frame per axis),
  zooming linearly (end side = start side x 0.88..1.12) and rolling (head tilt: start
  -30..+30 degrees, changing by up to +-8 degrees) over its segment;
* a colour background: smooth random 4-corner gradient of muted colours + blurred noise
  texture + a few soft blurred shapes (different per face, static within the segment);
* the face pasted as grey -> BGR with a mild random tint (+-8% per channel), contrast
  x0.4..1.0 around its mean, brightness -30..+30, a side-light gradient across the face
  (gain 1 +- 0..0.45), a soft (feathered, 6% of the side) edge, and a defocus blur
  (sigma 0.6..1.8 px) on 35% of faces;
* a lighting scene for the whole frame: normal (60%: exposure x0.85..1.1, sensor noise
  sigma 2..6), dim (25%: x0.25..0.5, noise 6..14) or bright (15%: x1.3..1.8, noise 3..7);
* per frame: a small exposure flicker (1.5%) and fresh Gaussian sensor noise.

The video is written with OpenCV's ``mp4v`` encoder, re-opened and checked for size and
frame count. A sidecar JSON with the same stem records, per segment, the source image
(relative to ``../shared``), its class, ``start_frame``/``end_frame`` (end exclusive), the
start and end boxes, the motion rule and the per-frame ground-truth box ``[x, y, w, h]``
of the pasted face (the whole pasted square, feathered edge included).

Imports are numpy, cv2 and the standard library only: tests and other benchmarks add
this directory to ``sys.path`` and import :func:`build_face_video`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 640, 480
CKPLUS_DIR = Path("data") / "face" / "ckplus48"
CODEC = "mp4v"


@dataclass(frozen=True)
class FaceVideoStyle:
    """How hard the video is: every random range the builder draws from (recorded in the sidecar)."""

    face_side: tuple[int, int] = (100, 250)        # px, start side of the square face
    zoom: tuple[float, float] = (0.88, 1.12)       # end side / start side
    max_drift: float = 1.5                         # px per frame, per axis
    contrast: tuple[float, float] = (0.4, 1.0)     # face contrast gain around its mean
    brightness: tuple[float, float] = (-30.0, 30.0)  # face brightness offset, grey levels
    tint: float = 0.08                             # per-channel gain 1 +- tint
    roll: float = 30.0                             # start head roll, degrees, uniform in +-roll
    roll_change: float = 8.0                       # roll change over the segment, degrees, +-
    side_light: tuple[float, float] = (0.0, 0.45)  # light gradient across the face: gain 1 +- this
    feather: float = 0.06                          # soft edge width, fraction of the side
    blur_probability: float = 0.35                 # share of faces with defocus blur
    blur_sigma: tuple[float, float] = (0.6, 1.8)   # px at the pasted size
    # lighting scenes: (name, probability, whole-frame exposure gain range, per-frame Gaussian
    # sensor noise sigma range in grey levels); a dim room means a dark, noisy frame
    scenes: tuple[tuple[str, float, tuple[float, float], tuple[float, float]], ...] = (
        ("normal", 0.6, (0.85, 1.1), (2.0, 6.0)),
        ("dim", 0.25, (0.25, 0.5), (6.0, 14.0)),
        ("bright", 0.15, (1.3, 1.8), (3.0, 7.0)))
    flicker: float = 0.015                         # per-frame exposure gain sigma
    texture_amplitude: tuple[float, float] = (6.0, 24.0)  # background texture, grey levels
    shapes: tuple[int, int] = (2, 7)               # soft shapes in the background


@dataclass
class Segment:
    """One face shown for a run of frames, with everything needed to render it."""

    source: str            # path relative to ../shared
    label: str
    start_frame: int
    frames: int
    start_box: tuple[int, int, int, int]
    end_box: tuple[int, int, int, int]
    contrast: float
    brightness: float
    tint: tuple[float, float, float]
    roll: tuple[float, float]          # degrees at the first and last frame
    side_light: float
    light_direction: float             # radians
    blur_sigma: float
    scene: str
    exposure: float
    noise_sigma: float

    def box(self, i: int) -> tuple[int, int, int, int]:
        """Ground-truth box of frame ``i`` of the segment: linear interpolation, rounded."""
        t = i / max(self.frames - 1, 1)
        x, y, w, h = (a + (b - a) * t for a, b in zip(self.start_box, self.end_box))
        side = min(int(round(w)), WIDTH, HEIGHT)
        return min(max(int(round(x)), 0), WIDTH - side), min(max(int(round(y)), 0), HEIGHT - side), side, side

    def angle(self, i: int) -> float:
        """Head roll of frame ``i`` in degrees, linear over the segment."""
        t = i / max(self.frames - 1, 1)
        return self.roll[0] + (self.roll[1] - self.roll[0]) * t


def select_images(shared: Path, faces: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``faces`` distinct CK+48 images, stratified over classes; returns (relative path, class) pairs."""
    root = shared / CKPLUS_DIR
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"no CK+48 class folders under {root}")
    queues: dict[str, list[Path]] = {}
    for label in classes:
        files = sorted((root / label).glob("*.png"))
        order = rng.permutation(len(files))
        first, rest, seen = [], [], set()
        for k in order:  # one image per CK+ sequence (S###_###) first, repeats after
            sequence = "_".join(files[k].stem.split("_")[:2])
            (rest if sequence in seen else first).append(files[k])
            seen.add(sequence)
        queues[label] = first + rest
    if faces > sum(len(q) for q in queues.values()):
        raise ValueError(f"{faces} faces asked for, CK+48 has {sum(len(q) for q in queues.values())}")
    picked: list[tuple[str, str]] = []
    start = int(rng.integers(len(classes)))
    k = 0
    while len(picked) < faces:  # round robin over classes, from a seeded first class
        label = classes[(start + k) % len(classes)]
        if queues[label]:
            path = queues[label].pop(0)
            picked.append((path.relative_to(shared).as_posix(), label))
        k += 1
    order = rng.permutation(len(picked))
    return [picked[i] for i in order]


def _inside(x: float, y: float, side: float) -> tuple[float, float]:
    return float(np.clip(x, 0, WIDTH - side)), float(np.clip(y, 0, HEIGHT - side))


def plan_segment(source: str, label: str, start_frame: int, frames: int,
                 style: FaceVideoStyle, rng: np.random.Generator) -> Segment:
    """Draw one segment's geometry and appearance."""
    side0 = float(rng.uniform(*style.face_side))
    side1 = float(np.clip(side0 * rng.uniform(*style.zoom), 0.8 * style.face_side[0], HEIGHT))
    x0, y0 = float(rng.uniform(0, WIDTH - side0)), float(rng.uniform(0, HEIGHT - side0))
    vx, vy = rng.uniform(-style.max_drift, style.max_drift, size=2)
    steps = max(frames - 1, 1)
    centre = (x0 + side0 / 2 + vx * steps, y0 + side0 / 2 + vy * steps)
    x1, y1 = _inside(centre[0] - side1 / 2, centre[1] - side1 / 2, side1)
    blurred = rng.random() < style.blur_probability
    roll0 = float(rng.uniform(-style.roll, style.roll))
    scene = style.scenes[int(rng.choice(len(style.scenes), p=[s[1] for s in style.scenes]))]
    return Segment(
        source=source, label=label, start_frame=start_frame, frames=frames,
        start_box=(round(x0), round(y0), round(side0), round(side0)),
        end_box=(round(x1), round(y1), round(side1), round(side1)),
        contrast=float(rng.uniform(*style.contrast)), brightness=float(rng.uniform(*style.brightness)),
        tint=tuple(float(g) for g in 1.0 + rng.uniform(-style.tint, style.tint, size=3)),
        roll=(roll0, roll0 + float(rng.uniform(-style.roll_change, style.roll_change))),
        side_light=float(rng.uniform(*style.side_light)), light_direction=float(rng.uniform(0, 2 * np.pi)),
        blur_sigma=float(rng.uniform(*style.blur_sigma)) if blurred else 0.0,
        scene=scene[0], exposure=float(rng.uniform(*scene[2])), noise_sigma=float(rng.uniform(*scene[3])))


def make_background(style: FaceVideoStyle, rng: np.random.Generator) -> np.ndarray:
    """A smooth colour gradient + blurred noise texture + soft shapes, float32 HxWx3 in 0..255."""
    corners = (rng.uniform(40, 220, size=(2, 2, 1)) + rng.uniform(-30, 30, size=(2, 2, 3))).astype(np.float32)
    background = cv2.resize(corners, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(style.shapes[0], style.shapes[1] + 1))):
        layer = np.zeros((HEIGHT, WIDTH), np.float32)
        centre = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        axes = (int(rng.integers(20, 200)), int(rng.integers(20, 200)))
        if rng.random() < 0.5:
            cv2.rectangle(layer, (centre[0] - axes[0], centre[1] - axes[1]), (centre[0] + axes[0], centre[1] + axes[1]),
                          1.0, -1)
        else:
            cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), float(rng.uniform(2, 12)))[..., None]
        colour = (rng.uniform(20, 235) + rng.uniform(-40, 40, size=3)).astype(np.float32)
        background = background * (1 - layer) + colour * layer
    for scale in (8, 32):  # fine and coarse blurred texture, partly colour
        noise = rng.standard_normal((HEIGHT // scale, WIDTH // scale, 3)).astype(np.float32)
        noise = noise * 0.4 + noise.mean(axis=2, keepdims=True) * 0.6
        noise = cv2.GaussianBlur(cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC), (0, 0), 2.0)
        background += noise / (noise.std() + 1e-6) * float(rng.uniform(*style.texture_amplitude)) / 2
    return np.clip(background, 0, 255)


def face_layer(grey48: np.ndarray, segment: Segment, i: int, style: FaceVideoStyle) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i``'s face as float32 BGR (side x side x 3) and its feathered, rolled alpha (side x side x 1)."""
    side = segment.box(i)[2]
    face = cv2.resize(grey48, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    if segment.blur_sigma > 0:
        face = cv2.GaussianBlur(face, (0, 0), segment.blur_sigma)
    face = (face - face.mean()) * segment.contrast + face.mean() + segment.brightness
    u = (np.arange(side, dtype=np.float32) - side / 2) / (side / 2)
    ramp = np.cos(segment.light_direction) * u[None, :] + np.sin(segment.light_direction) * u[:, None]
    face = face * (1.0 + segment.side_light * np.clip(ramp, -1, 1))
    bgr = np.clip(face, 0, 255)[..., None] * np.asarray(segment.tint, np.float32)
    d = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    edge = np.clip(d / max(1.0, style.feather * side), 0, 1)
    alpha = np.minimum.outer(edge, edge)
    turn = cv2.getRotationMatrix2D((side / 2 - 0.5, side / 2 - 0.5), segment.angle(i), 1.0)
    bgr = cv2.warpAffine(bgr, turn, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(alpha, turn, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return bgr, alpha[..., None]


def render_frame(background: np.ndarray, grey48: np.ndarray, segment: Segment, i: int,
                 style: FaceVideoStyle, rng: np.random.Generator) -> np.ndarray:
    """Frame ``i`` of a segment as uint8 BGR."""
    x, y, side, _ = segment.box(i)
    frame = background.copy()
    bgr, alpha = face_layer(grey48, segment, i, style)
    region = frame[y:y + side, x:x + side]
    frame[y:y + side, x:x + side] = region * (1 - alpha) + bgr * alpha
    frame *= segment.exposure * (1.0 + float(rng.normal(0.0, style.flicker)))
    frame += rng.standard_normal(frame.shape, dtype=np.float32) * segment.noise_sigma
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _sidecar(segments: list[Segment], out: Path, fps: int, seed: int, seconds_per_face: float,
             style: FaceVideoStyle) -> dict:
    rows = []
    for s in segments:
        rows.append({
            "source": s.source, "class": s.label, "start_frame": s.start_frame,
            "end_frame": s.start_frame + s.frames, "start_box": list(s.start_box), "end_box": list(s.end_box),
            "appearance": {"contrast": s.contrast, "brightness": s.brightness, "tint_bgr": list(s.tint),
                           "roll_degrees": list(s.roll), "side_light": s.side_light,
                           "light_direction": s.light_direction, "blur_sigma": s.blur_sigma,
                           "scene": s.scene, "exposure": s.exposure, "noise_sigma": s.noise_sigma},
            "boxes": [list(s.box(i)) for i in range(s.frames)]})
    return {
        "video": out.name, "width": WIDTH, "height": HEIGHT, "fps": fps, "codec": CODEC,
        "frames": sum(s.frames for s in segments), "faces": len(segments),
        "seconds_per_face": seconds_per_face, "seed": seed, "source_root": "../shared",
        "box_format": "[x, y, w, h] in pixels, the whole pasted square (feathered edge included)",
        "end_frame": "exclusive",
        "motion": "linear interpolation of x, y and side from start_box (first frame) to end_box "
                  "(last frame) of the segment, each rounded to the nearest pixel",
        "style": dataclasses.asdict(style), "segments": rows}


def sidecar_path(video: Path) -> Path:
    """The ground-truth JSON beside a video: same stem, ``.json``."""
    return video.with_suffix(".json")


def truth_boxes(sidecar: dict) -> list[tuple[int, int, int, int]]:
    """Per-frame ground-truth boxes, in frame order, from a loaded sidecar."""
    boxes: list[tuple[int, int, int, int]] = []
    for segment in sidecar["segments"]:
        boxes.extend(tuple(b) for b in segment["boxes"])
    return boxes


def _check_video(out: Path, frames: int) -> None:
    capture = cv2.VideoCapture(str(out))
    try:
        if not capture.isOpened():
            raise RuntimeError(f"{out} does not re-open with OpenCV")
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if size != (WIDTH, HEIGHT) or count != frames:
        raise RuntimeError(f"{out}: {size[0]}x{size[1]}, {count} frames; expected {WIDTH}x{HEIGHT}, {frames}")


@dataclass
class PlannedFace:
    """A segment ready to render: its plan, source image, static background and the rng for per-frame noise."""

    segment: Segment
    grey48: np.ndarray
    background: np.ndarray
    rng: np.random.Generator


def plan_video(shared: Path, faces: int, frames_per_face: int, seed: int,
               style: FaceVideoStyle) -> Iterator[PlannedFace]:
    """The video's segments in order, each drawn from its own child of ``SeedSequence(seed)``.

    Deterministic: the same arguments give the same segments and backgrounds (tests use this
    to compare frames with the face-free background).
    """
    select_seed, *face_seeds = np.random.SeedSequence(seed).spawn(faces + 1)
    images = select_images(shared, faces, np.random.default_rng(select_seed))
    for k, ((source, label), face_seed) in enumerate(zip(images, face_seeds)):
        rng = np.random.default_rng(face_seed)
        segment = plan_segment(source, label, k * frames_per_face, frames_per_face, style, rng)
        grey48 = cv2.imread(str(shared / source), cv2.IMREAD_GRAYSCALE)
        if grey48 is None:
            raise RuntimeError(f"cannot read {shared / source}")
        yield PlannedFace(segment, grey48, make_background(style, rng), rng)


def build_face_video(shared: Path, out: Path, faces: int = 140, seconds_per_face: float = 2.0, fps: int = 30,
                     seed: int = 0, style: FaceVideoStyle | None = None) -> Path:
    """Write the video and its sidecar JSON (see the module docstring); returns ``out``."""
    style = style or FaceVideoStyle()
    frames_per_face = int(round(seconds_per_face * fps))
    if faces < 1 or frames_per_face < 1 or fps < 1:
        raise ValueError(f"need faces >= 1 and at least one frame per face (faces={faces}, "
                         f"seconds_per_face={seconds_per_face}, fps={fps})")
    shared, out = Path(shared), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*CODEC), float(fps), (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open an {CODEC} VideoWriter for {out}")
    segments: list[Segment] = []
    started = time.perf_counter()
    try:
        for face in plan_video(shared, faces, frames_per_face, seed, style):
            for i in range(frames_per_face):
                writer.write(render_frame(face.background, face.grey48, face.segment, i, style, face.rng))
            segments.append(face.segment)
    finally:
        writer.release()
    _check_video(out, faces * frames_per_face)
    meta = _sidecar(segments, out, fps, seed, seconds_per_face, style)
    sidecar_path(out).write_text(json.dumps(meta, indent=1) + "\n")
    log.info("%s: %d faces, %d frames in %.1f s", out, faces, meta["frames"], time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared",
                        help="the ../shared directory (default: beside the project)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-faces.mp4"))
    parser.add_argument("--faces", type=int, default=140)
    parser.add_argument("--seconds-per-face", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.shared / CKPLUS_DIR).is_dir():
        parser.error(f"no {CKPLUS_DIR} under --shared {args.shared}")
    if args.faces < 1 or args.fps < 1 or args.seconds_per_face * args.fps < 0.5:
        parser.error("--faces and --fps must be >= 1 and --seconds-per-face must give at least one frame")
    if args.out.suffix.lower() != ".mp4":
        parser.error("--out must end in .mp4 (the sidecar is written beside it with .json)")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        build_face_video(args.shared, args.out, args.faces, args.seconds_per_face, args.fps, args.seed)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(f"wrote {args.out} and {sidecar_path(args.out)}")


if __name__ == "__main__":
    main()
