"""Build a 640x480 test video with 2-4 real faces at once, each a persistent person.

    python benchmarks/make_multiface_video.py [--shared ../shared] [--out /tmp/edge-mer-multiface.mp4]
                                              [--seconds 10] [--fps 30] [--seed 0]

Four people, each a distinct CK+48 subject (one image per person, drawn with
:func:`make_face_video.select_images`), on one static background
(:func:`make_face_video.make_background`), rendered with
:func:`make_face_video.face_layer` (the same tint, contrast, side light, feathered
edge, defocus blur and head roll as the single-face video; ``FaceVideoStyle`` with
faces of 70..200 px and contrast x0.6..1.0, each person's side drawn from 130..190 px: MediaPipe's short-range
BlazeFace misses most CK+48 squares under ~120-140 px in a 640x480 frame). The frame is
split into three vertical lanes so that faces never overlap one another:

* person 0 (lane 0, upper half) drifts, then leaves through the top edge
  (40%..52% of the video);
* person 3 (lane 0, lower half) enters through the bottom edge (46%..58%) and stays,
  so up to 4 faces are (partly) visible around the hand-over;
* person 1 (lane 1) is fully covered by an opaque card for 8 frames from 25% of the
  video and reappears where it was (it keeps drifting behind the card);
* person 2 (lane 2) is visible throughout.

Faces drift (at most ``max_drift`` px/frame), zoom (x0.88..1.12) and roll over their
lifetime. One lighting scene for the whole video (drawn like make_face_video's), a
per-frame exposure flicker and fresh sensor noise. The per-frame noise comes from a
generator seeded by ``(seed, frame)``, so any frame renders on its own
(:func:`render_multiface_frame`) with the same bytes every time.

Sidecar JSON (same stem): ``frames`` is one list per frame of
``{"person": id, "box": [x, y, w, h], "visible": fraction}`` for every face at least
partly in the frame and not covered (``box`` is the pasted square clipped to the frame,
``visible`` its share of the whole square), plus ``people`` (source image relative to
``../shared``, class, lifetime, appearance), ``occlusions`` and the style.

Imports are numpy, cv2, the standard library and make_face_video only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_face_video import (
    CKPLUS_DIR,
    CODEC,
    HEIGHT,
    WIDTH,
    FaceVideoStyle,
    Segment,
    _check_video,
    face_layer,
    make_background,
    plan_segment,
    select_images,
    sidecar_path,
)

log = logging.getLogger(__name__)

HIDDEN_FRAMES = 8          # frames person 1 is fully covered
OCCLUDER_MARGIN = 6        # px the card overhangs the hidden face on every side
LANE = WIDTH / 3
MIN_FRAMES = 60


def default_style() -> FaceVideoStyle:
    """make_face_video's style with faces of 70..200 px and face contrast x0.6..1.0 (not 0.4..1.0)."""
    return dataclasses.replace(FaceVideoStyle(), face_side=(70, 200), contrast=(0.6, 1.0))


@dataclass
class Person:
    """One face with an identity: appearance (a make_face_video Segment), its lifetime and path."""

    person: int
    segment: Segment                                # appearance, side and roll over the lifetime
    grey48: np.ndarray
    waypoints: tuple[tuple[int, float, float], ...]  # (frame, centre x, centre y), piecewise linear
    hidden: tuple[int, int] = (0, 0)                 # [start, end) frames covered by the occluder

    @property
    def first(self) -> int:
        return self.segment.start_frame

    @property
    def end(self) -> int:
        return self.segment.start_frame + self.segment.frames

    def square(self, frame: int) -> tuple[int, int, int] | None:
        """Top-left corner and side of the pasted square (may reach outside the frame), or None."""
        if not self.first <= frame < self.end:
            return None
        frames = [w[0] for w in self.waypoints]
        cx = float(np.interp(frame, frames, [w[1] for w in self.waypoints]))
        cy = float(np.interp(frame, frames, [w[2] for w in self.waypoints]))
        side = self.segment.box(frame - self.first)[2]
        return round(cx - side / 2), round(cy - side / 2), side


