"""FP16 and INT8 versions of the default bundle's encoders, on real data prepared by the runtime's preprocessing.

Measured here (ONNX Runtime CPU): float16 vs float32 probabilities, max |diff|
1.8e-3 for face on 56 CK+48 crops (3.0e-3 over all 925 CK+48 crops, mean
1.4e-4), 1.1e-3 for speech on 25 EMO-DB windows, 4.4e-4 for EEG on 36 GU
windows, argmax identical on these sets.  INT8 argmax agreement with FP32 on
the calibration windows: face 0.98-1.0, speech 1.0, EEG 0.97-1.0 across
entropy/minmax/percentile.  The assertions leave a margin below those figures.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import soundfile as sf
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from edge_mer.bundle import Bundle, default_bundle_path, load_bundle
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.eeg import EegPreprocessor
from edge_mer.preprocess.face import prepare_crops
from edge_mer_calibration.eeg import GU_CHANNELS, GU_RATE, gu_windows
from edge_mer_export.fp16 import make_fp16
from edge_mer_export.int8 import make_int8
from edge_mer_export.onnx_checks import prepare_model, run_model
from edge_mer_export.qdq_lint import lint_qdq

pytestmark = pytest.mark.shared

Feeds = list[dict[str, np.ndarray]]

#: Minimum INT8/FP32 argmax agreement on the calibration windows, per encoder.
INT8_AGREEMENT = {"face": 0.9, "speech": 0.95, "eeg": 0.9}
#: Largest FP16/FP32 probability difference accepted (measured values in the module docstring).
FP16_MAX_DIFF = 5e-3


class ListReader(CalibrationDataReader):
    def __init__(self, feeds: Feeds) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def prepared(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("prepared")
    return {name: prepare_model(bundle.path(bundle.encoder(name).models["fp32"]), out / f"{name}.onnx")
            for name in ("face", "speech", "eeg")}


def face_feeds(bundle: Bundle, shared: Path) -> Feeds:
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
              for folder in sorted((shared / "data" / "face" / "ckplus48").iterdir())
              for p in sorted(folder.glob("*.png"))[::6][:8]]
    batch = prepare_crops(images, bundle.encoder("face").preprocessing)
    return [{"input_1": batch[i:i + 8]} for i in range(0, len(batch), 8)]


def speech_feeds(bundle: Bundle, shared: Path) -> Feeds:
    pre = AudioPreprocessor(bundle.encoder("speech").preprocessing)
    feeds = []
    for i, path in enumerate(sorted((shared / "data" / "speech" / "emodb").glob("*.wav"))[::17]):
        samples, rate = sf.read(str(path), dtype="float32")
        window = samples if i % 2 else samples[: int(1.5 * rate)]  # windows of 2 s and 1.5 s: T differs
        features = pre.process(window, rate)
        if isinstance(features, np.ndarray):
            feeds.append({"logmel": features[None]})
    return feeds


def eeg_feeds(bundle: Bundle, shared: Path) -> Feeds:
    params = bundle.encoder("eeg").preprocessing
    pre = EegPreprocessor(params)
    windows = [pre.process(w, GU_CHANNELS, GU_RATE)
               for path in sorted((shared / "data" / "eeg" / "gu").glob("sub*.mat"))[:6]
               for w in gu_windows(path, params, hop_s=2.0)]
    batch = np.stack([w for w in windows if isinstance(w, np.ndarray)])
    return [{"de": batch[i:i + 6]} for i in range(0, len(batch), 6)]


@pytest.fixture(scope="module")
def feeds(bundle: Bundle, shared_dir: Path) -> dict[str, Feeds]:
    return {"face": face_feeds(bundle, shared_dir), "speech": speech_feeds(bundle, shared_dir),
            "eeg": eeg_feeds(bundle, shared_dir)}


def outputs(model: Path, feeds: Feeds) -> np.ndarray:
    return np.concatenate([run_model(model, f, optimize=True)["probs"] for f in feeds])


def test_the_data_is_real_and_varied(feeds: dict[str, Feeds]) -> None:
    assert sum(len(f["input_1"]) for f in feeds["face"]) == 56
    assert {f["logmel"].shape[-1] for f in feeds["speech"]} == {151, 201}
    assert sum(len(f["de"]) for f in feeds["eeg"]) >= 30


@pytest.mark.parametrize("name", ["face", "speech", "eeg"])
def test_fp16_real_encoders(name: str, prepared: dict[str, Path], feeds: dict[str, Feeds], tmp_path: Path) -> None:
    dst = make_fp16(prepared[name], tmp_path / f"{name}.fp16.onnx")
    model = onnx.load(str(dst))
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == \
           [(i.name, TensorProto.FLOAT) for i in onnx.load(str(prepared[name])).graph.input]
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    ref, got = outputs(prepared[name], feeds[name]), outputs(dst, feeds[name])
    assert got.dtype == np.float32
    diff = float(np.abs(got - ref).max())
    assert diff <= FP16_MAX_DIFF, f"{name}: fp16 max |diff| {diff:.2e}"
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile"])
@pytest.mark.parametrize("name", ["face", "speech", "eeg"])
def test_int8_real_encoders(name: str, method: str, prepared: dict[str, Path], feeds: dict[str, Feeds],
                            tmp_path: Path) -> None:
    data = feeds[name]
    dst = make_int8(prepared[name], tmp_path / f"{name}.int8.onnx", lambda: ListReader(data), method=method,
                    cache_dir=tmp_path / "cache")
    assert lint_qdq(dst) == []
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Softmax"} <= ops
    ref, got = outputs(prepared[name], data), outputs(dst, data)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    assert agreement >= INT8_AGREEMENT[name], f"{name}/{method}: int8 agreement {agreement:.3f}"


def test_lint_catches_edits_of_a_real_int8_model(prepared: dict[str, Path], feeds: dict[str, Feeds],
                                                 tmp_path: Path) -> None:
    dst = make_int8(prepared["face"], tmp_path / "face.int8.onnx", lambda: ListReader(feeds["face"]),
                    method="minmax")
    model = onnx.load(str(dst))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input_1")
    zp = next(i for i in model.graph.initializer if i.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(5, np.int8), zp.name))
    problems = lint_qdq(model)
    assert any(p.startswith(f"QuantizeLinear {q.name!r}: zero point {zp.name!r} is [5], expected 0") for p in problems)
    zp.CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), zp.name))
    problems = lint_qdq(model)
    assert f"QuantizeLinear {q.name!r}: quantized type is uint8, expected int8 (TensorRT explicit INT8 is " \
           "signed)" in problems
