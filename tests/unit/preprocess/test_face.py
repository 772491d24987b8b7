from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mer.config import from_dict
from edge_mer.errors import ConfigError, InputError
from edge_mer.names import ReasonCode
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.face import FaceParams, FacePreprocessor, prepare_crops, square_crop
from edge_mer.preprocess.face_detect import FaceDetectorOptions, create_detector, haar_cascade_path

#: These tests exercise the Haar cascade (no model file, deterministic); BlazeFace has its own tests.
HAAR = FaceDetectorOptions(kind="haar")


@pytest.fixture(scope="module")
def ck_face(shared_dir: Path) -> np.ndarray:
    folder = shared_dir / "data" / "face" / "ckplus48" / "happy"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return cv2.imread(str(sorted(folder.iterdir())[0]), cv2.IMREAD_GRAYSCALE)


def _scene(face: np.ndarray, size: int = 240, at: tuple[int, int] = (200, 100)) -> np.ndarray:
    canvas = np.full((480, 640, 3), 90, np.uint8)
    big = cv2.cvtColor(cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    x, y = at
    canvas[y:y + size, x:x + size] = big
    return canvas


def test_prepare_crops_is_the_documented_formula() -> None:
    image = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48).astype(np.uint8)
    out = prepare_crops([image, image], FaceParams())
    expected = (cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255 - 0.5) * 2
    assert out.shape == (2, 1, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out[0], out[1])


def test_colour_layouts_and_buffer_reuse() -> None:
    bgr = np.zeros((10, 10, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    params = FaceParams(size=(8, 8), color="rgb", mean=(0.0,), std=(1.0,), layout="NHWC")
    buffer = np.empty(params.input_shape(1), np.float32)
    out = prepare_crops([bgr], params, out=buffer)
    assert out is buffer and out.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 0.0, 0.0])
    grey_to_bgr = prepare_crops([np.full((10, 10), 255, np.uint8)], FaceParams(size=(8, 8), color="bgr"))
    assert grey_to_bgr.shape == (1, 3, 8, 8) and np.allclose(grey_to_bgr, 1.0)


def test_square_crop_pads_at_the_border_instead_of_stretching() -> None:
    frame = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    centre = square_crop(frame, (40, 30, 20, 40), margin=0.0)
    assert centre.shape == (40, 40)
    np.testing.assert_array_equal(centre, frame[30:70, 30:70])
    corner = square_crop(frame, (0, 0, 20, 20), margin=0.5)
    assert corner.shape == (40, 40)
    np.testing.assert_array_equal(corner[10:, 10:], frame[:30, :30])
    assert (corner[:10, 10] == frame[0, 0]).all()  # replicated border
    with pytest.raises(InputError, match="lies outside the 100x100 frame"):
        square_crop(frame, (200, 200, 10, 10), 0.0)
    with pytest.raises(InputError, match="has no area"):
        square_crop(frame, (10, 10, 0, 5), 0.0)


def test_bad_crops_and_params() -> None:
    with pytest.raises(InputError, match="no face crops"):
        prepare_crops([], FaceParams())
    with pytest.raises(InputError, match="face crop 0: expected a uint8 numpy image, got float32"):
        prepare_crops([np.zeros((8, 8), np.float32)], FaceParams())
    with pytest.raises(InputError, match=r"face image of shape \[8, 8, 4\]"):
        prepare_crops([np.zeros((8, 8, 4), np.uint8)], FaceParams())
    with pytest.raises(ConfigError, match="mean needs 1 or 3 values for color 'rgb', got 2"):
        FaceParams(color="rgb", mean=(0.5, 0.5))
    with pytest.raises(ConfigError, match="preprocessing.size"):
        from_dict(FaceParams, {"size": [64]}, "preprocessing")


def test_default_install_has_a_working_haar_detector() -> None:
    # opencv-python is pinned below 5 because OpenCV 5 wheels ship no cascades.
    assert cv2.__version__.startswith("4.")
    assert haar_cascade_path() is not None
    detector = create_detector(HAAR)
    assert detector.kind == "haar"
    assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []


@pytest.mark.shared
def test_haar_finds_a_real_face_and_the_preprocessor_crops_it(ck_face: np.ndarray) -> None:
    scene = _scene(ck_face)
    pre = FacePreprocessor(FaceParams(), create_detector(HAAR))
    face = pre.detector.best(scene)
    assert face is not None
    x, y, w, h = face.box
    assert abs((x + w / 2) - 320) < 25 and abs((y + h / 2) - 220) < 25 and w > 150
    batch = pre.process([scene, np.zeros_like(scene), scene])
    assert isinstance(batch, np.ndarray) and batch.shape == (2, 1, 64, 64)
    assert pre.process([np.zeros_like(scene)]) == Invalid(ReasonCode.NO_FACE)
    assert pre.process([]) == Invalid(ReasonCode.NO_FRAMES)


@pytest.mark.shared
def test_detect_width_reports_boxes_in_frame_pixels(ck_face: np.ndarray) -> None:
    scene = _scene(ck_face)
    full = create_detector(HAAR).best(scene)
    small = create_detector(FaceDetectorOptions(kind="haar", detect_width=320)).best(scene)
    assert full is not None and small is not None
    assert all(abs(a - b) <= 0.15 * full.box[2] for a, b in zip(full.box, small.box))


@pytest.mark.shared
def test_yunet_from_a_model_path(ck_face: np.ndarray, shared_dir: Path) -> None:
    model = shared_dir / "models" / "face_detectors" / "yunet_n_640_640.onnx"
    detector = create_detector(FaceDetectorOptions(kind="yunet", model_path=model, select="confident"))
    face = detector.best(_scene(ck_face))
    assert face is not None and face.score > 0.6 and face.landmarks is not None and len(face.landmarks) == 5


def test_yunet_needs_an_existing_model() -> None:
    with pytest.raises(ConfigError, match="model_path is required for the yunet detector"):
        FaceDetectorOptions(kind="yunet")
    with pytest.raises(ConfigError, match="YuNet model_path /nope.onnx does not exist"):
        create_detector(FaceDetectorOptions(kind="yunet", model_path=Path("/nope.onnx")))


def test_detector_refuses_non_images() -> None:
    with pytest.raises(InputError, match="frame must be a uint8 HxW or HxWx3 image, got float32"):
        create_detector(HAAR).detect(np.zeros((10, 10), np.float32))