@dataclass
class MultifacePlan:
    """Everything needed to render any frame."""

    people: list[Person]
    background: np.ndarray
    occluder: tuple[tuple[int, int, int, int], tuple[float, float, float]]  # box, BGR colour
    scene: tuple[str, float, float]   # name, exposure, noise sigma
    frames: int
    fps: int
    seed: int
    style: FaceVideoStyle


def _clip(x: int, y: int, side: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, WIDTH), min(y + side, HEIGHT)
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _pick_people(shared: Path, rng: np.random.Generator, count: int = 4) -> list[tuple[str, str]]:
    """``count`` images of distinct CK+ subjects (S###)."""
    picked: list[tuple[str, str]] = []
    for source, label in select_images(shared, 8 * count, rng):
        if Path(source).stem.split("_")[0] not in {Path(s).stem.split("_")[0] for s, _ in picked}:
            picked.append((source, label))
        if len(picked) == count:
            return picked
    raise ValueError(f"CK+48 under {shared} has fewer than {count} subjects")


def _drift(rng: np.random.Generator, box: tuple[float, float, float, float], side: float, start: int,
           end: int, max_drift: float) -> tuple[tuple[int, float, float], tuple[int, float, float]]:
    """A linear drift from ``start`` to ``end`` with the centre inside ``box`` (x0, y0, x1, y1)."""
    lo = np.array([box[0] + side / 2, box[1] + side / 2])
    hi = np.maximum(np.array([box[2] - side / 2, box[3] - side / 2]), lo)
    a = rng.uniform(lo, hi)
    reach = max_drift * max(end - start, 1)
    b = np.clip(a + rng.uniform(-reach, reach, size=2), lo, hi)
    return (start, float(a[0]), float(a[1])), (end, float(b[0]), float(b[1]))


def _person(k: int, image: tuple[str, str], shared: Path, start: int, end: int, side_range: tuple[float, float],
            style: FaceVideoStyle, rng: np.random.Generator) -> Person:
    """Appearance from make_face_video's plan_segment; side drawn from ``side_range``, zoomed over the life."""
    segment = plan_segment(image[0], image[1], start, end - start, style, rng)
    side0 = float(rng.uniform(*side_range))
    side1 = float(np.clip(side0 * rng.uniform(*style.zoom), style.face_side[0], side_range[1]))
    segment = dataclasses.replace(segment, start_box=(0, 0, round(side0), round(side0)),
                                  end_box=(0, 0, round(side1), round(side1)))
    grey48 = cv2.imread(str(shared / image[0]), cv2.IMREAD_GRAYSCALE)
    if grey48 is None:
        raise RuntimeError(f"cannot read {shared / image[0]}")
    return Person(k, segment, grey48, ())


def _paths(people: list[Person], frames: int, style: FaceVideoStyle, rng: np.random.Generator) -> None:
    """Waypoints: lanes, the exit of person 0, the entry of person 3, the occlusion of person 1."""
    p0, p1, p2, p3 = people
    d = style.max_drift
    side = [max(p.segment.start_box[2], p.segment.end_box[2]) for p in people]
    a, b = _drift(rng, (4, 4, LANE - 4, HEIGHT / 2 - 4), side[0], 0, p0.end - int(0.12 * frames), d)
    p0.waypoints = (a, b, (p0.end, b[1], -side[0] / 2 - 2.0))
    a, b = _drift(rng, (4, HEIGHT / 2 + 4, LANE - 4, HEIGHT - 4), side[3], p3.first + int(0.12 * frames),
                  frames - 1, d)
    p3.waypoints = ((p3.first, a[1], HEIGHT + side[3] / 2 + 2.0), a, b)
    p1.waypoints = _drift(rng, (LANE + 4, 4, 2 * LANE - 4, HEIGHT - 4), side[1], 0, frames - 1, d)
    p2.waypoints = _drift(rng, (2 * LANE + 4, 4, WIDTH - 4, HEIGHT - 4), side[2], 0, frames - 1, d)
    start = round(0.25 * frames)
    p1.hidden = (start, start + HIDDEN_FRAMES)


