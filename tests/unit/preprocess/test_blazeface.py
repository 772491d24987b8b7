"""BlazeFace decoding in numpy: anchors, weighted NMS, and the shipped model against MediaPipe's own detections."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import load_bundle
from edge_mer.errors import ConfigError, InputError
from edge_mer.pipeline.face_models import build_detector
from edge_mer.preprocess.blazeface import BlazeFaceDecoding, LetterboxBuffer, decode, ssd_anchors, weighted_nms
from edge_mer.preprocess.face_blazeface import FULL_RANGE
from edge_mer.preprocess.face_detect import FaceDetectorOptions, create_detector

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "tests" / "data" / "blazeface_reference.json"


def _recipe():
    spec = importlib.util.spec_from_file_location("blazeface_recipe", ROOT / "training" / "blazeface.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_range_anchors_are_mediapipes_896_on_two_maps() -> None:
    anchors = ssd_anchors(BlazeFaceDecoding())
    assert anchors.shape == (896, 4)
    # 16x16 map, 2 anchors per cell, then 8x8 with 6; fixed size 1x1; centres at (i + 0.5) / map.
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16, 1, 1]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16, 1, 1])
    assert np.allclose(anchors[512], [0.5 / 8, 0.5 / 8, 1, 1]) and np.allclose(anchors[517], anchors[512])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8, 1, 1])
    assert ssd_anchors(FULL_RANGE).shape == (2304, 4)


def test_decoding_options_that_do_not_give_their_anchor_count_are_refused() -> None:
    with pytest.raises(ConfigError, match="give 896 anchors, not num_anchors 900"):
        BlazeFaceDecoding(num_anchors=900)
    with pytest.raises(ConfigError, match="num_coords must be 4 \\+ 2 \\* num_keypoints"):
        BlazeFaceDecoding(num_coords=15)


def test_weighted_nms_averages_overlapping_boxes_by_score_and_keeps_the_best_score() -> None:
    boxes = np.array([[0.10, 0.10, 0.20, 0.20], [0.12, 0.10, 0.20, 0.20], [0.60, 0.60, 0.10, 0.10]], np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    keypoints = np.zeros((3, 6, 2), np.float32)
    keypoints[1] += 1.0
    out = weighted_nms(boxes, scores, keypoints, 0.3)
    assert [round(d.score, 3) for d in out] == [0.9, 0.7]
    assert out[0].box[0] == pytest.approx((0.10 * 0.9 + 0.12 * 0.6) / 1.5)
    assert out[0].keypoints[0, 0] == pytest.approx(0.6 / 1.5)
    assert np.allclose(out[1].box, boxes[2])


def test_decode_reads_centre_size_and_keypoints_relative_to_the_anchor() -> None:
    d = BlazeFaceDecoding()
    anchors = ssd_anchors(d)
    raw = np.zeros((896, 16), np.float32)
    logits = np.full(896, -10.0, np.float32)
    logits[600] = 3.0
    raw[600, :4] = (12.8, -6.4, 25.6, 38.4)  # +0.1, -0.05 of the input; 0.2 x 0.3
    raw[600, 4:6] = (-12.8, 0.0)
    (found,) = decode(raw, logits, anchors, d)
    cx, cy = anchors[600, 0] + 0.1, anchors[600, 1] - 0.05
    assert np.allclose(found.box, [cx - 0.1, cy - 0.15, 0.2, 0.3], atol=1e-6)
    assert np.allclose(found.keypoints[0], [anchors[600, 0] - 0.1, anchors[600, 1]], atol=1e-6)
    assert found.score == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-6)
    with pytest.raises(InputError, match="expected 896 of each"):
        decode(raw[:10], logits, anchors, d)


def test_letterbox_pads_with_mid_grey_and_folds_the_nchw_transpose() -> None:
    frame = np.full((480, 640, 3), 255, np.uint8)
    buffer = LetterboxBuffer((128, 128), 1, "NCHW")
    box = buffer.fill(frame)
    assert (box.pad_x, box.pad_y) == (0.0, 16.0) and box.scale_x == pytest.approx(0.2)
    tensor = buffer.batch(1)
    assert tensor.shape == (1, 3, 128, 128) and tensor.dtype == np.float32
    assert np.all(tensor[0, :, :16] == 0.0) and np.all(tensor[0, :, 16:112] == 1.0)
    # NHWC (TFLite's layout) gives the same numbers; a grey frame is read as grey RGB; BGR becomes RGB.
    nhwc = LetterboxBuffer((128, 128), 2, "NHWC")
    nhwc.fill(frame, 0)
    coloured = np.zeros((100, 100, 3), np.uint8)
    coloured[..., 0] = 255  # blue in BGR
    nhwc.fill(coloured, 1)
    both = nhwc.batch(2)
    assert np.array_equal(both[0], tensor[0].transpose(1, 2, 0))
    assert np.allclose(both[1, 64, 64], [-1.0, -1.0, 1.0])
    grey = LetterboxBuffer((128, 128), 1, "NCHW")
    grey.fill(np.full((480, 640), 255, np.uint8))
    assert np.array_equal(grey.batch(1), tensor)
    assert np.allclose(box.to_frame(np.array([[0.5, 0.5]], np.float32), (128, 128)), [[320, 240]])


def test_blazeface_without_its_network_says_how_to_build_it() -> None:
    with pytest.raises(ConfigError, match="build_detector"):
        create_detector(FaceDetectorOptions())
    with pytest.raises(ConfigError, match="model_path is required for the blazeface_full detector"):
        FaceDetectorOptions(kind="blazeface_full")


def test_the_bundle_ships_blazeface_with_its_decoding_and_a_dynamic_batch() -> None:
    bundle = load_bundle(default_bundle_path())
    spec = bundle.detector("blazeface")
    assert spec.decoding == BlazeFaceDecoding() and spec.inputs[0].shape == ("N", 3, 128, 128)
    detector = build_detector(FaceDetectorOptions(), bundle)
    try:
        assert detector.network.max_batch > 1 and detector.network.layout == "NCHW"
        assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    finally:
        detector.close()


@pytest.mark.shared
def test_decoded_detections_match_mediapipes_on_real_frames(shared_dir: Path) -> None:
    """The shipped ONNX + this decoder against MediaPipe 0.10.18's FaceDetection on the same 24 frames.

    Tolerances: MediaPipe resamples the frame to 128x128 with its own (GPU-style) bilinear sampler,
    so single scores differ by up to ~0.2 near the threshold (the median far less); boxes and keypoints
    agree within a few percent.
    """
    reference = json.loads(REFERENCE.read_text())
    recipe = _recipe()
    detector = build_detector(FaceDetectorOptions(track=False, min_size=1), load_bundle(default_bundle_path()))
    same_count, score_gaps = 0, []
    try:
        for row in reference["frames"]:
            frame, _ = recipe.render_reference_frame(shared_dir, row["render"])
            h, w = frame.shape[:2]
            ours = detector.detect(frame)
            theirs = row["detections"]
            same_count += len(ours) == len(theirs)
            for ref in theirs:
                rx, ry, rw, rh = ref["bbox"]
                centre = np.array([(rx + rw / 2) * w, (ry + rh / 2) * h])
                match = min(ours, key=lambda d: np.hypot(*(np.array([d.box[0] + d.box[2] / 2,
                                                                      d.box[1] + d.box[3] / 2]) - centre)),
                            default=None)
                if match is None:
                    assert ref["score"] < 0.65, f"MediaPipe's face {ref} (score {ref['score']:.2f}) was missed"
                    continue
                assert abs(match.box[2] / w - rw) < 0.03 and abs(match.box[0] / w - rx) < 0.03
                assert abs(match.box[1] / h - ry) < 0.03
                marks = np.array(match.landmarks) / (w, h)
                assert np.abs(marks - np.array(ref["keypoints"])).max() < 0.04
                score_gaps.append(abs(match.score - ref["score"]))
                assert score_gaps[-1] < 0.2
    finally:
        detector.close()
    assert same_count >= len(reference["frames"]) - 1
    assert len(score_gaps) >= 38 and float(np.median(score_gaps)) < 0.06


@pytest.mark.shared
def test_tile_search_finds_a_face_too_small_for_the_whole_frame(shared_dir: Path) -> None:
    import cv2

    face = cv2.imread(str(sorted((shared_dir / "data/face/ckplus48/happy").glob("*.png"))[0]), cv2.IMREAD_GRAYSCALE)
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[300:380, 420:500] = cv2.cvtColor(cv2.resize(face, (80, 80), interpolation=cv2.INTER_CUBIC),
                                           cv2.COLOR_GRAY2BGR)
    bundle = load_bundle(default_bundle_path())
    whole = build_detector(FaceDetectorOptions(tile_every=0), bundle)
    tiled = build_detector(FaceDetectorOptions(), bundle)
    try:
        assert whole.detect(frame) == []
        (found,) = tiled.detect(frame)
        x, y, w, h = found.box
        assert 400 <= x + w / 2 <= 520 and 290 <= y + h / 2 <= 390 and 40 <= w <= 110
    finally:
        whole.close()
        tiled.close()
