"""FaceTracker (region search around the last face, full-frame fallback) and the detector options behind it.

Real frames only: the packaged demo session's video (a real face, 320x240 at 15 fps) and 640x480 scenes made by
pasting the demo video's face into a plain background at known positions, so where the face is is known exactly.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_mer.config import from_dict
from edge_mer.errors import ConfigError, InputError
from edge_mer.preprocess.face import square_crop
from edge_mer.preprocess.face_detect import Detection, FaceDetectorOptions, create_detector
from edge_mer.preprocess.face_track import FaceTracker

Box = tuple[int, int, int, int]

#: These tests exercise the Haar cascade (no model file, deterministic); BlazeFace has its own tests.
HAAR = FaceDetectorOptions(kind="haar")


@pytest.fixture(scope="module")
def face_image(demo_frames: list[np.ndarray]) -> np.ndarray:
    """The real face of the demo video's first frame, with some context (BGR, square)."""
    found = create_detector(FaceDetectorOptions(kind="haar", detect_width=0)).best(demo_frames[0])
    assert found is not None
    return square_crop(demo_frames[0], found.box, 0.4)


def _scene(face: np.ndarray, at: tuple[int, int], size: int = 200) -> np.ndarray:
    """A 640x480 frame with ``face`` scaled to ``size`` pixels pasted with its top-left corner at ``at``."""
    canvas = np.full((480, 640, 3), 90, np.uint8)
    x, y = at
    canvas[y:y + size, x:x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    return canvas


def _iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def _centre(box: Box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def _inside(box: Box, at: tuple[int, int], size: int) -> bool:
    cx, cy = _centre(box)
    return at[0] <= cx <= at[0] + size and at[1] <= cy <= at[1] + size


def _find_logged(tracker: FaceTracker, frame: np.ndarray) -> tuple[Detection | None, bool, bool]:
    """The tracker's answer and whether this frame used a region search and/or a full-frame detection."""
    searches, fulls = tracker.region_searches, tracker.full_detections
    found = tracker.find(frame)
    searched, full = tracker.region_searches - searches, tracker.full_detections - fulls
    assert searched in (0, 1) and full in (0, 1) and searched + full >= 1
    return found, bool(searched), bool(full)


def _check_rule(events: list[tuple[bool, bool, bool]], redetect_every: int) -> None:
    """Each frame's (searched, full, found) follows the tracker's rule.

    A full-frame detection, without a region search, on the first frame, after a frame without a face and after
    ``redetect_every`` consecutive tracked frames; otherwise a region search, followed by a full-frame detection
    exactly when the search found nothing.
    """
    streak, had_face = 0, False
    for i, (searched, full, found) in enumerate(events):
        if not had_face or streak == redetect_every:
            assert (searched, full) == (False, True), f"frame {i}: expected a full detection (streak {streak})"
            streak = 0
        else:
            assert searched, f"frame {i}: expected a region search (streak {streak})"
            streak = 0 if full else streak + 1
        had_face = found


# ----------------------------------------------------------------------------- options


def test_option_defaults() -> None:
    options = HAAR
    assert options.detect_width == 320
    assert options.track is True
    assert options.redetect_every == 30
    assert options.track_face_px == 0  # the detector's own size
    assert options.track_margin == 0.5


def test_the_tracker_scales_regions_to_the_detectors_own_face_size_unless_told() -> None:
    haar = create_detector(HAAR)
    assert haar.track_face_px == 28 >= haar.options.min_size  # the cascade's 24-px window, and a margin
    assert FaceTracker(haar).face_px == 28
    assert FaceTracker(create_detector(FaceDetectorOptions(kind="haar", track_face_px=48))).face_px == 48


@pytest.mark.parametrize("changes, field, value", [
    ({"redetect_every": 0}, "redetect_every", "0"),
    ({"redetect_every": -3}, "redetect_every", "-3"),
    ({"track_face_px": 23}, "track_face_px", "23"),
    ({"min_size": 40, "track_face_px": 32}, "track_face_px", "32"),
    ({"track_margin": 0.05}, "track_margin", "0.05"),
    ({"track_margin": 2.5}, "track_margin", "2.5"),
    ({"detect_width": 63}, "detect_width", "63"),
])
def test_bad_options_are_config_errors_naming_the_field(changes: dict, field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} must be .*got {value}$"):
        FaceDetectorOptions(**changes)


def test_option_bounds_are_inclusive() -> None:
    FaceDetectorOptions(kind="haar", redetect_every=1, track_face_px=24, track_margin=0.1, detect_width=64)
    FaceDetectorOptions(kind="haar", track_face_px=0, min_size=40)  # 0: the detector's own size, whatever min_size
    FaceDetectorOptions(kind="haar", track_margin=2.0, detect_width=0)
    FaceDetectorOptions(kind="haar", min_size=40, track_face_px=40)


def test_options_from_a_config_table_name_the_key_path() -> None:
    options = from_dict(FaceDetectorOptions, {"track": False, "redetect_every": 5, "track_face_px": 40,
                                              "track_margin": 0.5}, "face.detector")
    assert (options.track, options.redetect_every, options.track_face_px, options.track_margin) == \
        (False, 5, 40, 0.5)
    with pytest.raises(ConfigError, match=r"^face\.detector: redetect_every must be >= 1"):
        from_dict(FaceDetectorOptions, {"redetect_every": 0}, "face.detector")


# ----------------------------------------------------------------------------- detect_image and choose


def test_detect_downscales_to_detect_width_and_detect_image_does_not(face_image: np.ndarray) -> None:
    at, size = (200, 120), 200
    frame = _scene(face_image, at, size)
    full_size = create_detector(FaceDetectorOptions(kind="haar", detect_width=0)).best(frame)
    default = create_detector(HAAR)  # detect_width 320: the 640x480 frame is searched at half size
    halved = default.best(frame)
    assert full_size is not None and halved is not None
    assert _inside(full_size.box, at, size) and _inside(halved.box, at, size)
    assert _iou(full_size.box, halved.box) > 0.7  # boxes come back in frame coordinates
    # detect_image searches the image as given: same frame, same coordinates as the full-size detection.
    assert default.choose(default.detect_image(frame)) == full_size
    # At detect_width 64 the face shrinks to ~20 px, below the cascade's 24-px window; detect_image still finds it.
    tiny = create_detector(FaceDetectorOptions(kind="haar", detect_width=64))
    assert tiny.detect(frame) == []
    found = tiny.choose(tiny.detect_image(frame))
    assert found is not None and _inside(found.box, at, size)


def test_detect_image_works_in_the_images_own_coordinates(face_image: np.ndarray) -> None:
    frame = _scene(face_image, (300, 200), 160)
    region = frame[180:400, 280:480]
    detector = create_detector(HAAR)
    in_region = detector.choose(detector.detect_image(region))
    in_frame = create_detector(FaceDetectorOptions(kind="haar", detect_width=0)).best(frame)
    assert in_region is not None and in_frame is not None
    x, y, w, h = in_region.box
    assert _iou((x + 280, y + 180, w, h), in_frame.box) > 0.9


@pytest.mark.parametrize("bad", [np.zeros((48, 48, 3), np.float32), np.zeros((2, 48, 48, 3), np.uint8),
                                 np.zeros(48, np.uint8)])
def test_detect_image_checks_the_image(bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="frame must be a uint8 HxW or HxWx3 image"):
        create_detector(HAAR).detect_image(bad)


def test_choose_follows_select() -> None:
    small_sure = Detection((0, 0, 30, 30), 0.99)
    big_unsure = Detection((50, 50, 80, 80), 0.70)
    big_surer = Detection((60, 60, 80, 80), 0.80)
    largest = create_detector(FaceDetectorOptions(kind="haar", select="largest"))
    confident = create_detector(FaceDetectorOptions(kind="haar", select="confident"))
    assert largest.choose([]) is None and confident.choose([]) is None
    assert largest.choose([small_sure, big_unsure]) == big_unsure
    assert largest.choose([big_unsure, big_surer, small_sure]) == big_surer  # equal areas: the higher score
    assert confident.choose([big_unsure, small_sure]) == small_sure
    assert confident.choose([small_sure]) == small_sure


# ----------------------------------------------------------------------------- the tracker on the demo video


def test_tracker_finds_the_face_in_every_demo_frame_mostly_by_region_search(
        demo_frames: list[np.ndarray]) -> None:
    detector = create_detector(HAAR)
    tracker = FaceTracker(detector)
    events = []
    for i, frame in enumerate(demo_frames):
        found, searched, full = _find_logged(tracker, frame)
        assert found is not None, f"no face in demo frame {i}"
        events.append((searched, full, True))
        if i % 6 == 0:  # the tracked box is the face the full-frame detector finds in the same frame
            reference = detector.best(frame)
            assert reference is not None and _iou(found.box, reference.box) > 0.5, (i, found, reference)
    _check_rule(events, tracker.options.redetect_every)
    n = len(demo_frames)
    assert tracker.region_searches == sum(s for s, _, _ in events) >= n - math.ceil(n / 31)
    assert tracker.full_detections == sum(f for _, f, _ in events)
    # One full detection per 31 frames at the least; far fewer than one per frame.
    assert math.ceil(n / 31) <= tracker.full_detections <= n // 6


def test_tracker_redetects_after_redetect_every_tracked_frames(demo_frames: list[np.ndarray]) -> None:
    tracker = FaceTracker(create_detector(FaceDetectorOptions(kind="haar", redetect_every=3)))
    events = []
    for frame in demo_frames[:40]:
        found, searched, full = _find_logged(tracker, frame)
        assert found is not None
        events.append((searched, full, True))
    _check_rule(events, 3)
    forced = sum(1 for s, f, _ in events if f and not s)
    assert forced >= 2  # the rule fired on its own, not only through failed searches
    assert tracker.full_detections >= math.ceil(40 / 4)


def test_without_tracking_every_frame_is_a_full_detection(demo_frames: list[np.ndarray]) -> None:
    detector = create_detector(FaceDetectorOptions(kind="haar", track=False))
    tracker = FaceTracker(detector)
    frames = demo_frames[:12]
    for frame in frames:
        found = tracker.find(frame)
        assert found is not None and found == detector.best(frame)
    assert tracker.full_detections == len(frames) and tracker.region_searches == 0


# ----------------------------------------------------------------------------- the tracker on pasted faces


def test_exact_count_of_full_detections_when_every_region_search_succeeds(face_image: np.ndarray) -> None:
    # With a 48-px region face the search never misses this face, so only the first frame and the
    # redetect_every rule cause full-frame detections.
    redetect_every, n = 4, 23
    tracker = FaceTracker(create_detector(FaceDetectorOptions(kind="haar", redetect_every=redetect_every, track_face_px=48)))
    for i in range(n):
        at = (80 + 3 * i, 60 + 2 * i)
        found, _, _ = _find_logged(tracker, _scene(face_image, at))
        assert found is not None and _inside(found.box, at, 200)
    expected_full = math.ceil(n / (redetect_every + 1))  # frames 0, 5, 10, 15, 20
    assert tracker.full_detections == expected_full == 5
    assert tracker.region_searches == n - expected_full


def test_the_box_follows_a_moving_face(face_image: np.ndarray) -> None:
    detector = create_detector(HAAR)
    tracker = FaceTracker(detector)
    boxes, events = [], []
    for i in range(30):
        at = (60 + 4 * i, 60 + 2 * i)
        frame = _scene(face_image, at)
        found, searched, full = _find_logged(tracker, frame)
        assert found is not None and _inside(found.box, at, 200), (i, at, found)
        if i % 5 == 0:
            reference = detector.best(frame)
            assert reference is not None and _iou(found.box, reference.box) > 0.5
        boxes.append(found.box)
        events.append((searched, full, True))
    _check_rule(events, tracker.options.redetect_every)
    assert tracker.region_searches == 29 and tracker.full_detections < 15
    (x0, y0), (x1, y1) = _centre(boxes[0]), _centre(boxes[-1])
    assert abs((x1 - x0) - 4 * 29) <= 15 and abs((y1 - y0) - 2 * 29) <= 15


def test_a_face_that_jumps_out_of_the_search_region_is_found_by_a_full_detection(face_image: np.ndarray) -> None:
    tracker = FaceTracker(create_detector(HAAR))
    for i in range(3):
        assert tracker.find(_scene(face_image, (40 + 2 * i, 40))) is not None
    fulls, searches = tracker.full_detections, tracker.region_searches
    far = (400, 250)  # the old region is about (30..260, 30..260): the face is entirely outside it
    found = tracker.find(_scene(face_image, far))
    assert found is not None and _inside(found.box, far, 200)
    assert tracker.region_searches == searches + 1  # the region was searched first ...
    assert tracker.full_detections == fulls + 1  # ... and the full-frame fallback found the face
    # And tracking resumes at the new place.
    found, searched, full = _find_logged(tracker, _scene(face_image, (403, 250)))
    assert found is not None and _inside(found.box, (403, 250), 200) and searched


def test_a_frame_without_a_face_gives_none_and_the_next_face_is_searched_in_the_whole_frame(
        face_image: np.ndarray) -> None:
    tracker = FaceTracker(create_detector(HAAR))
    assert tracker.find(_scene(face_image, (100, 100))) is not None
    empty = np.full((480, 640, 3), 90, np.uint8)
    found, searched, full = _find_logged(tracker, empty)
    assert found is None and searched and full
    assert tracker.find(np.zeros((480, 640), np.uint8)) is None  # grey frames are accepted too
    found, searched, full = _find_logged(tracker, _scene(face_image, (300, 200)))
    assert found is not None and _inside(found.box, (300, 200), 200)
    assert (searched, full) == (False, True)  # nothing to track from


def test_reset_forgets_the_last_face(face_image: np.ndarray) -> None:
    tracker = FaceTracker(create_detector(HAAR))
    frame = _scene(face_image, (100, 100))
    tracker.find(frame)
    tracker.find(frame)
    assert tracker.region_searches == 1
    tracker.reset()
    _, searched, full = _find_logged(tracker, frame)
    assert (searched, full) == (False, True)


@pytest.mark.parametrize("bad", [np.zeros((240, 320, 3), np.float32), np.zeros((1, 240, 320, 3), np.uint8),
                                 np.zeros(320, np.uint8), "not a frame"])
def test_bad_frames_raise_input_error_and_leave_the_tracker_as_it_was(bad, face_image: np.ndarray) -> None:
    tracker = FaceTracker(create_detector(HAAR))
    assert tracker.find(_scene(face_image, (100, 100))) is not None
    before = (tracker.full_detections, tracker.region_searches)
    with pytest.raises(InputError, match="frame must be a uint8 HxW or HxWx3 image"):
        tracker.find(bad)
    assert (tracker.full_detections, tracker.region_searches) == before
    _, searched, _ = _find_logged(tracker, _scene(face_image, (102, 100)))
    assert searched  # still tracking the face it had