def _occluder(person: Person, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], tuple[float, ...]]:
    """A card covering every square of ``person`` while hidden, with a margin; and its colour."""
    squares = [person.square(f) for f in range(*person.hidden)]
    x0 = min(s[0] for s in squares) - OCCLUDER_MARGIN
    y0 = min(s[1] for s in squares) - OCCLUDER_MARGIN
    x1 = max(s[0] + s[2] for s in squares) + OCCLUDER_MARGIN
    y1 = max(s[1] + s[2] for s in squares) + OCCLUDER_MARGIN
    box = (max(x0, 0), max(y0, 0), min(x1, WIDTH) - max(x0, 0), min(y1, HEIGHT) - max(y0, 0))
    return box, tuple(float(c) for c in rng.uniform(30, 220) + rng.uniform(-30, 30, size=3))


def plan_multiface(shared: Path, seed: int = 0, seconds: float = 10.0, fps: int = 30,
                   style: FaceVideoStyle | None = None) -> MultifacePlan:
    """The deterministic plan of the video: same arguments, same people, paths and background."""
    style = style or default_style()
    frames = round(seconds * fps)
    if frames < MIN_FRAMES or fps < 1:
        raise ValueError(f"need at least {MIN_FRAMES} frames (seconds={seconds}, fps={fps})")
    shared = Path(shared)
    select_seed, scene_seed, *person_seeds = np.random.SeedSequence(seed).spawn(6)
    images = _pick_people(shared, np.random.default_rng(select_seed))
    lives = [(0, round(0.52 * frames)), (0, frames), (0, frames), (round(0.46 * frames), frames)]
    sides = [(150.0, 190.0), (130.0, 190.0), (140.0, 190.0), (150.0, 190.0)]
    people = [_person(k, images[k], shared, *lives[k], sides[k], style, np.random.default_rng(s))
              for k, s in enumerate(person_seeds[:4])]
    rng = np.random.default_rng(scene_seed)
    _paths(people, frames, style, rng)
    scene = style.scenes[int(rng.choice(len(style.scenes), p=[s[1] for s in style.scenes]))]
    scene_draw = (scene[0], float(rng.uniform(*scene[2])), float(rng.uniform(*scene[3])))
    return MultifacePlan(people, make_background(style, rng), _occluder(people[1], rng), scene_draw,
                         frames, fps, seed, style)


def _frame_rng(seed: int, frame: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, frame)))


def render_multiface_frame(plan: MultifacePlan, frame: int) -> tuple[np.ndarray, list[dict]]:
    """Frame ``frame`` as uint8 BGR (HEIGHT x WIDTH x 3) and its truth list (see the module docstring)."""
    if not 0 <= frame < plan.frames:
        raise IndexError(f"frame {frame} outside 0..{plan.frames - 1}")
    image = plan.background.copy()
    truth: list[dict] = []
    for person in plan.people:
        square = person.square(frame)
        clipped = _clip(*square) if square else None
        if clipped is None:
            continue
        x, y, side = square
        bgr, alpha = face_layer(person.grey48, person.segment, frame - person.first, plan.style)
        cx, cy, w, h = clipped
        bgr, alpha = bgr[cy - y:cy - y + h, cx - x:cx - x + w], alpha[cy - y:cy - y + h, cx - x:cx - x + w]
        region = image[cy:cy + h, cx:cx + w]
        image[cy:cy + h, cx:cx + w] = region * (1 - alpha) + bgr * alpha
        if not person.hidden[0] <= frame < person.hidden[1]:
            truth.append({"person": person.person, "box": [cx, cy, w, h], "visible": round(w * h / side ** 2, 4)})
    if any(p.hidden[0] <= frame < p.hidden[1] for p in plan.people):
        (x, y, w, h), colour = plan.occluder
        image[y:y + h, x:x + w] = np.asarray(colour, np.float32)
    rng = _frame_rng(plan.seed, frame)
    image *= plan.scene[1] * (1.0 + float(rng.normal(0.0, plan.style.flicker)))
    image += rng.standard_normal(image.shape, dtype=np.float32) * plan.scene[2]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), truth


