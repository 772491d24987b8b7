"""Template following between detections: a face that moved is found again, a covered one is not."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mer.preprocess.detection import Detection
from edge_mer.preprocess.face_follow import capture, follow


def _scene(face: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(60, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    x, y = at
    frame[y:y + face.shape[0], x:x + face.shape[1]] = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    return frame


@pytest.fixture(scope="module")
def face(shared_dir: Path) -> np.ndarray:
    path = sorted((shared_dir / "data/face/ckplus48/surprise").glob("*.png"))[0]
    return cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (150, 150), interpolation=cv2.INTER_CUBIC)


@pytest.mark.shared
def test_a_face_that_moved_a_few_pixels_is_followed_with_its_keypoints(face: np.ndarray) -> None:
    first = _scene(face, (200, 150))
    last = Detection((200, 150, 150, 150), 0.9, ((250.0, 200.0), (300.0, 200.0)))
    template = capture(first, last.box)
    moved = follow(_scene(face, (212, 143)), template, last)
    assert moved is not None and abs(moved.box[0] - 212) <= 2 and abs(moved.box[1] - 143) <= 2
    assert moved.landmarks[0] == pytest.approx((250.0 + moved.box[0] - 200, 200.0 + moved.box[1] - 150))
    assert moved.score == last.score and moved.box[2:] == last.box[2:]


@pytest.mark.shared
def test_a_covered_face_is_handed_back_to_the_detector(face: np.ndarray) -> None:
    first = _scene(face, (200, 150))
    last = Detection((200, 150, 150, 150), 0.9)
    template = capture(first, last.box)
    covered = first.copy()
    covered[140:310, 190:360] = (30, 160, 90)  # a card in front of the face
    assert follow(covered, template, last) is None
    assert capture(first, (600, 400, 150, 150)) is None  # mostly outside the frame: no template
