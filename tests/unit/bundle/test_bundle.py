from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_mer.bundle import load_bundle
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.writer import manifest_json
from edge_mer.errors import BundleError, IntegrityError


def _edit(root: Path, change) -> None:
    path = root / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_round_trip_is_lossless(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    again = parse_manifest(json.loads(manifest_json(bundle.manifest)))
    assert again == bundle.manifest
    ref = bundle.model_ref("face", "fp32")
    assert ref.file.path == tiny_bundle.resolve() / "face" / "model.onnx"
    assert "tiny 0.0.1" in bundle.summary()


def test_loading_creates_no_session(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("load_bundle must not create an inference session")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    load_bundle(tiny_bundle)


def test_tampered_file_is_refused_naming_it(tiny_bundle: Path) -> None:
    model = tiny_bundle / "face" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        load_bundle(tiny_bundle)
    message = str(info.value)
    assert str(model.resolve()) in message and "sha256" in message and "\n" not in message


def test_swapped_model_with_other_weights_is_refused(tiny_bundle: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = tiny_bundle / "face" / "model.onnx"
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + np.float32(1.0), "W"))
    onnx.save(model, str(path))
    with pytest.raises(IntegrityError, match="model.onnx fails its integrity check"):
        load_bundle(tiny_bundle)


def test_missing_file_and_missing_manifest(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / "face" / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"bundle file .*model.onnx is missing"):
        load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="edge-mer-bundle/9"), "format 'edge-mer-bundle/9' is not supported"),
    (lambda d: d["encoders"]["face"].update(colour="grey"), "unknown key encoders.face.colour"),
    (lambda d: d["encoders"]["face"]["preprocessing"].update(margin=3.0), "margin must be in 0..1, got 3.0"),
    (lambda d: d["encoders"]["face"]["label_map"].update(angry="furious"), "label_map.angry = 'furious'"),
    (lambda d: d["encoders"]["face"]["label_map"].pop("sad"), "label_map lacks the model label 'sad'"),
    (lambda d: d["encoders"]["face"]["models"].pop("fp32"), "models needs an fp32 entry"),
    (lambda d: d["encoders"]["face"].update(modality="smell"), "encoders.face.modality: expected one of"),
    (lambda d: d["fusion"]["weights"].update(voice=1.0), "fusion.weights names unknown encoder 'voice'"),
    (lambda d: d["affect"]["valence_arousal"].pop("fear"), "valence_arousal lacks canonical labels ['fear']"),
])
def test_schema_errors_are_one_line_and_name_the_key(tiny_bundle: Path, change, message: str) -> None:
    _edit(tiny_bundle, change)
    with pytest.raises(BundleError) as info:
        load_bundle(tiny_bundle)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_onnx_signature_must_match_manifest(tiny_bundle: Path) -> None:
    _edit(tiny_bundle, lambda d: d["encoders"]["face"]["inputs"][0].update(shape=["N", 1, 48, 48]))
    with pytest.raises(BundleError, match="tensor input_1 axis 2 is 64 in the model, 48 in the manifest"):
        load_bundle(tiny_bundle)


def test_onnx_names_must_match_manifest(tiny_bundle: Path) -> None:
    _edit(tiny_bundle, lambda d: d["encoders"]["face"]["outputs"][0].update(name="scores"))
    with pytest.raises(BundleError, match=r"model has tensors \['probs'\], manifest declares \['scores'\]"):
        load_bundle(tiny_bundle)


def test_garbage_model_file_is_reported(tiny_bundle: Path) -> None:
    model = tiny_bundle / "face" / "model.onnx"
    model.write_bytes(b"not a model")
    from edge_mer.bundle.writer import file_entry
    _edit(tiny_bundle, lambda d: d["encoders"]["face"]["models"]["fp32"].update(
        sha256=file_entry(tiny_bundle, "face/model.onnx").sha256))
    with pytest.raises(BundleError, match="is not a readable ONNX model"):
        load_bundle(tiny_bundle)


def test_path_escape_is_refused(tiny_bundle: Path) -> None:
    _edit(tiny_bundle, lambda d: d["encoders"]["face"]["models"]["fp32"].update(path="../outside.onnx"))
    with pytest.raises(BundleError, match="must be relative to the bundle directory"):
        load_bundle(tiny_bundle)


def test_unknown_precision_request(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="encoder 'face' has no int8 model"):
        bundle.model_ref("face", "int8")
    with pytest.raises(BundleError, match="has no encoder 'voice'"):
        bundle.model_ref("voice")


def test_copy_of_bundle_elsewhere_still_loads(tiny_bundle: Path, tmp_path: Path) -> None:
    moved = shutil.copytree(tiny_bundle, tmp_path / "moved")
    assert load_bundle(moved).root == moved.resolve()


def test_file_entry_records_external_data_and_content_digest(tiny_bundle: Path) -> None:
    import onnx

    from edge_mer.bundle.loader import sha256_file
    from edge_mer.bundle.writer import external_data_of, file_entry

    model_path = tiny_bundle / "face" / "model.onnx"
    assert external_data_of(tiny_bundle, "face/model.onnx") == []
    plain = file_entry(tiny_bundle, "face/model.onnx")
    assert plain.external_data == () and plain.content_sha256 == plain.sha256
    onnx.save_model(onnx.load(str(model_path)), str(model_path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    entry = file_entry(tiny_bundle, "face/model.onnx")
    assert [e.path for e in entry.external_data] == ["face/w.bin"]
    assert entry.external_data[0].sha256 == sha256_file(tiny_bundle / "face" / "w.bin")
    assert entry.content_sha256 not in (entry.sha256, plain.sha256)
    (tiny_bundle / "face" / "notes.txt").write_text("not a model")
    assert external_data_of(tiny_bundle, "face/notes.txt") == []  # the loader reports non-models itself