def render_multiface_frames(shared: Path, seed: int = 0, seconds: float = 10.0, fps: int = 30,
                            style: FaceVideoStyle | None = None,
                            frames: Iterable[int] | None = None) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """(frame, truth) for every frame in order, or for the given frame indices; no video codec involved."""
    plan = plan_multiface(shared, seed, seconds, fps, style)
    for i in range(plan.frames) if frames is None else frames:
        yield render_multiface_frame(plan, i)


def _sidecar(plan: MultifacePlan, out: Path, truth: list[list[dict]]) -> dict:
    people = [{"person": p.person, "source": p.segment.source, "class": p.segment.label,
               "first_frame": p.first, "end_frame": p.end,
               "hidden_frames": list(p.hidden) if p.hidden[1] > p.hidden[0] else None,
               "start_side": p.segment.start_box[2], "end_side": p.segment.end_box[2],
               "waypoints": [list(w) for w in p.waypoints],
               "appearance": {"contrast": p.segment.contrast, "brightness": p.segment.brightness,
                              "tint_bgr": list(p.segment.tint), "roll_degrees": list(p.segment.roll),
                              "side_light": p.segment.side_light, "light_direction": p.segment.light_direction,
                              "blur_sigma": p.segment.blur_sigma}} for p in plan.people]
    (x, y, w, h), colour = plan.occluder
    hidden = plan.people[1].hidden
    return {
        "video": out.name, "width": WIDTH, "height": HEIGHT, "fps": plan.fps, "codec": CODEC,
        "frame_count": plan.frames, "seed": plan.seed, "source_root": "../shared",
        "box_format": "[x, y, w, h] in pixels: the pasted square (feathered edge included) clipped to the frame",
        "visible": "share of the whole square inside the frame (1.0 unless entering or leaving)",
        "end_frame": "exclusive",
        "motion": "centre piecewise linear between waypoints [frame, cx, cy]; side linear from start_side "
                  "to end_side over the person's lifetime",
        "scene": {"name": plan.scene[0], "exposure": plan.scene[1], "noise_sigma": plan.scene[2]},
        "occlusions": [{"person": 1, "start_frame": hidden[0], "end_frame": hidden[1],
                        "occluder_box": [x, y, w, h], "occluder_bgr": list(colour)}],
        "people": people, "style": dataclasses.asdict(plan.style), "frames": truth}


def build_multiface_video(shared: Path, out: Path, seconds: float = 10.0, fps: int = 30, seed: int = 0,
                          style: FaceVideoStyle | None = None) -> Path:
    """Write the video and its sidecar JSON (see the module docstring); returns ``out``."""
    shared, out = Path(shared), Path(out)
    plan = plan_multiface(shared, seed, seconds, fps, style)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*CODEC), float(fps), (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open an {CODEC} VideoWriter for {out}")
    truth: list[list[dict]] = []
    try:
        for i in range(plan.frames):
            image, boxes = render_multiface_frame(plan, i)
            writer.write(image)
            truth.append(boxes)
    finally:
        writer.release()
    _check_video(out, plan.frames)
    sidecar_path(out).write_text(json.dumps(_sidecar(plan, out, truth), indent=1) + "\n")
    log.info("%s: %d people, %d frames", out, len(plan.people), plan.frames)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared",
                        help="the ../shared directory (default: beside the project)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-mer-multiface.mp4"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.shared / CKPLUS_DIR).is_dir():
        parser.error(f"no {CKPLUS_DIR} under --shared {args.shared}")
    if args.fps < 1 or args.seconds * args.fps < MIN_FRAMES:
        parser.error(f"--fps must be >= 1 and --seconds x --fps at least {MIN_FRAMES} frames")
    if args.out.suffix.lower() != ".mp4":
        parser.error("--out must end in .mp4 (the sidecar is written beside it with .json)")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        build_multiface_video(args.shared, args.out, args.seconds, args.fps, args.seed)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(f"wrote {args.out} and {sidecar_path(args.out)}")


if __name__ == "__main__":
    main()
