"""The face benchmark video (benchmarks/make_face_video.py) and the reference loops on it (face_baselines.py).

A short video (4 CK+48 faces x 0.5 s) is built from ../shared into tmp_path; its truth boxes
must lie inside the frame and cover a face (the frame differs there from the face-free
background the builder planned), and both reference loops must run on a few frames.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import face_baselines  # noqa: E402
from make_face_video import FaceVideoStyle, build_face_video, plan_video, sidecar_path, truth_boxes  # noqa: E402

pytestmark = pytest.mark.shared

FACES, SECONDS, FPS, SEED = 4, 0.5, 30, 3
FRAMES = FACES * int(SECONDS * FPS)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """A 60-frame face video with its sidecar."""
    out = tmp_path_factory.mktemp("faces") / "faces.mp4"
    return build_face_video(shared_dir, out, faces=FACES, seconds_per_face=SECONDS, fps=FPS, seed=SEED)


def _frames(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _smooth_grey(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 2.0)


def test_video_has_the_asked_size_rate_and_frame_count(video: Path) -> None:
    capture = cv2.VideoCapture(str(video))
    assert capture.isOpened()
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()
    frames = _frames(video)
    assert len(frames) == FRAMES
    assert all(f.shape == (480, 640, 3) for f in frames)


def test_sidecar_segments_are_distinct_images_with_boxes_inside_the_frame(video: Path, shared_dir: Path) -> None:
    meta = json.loads(sidecar_path(video).read_text())
    assert (meta["width"], meta["height"], meta["fps"], meta["frames"]) == (640, 480, FPS, FRAMES)
    segments = meta["segments"]
    assert [s["start_frame"] for s in segments] == [0, 15, 30, 45]
    assert [s["end_frame"] for s in segments] == [15, 30, 45, 60]
    assert len({s["source"] for s in segments}) == FACES
    for s in segments:
        assert (shared_dir / s["source"]).is_file() and s["class"] == Path(s["source"]).parent.name
        assert s["boxes"][0] == s["start_box"] and s["boxes"][-1] == s["end_box"]
    boxes = truth_boxes(meta)
    assert len(boxes) == FRAMES
    for x, y, w, h in boxes:
        assert w == h and 80 <= w <= 480
        assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480
    for s in segments:  # slow drift and zoom: a few px per frame at most
        assert np.abs(np.diff(np.asarray(s["boxes"]), axis=0)).max() <= 5


def test_every_truth_box_holds_a_face_that_differs_from_the_background(video: Path, shared_dir: Path) -> None:
    frames = _frames(video)
    planned = list(plan_video(shared_dir, FACES, int(SECONDS * FPS), SEED, FaceVideoStyle()))
    for face in planned:
        segment = face.segment
        background = _smooth_grey(np.clip(face.background * segment.exposure + 0.5, 0, 255).astype(np.uint8))
        for i in range(segment.frames):
            x, y, side, _ = segment.box(i)
            diff = np.abs(_smooth_grey(frames[segment.start_frame + i]) - background)
            q, m = side // 4, side // 8
            inner = float(diff[y + q:y + side - q, x + q:x + side - q].mean())
            outside = np.ones(diff.shape, bool)
            outside[max(0, y - m):y + side + m, max(0, x - m):x + side + m] = False
            rest = float(diff[outside].mean())
            assert inner > max(2.0 * rest, 4.0), (segment.start_frame + i, inner, rest)


def test_reference_loops_run_and_report_ratios(video: Path, shared_dir: Path) -> None:
    report = face_baselines.run_baselines(video, shared_dir, max_frames=8)
    assert set(report["loops"]) == {"yunet+ort", "haar-full+ort"}
    for result in report["loops"].values():
        assert {"frames", "fps", "found_ratio", "truth_hit_ratio", "ms_mean"} <= set(result)
        assert result["frames"] == 8 and result["fps"] > 0
        assert 0.0 <= result["found_ratio"] <= 1.0
        assert 0.0 <= result["truth_hit_ratio"] <= result["found_ratio"]
    assert "haar-full+ort" in face_baselines.format_table(report)
