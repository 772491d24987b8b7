"""Shared fixtures: paths to ../shared, markers that skip what this host lacks."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _trt_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed on this host"
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed on this host"
    from edge_mer.backends.registry import backend_class

    return backend_class("tensorrt").availability()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    trt_reason = None
    for item in items:
        if "trt" in item.keywords:
            trt_reason = trt_reason or _trt_skip_reason() or ""
            if trt_reason:
                item.add_marker(pytest.mark.skip(reason=trt_reason))
        if "hardware" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="no camera, microphone or EEG board on this host"))
        if "shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"{SHARED} is absent (tests read real data from ../shared)"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared directory beside the project (tests using it carry the ``shared`` marker)."""
    return SHARED


def make_face_model(path: Path, classes: int = 7, seed: int = 0) -> Path:
    """A tiny real ONNX classifier with the face encoder's signature: [N,1,64,64] -> softmax [N,classes]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(1, classes)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "B")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input_1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_face",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A valid one-encoder bundle directory written through the package's own writer."""
    from edge_mer.bundle.labels import CANONICAL_LABELS
    from edge_mer.bundle.schema import FORMAT, AffectSpace, EncoderSpec, FusionSpec, Manifest, Provenance, TensorInfo
    from edge_mer.bundle.writer import file_entry, write_manifest
    from edge_mer.preprocess.face import FaceParams

    root = tmp_path / "bundle"
    make_face_model(root / "face" / "model.onnx")
    labels = CANONICAL_LABELS
    spec = EncoderSpec(
        modality="face",
        models={"fp32": file_entry(root, "face/model.onnx")},
        inputs=(TensorInfo("input_1", ("N", 1, 64, 64), layout="NCHW"),),
        outputs=(TensorInfo("probs", ("N", 7), kind="probs", labels=labels),),
        preprocessing=FaceParams(),
        label_map={label: label for label in labels},
        provenance=Provenance(source="generated in tests", training_data="none", licence="MIT"))
    affect = AffectSpace({label: (0.0, 0.0) for label in labels}, source="test")
    write_manifest(root, Manifest(FORMAT, "tiny", "0.0.1", {"face": spec}, affect,
                                  FusionSpec(weights={"face": 1.0})))
    return root


def replay_all(session, offset: int = 0):
    """Every chunk of every stream of a session (a Session or a directory), replayed fast, and the stream infos."""
    from edge_mer.sessions import replay_sources

    sources = replay_sources(session, pace=False, clock_offset_ns=offset)
    for source in sources.values():
        source.open()
    try:
        return {m: list(s) for m, s in sources.items()}, {m: s.info for m, s in sources.items()}
    finally:
        for source in sources.values():
            source.close()


@pytest.fixture(scope="session")
def demo_frames() -> list:
    """Every frame of the packaged demo session's video (120 BGR frames, 320x240, 15 fps, one real face)."""
    import cv2

    from edge_mer.pipeline.session_run import demo_session_path

    video = demo_session_path() / "video.mp4"
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened(), video
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    assert len(frames) == 120 and frames[0].shape == (240, 320, 3)  # 8 s at 15 fps
    return frames
