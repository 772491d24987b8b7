"""Hostile bundles and detector files: every fault is one line naming the file or key, never a traceback.

Covers external-data files (hashed, listed, kept inside the bundle), operator
domains no backend runs, bounded manifests (size, nesting, numbers that size
buffers), detector model files, a bounded Hypothesis fuzz of manifest.json,
and the ``edge-mer info --bundle`` exit status on a few of these.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import MANIFEST, parse_manifest, sha256_file
from edge_mer.bundle.schema import FileEntry
from edge_mer.bundle.writer import file_entry, write_manifest
from edge_mer.errors import BundleError, ConfigError, EdgeMerError, IntegrityError
from edge_mer.preprocess.face_detect import FaceDetectorOptions, create_detector

MODEL = "face/model.onnx"
WEIGHTS = "face/face_weights.bin"


def _set_entry(root: Path, entry: FileEntry) -> None:
    """Point the face encoder's fp32 model at ``entry`` (the manifest is rewritten, files are not)."""
    manifest = parse_manifest(json.loads((root / MANIFEST).read_text()))
    spec = replace(manifest.encoders["face"], models={"fp32": entry})
    write_manifest(root, replace(manifest, encoders={"face": spec}))


def _to_external(root: Path, location: str = "face_weights.bin") -> Path:
    """Re-save the face model with every tensor in one external-data file beside it."""
    path = root / MODEL
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def _relocate(path: Path, location: str) -> None:
    """Rewrite the external-data location of every tensor of the model at ``path`` (bytes written as they are)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for item in tensor.external_data:
            if item.key == "location":
                item.value = location
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def external_bundle(tiny_bundle: Path) -> Path:
    """The tiny bundle with its face model's weights in ``face/face_weights.bin``, listed by the writer."""
    _to_external(tiny_bundle)
    _set_entry(tiny_bundle, file_entry(tiny_bundle, MODEL))
    return tiny_bundle


def _one_line_error(error: type[EdgeMerError], root: Path) -> str:
    with pytest.raises(error) as info:
        load_bundle(root)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# --- external data -------------------------------------------------------------------------------

def test_external_data_is_listed_hashed_and_runs_what_was_hashed(tiny_bundle: Path) -> None:
    embedded = (tiny_bundle / MODEL).read_bytes()
    _to_external(tiny_bundle)
    _set_entry(tiny_bundle, file_entry(tiny_bundle, MODEL))
    entry = json.loads((tiny_bundle / MANIFEST).read_text())["encoders"]["face"]["models"]["fp32"]
    assert entry["external_data"] == [{"path": WEIGHTS, "sha256": sha256_file(tiny_bundle / WEIGHTS)}]
    bundle = load_bundle(tiny_bundle)
    ref = bundle.model_ref("face")
    assert ref.file.path == (tiny_bundle / MODEL).resolve()
    assert ref.file.sha256 == bundle.encoder("face").models["fp32"].content_sha256 != entry["sha256"]
    import onnxruntime

    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 1, 64, 64)).astype(np.float32)
    with create_backend(ref, BackendOptions(name="onnxruntime")) as backend:
        out = backend.infer({"input_1": x})["probs"]
    expected = onnxruntime.InferenceSession(embedded, providers=["CPUExecutionProvider"]).run(None, {"input_1": x})[0]
    np.testing.assert_array_equal(out, expected)


def test_altered_external_weights_are_refused_naming_the_file(external_bundle: Path) -> None:
    weights = external_bundle / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x40
    weights.write_bytes(bytes(data))
    message = _one_line_error(IntegrityError, external_bundle)
    assert str(weights.resolve()) in message and "sha256" in message


def test_unlisted_external_data_file_is_refused(external_bundle: Path) -> None:
    _set_entry(external_bundle, FileEntry(MODEL, sha256_file(external_bundle / MODEL)))
    message = _one_line_error(BundleError, external_bundle)
    assert str(external_bundle.resolve() / WEIGHTS) in message and "not listed" in message


def test_listed_external_data_the_model_does_not_use_is_refused(tiny_bundle: Path) -> None:
    (tiny_bundle / WEIGHTS).write_bytes(b"spare")
    _set_entry(tiny_bundle, FileEntry(MODEL, sha256_file(tiny_bundle / MODEL),
                                      (FileEntry(WEIGHTS, sha256_file(tiny_bundle / WEIGHTS)),)))
    assert f"lists external_data {WEIGHTS}" in _one_line_error(BundleError, tiny_bundle)


def test_missing_external_data_file(external_bundle: Path) -> None:
    (external_bundle / WEIGHTS).unlink()
    assert "face_weights.bin is missing" in _one_line_error(BundleError, external_bundle)


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.bin", "sub/../../outside.bin", ""])
def test_external_data_location_outside_the_model_directory_is_refused(external_bundle: Path,
                                                                       location: str) -> None:
    _relocate(external_bundle / MODEL, location)
    _set_entry(external_bundle, FileEntry(MODEL, sha256_file(external_bundle / MODEL)))
    message = _one_line_error(BundleError, external_bundle)
    assert str((external_bundle / MODEL).resolve()) in message and repr(location) in message


def test_external_data_symlinked_out_of_the_bundle_is_refused(external_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    shutil.move(external_bundle / WEIGHTS, outside)
    (external_bundle / WEIGHTS).symlink_to(outside)
    _set_entry(external_bundle, FileEntry(MODEL, sha256_file(external_bundle / MODEL),
                                          (FileEntry(WEIGHTS, sha256_file(outside)),)))
    message = _one_line_error(BundleError, external_bundle)
    assert "face_weights.bin" in message and "outside the bundle directory" in message


def test_model_symlinked_out_of_the_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(tiny_bundle / MODEL, outside)
    (tiny_bundle / MODEL).symlink_to(outside)
    assert "outside the bundle directory" in _one_line_error(BundleError, tiny_bundle)


def test_manifests_without_external_data_are_written_and_read_as_before(tiny_bundle: Path) -> None:
    entry = json.loads((tiny_bundle / MANIFEST).read_text())["encoders"]["face"]["models"]["fp32"]
    assert set(entry) == {"path", "sha256"}  # no new key where there is nothing to list
    assert load_bundle(tiny_bundle).encoder("face").models["fp32"].external_data == ()
    assert load_bundle(default_bundle_path()).manifest.encoders


@pytest.mark.parametrize("external, message", [
    ([{"path": MODEL, "sha256": "0" * 64}], "lists itself"),
    ([{"path": WEIGHTS, "sha256": "0" * 64}] * 2, "twice"),
    ([{"path": WEIGHTS, "sha256": "0" * 64, "external_data": [{"path": "x", "sha256": "0" * 64}]}],
     "cannot list external_data"),
    ([{"path": "../w.bin", "sha256": "0" * 64}], "must be relative to the bundle directory"),
])
def test_external_data_entries_are_checked_by_the_schema(tiny_bundle: Path, external: list, message: str) -> None:
    path = tiny_bundle / MANIFEST
    data = json.loads(path.read_text())
    data["encoders"]["face"]["models"]["fp32"]["external_data"] = external
    path.write_text(json.dumps(data))
    assert message in _one_line_error(BundleError, tiny_bundle)


# --- operator domains ----------------------------------------------------------------------------

def _with_node_domain(path: Path, domain: str) -> None:
    """The face model with its Softmax replaced by an operator of ``domain``."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "Softmax")
    node.name, node.op_type, node.domain = "scores", "MySoftmax", domain
    model.opset_import.append(helper.make_opsetid(domain, 1))
    path.write_bytes(model.SerializeToString())


def test_custom_op_domain_is_refused_naming_node_domain_and_file(tiny_bundle: Path) -> None:
    _with_node_domain(tiny_bundle / MODEL, "com.example.custom")
    _set_entry(tiny_bundle, file_entry(tiny_bundle, MODEL))
    message = _one_line_error(BundleError, tiny_bundle)
    assert "'scores'" in message and "'com.example.custom'" in message and "'MySoftmax'" in message
    assert str((tiny_bundle / MODEL).resolve()) in message


def test_custom_op_inside_a_subgraph_is_refused(tiny_bundle: Path) -> None:
    model = onnx.load(str(tiny_bundle / MODEL))
    inner = helper.make_graph([helper.make_node("Weird", [], ["y"], domain="org.custom", name="deep")], "body", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    model.graph.initializer.append(cond)
    model.graph.node.append(helper.make_node("If", ["cond"], ["unused"], then_branch=inner, else_branch=inner))
    (tiny_bundle / MODEL).write_bytes(model.SerializeToString())
    _set_entry(tiny_bundle, file_entry(tiny_bundle, MODEL))
    assert "'deep'" in _one_line_error(BundleError, tiny_bundle)


@pytest.mark.parametrize("domain", ["com.microsoft", "ai.onnx.ml"])
def test_domains_a_backend_runs_are_accepted(tiny_bundle: Path, domain: str) -> None:
    _with_node_domain(tiny_bundle / MODEL, domain)
    _set_entry(tiny_bundle, file_entry(tiny_bundle, MODEL))
    load_bundle(tiny_bundle)


# --- bounded manifests ---------------------------------------------------------------------------

def _edit(root: Path, change) -> None:
    path = root / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_deeply_nested_manifest_is_one_line(tiny_bundle: Path) -> None:
    (tiny_bundle / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    assert "nests deeper than" in _one_line_error(BundleError, tiny_bundle)


def test_huge_manifest_is_one_line(tiny_bundle: Path) -> None:
    _edit(tiny_bundle, lambda d: d.update(description="x" * (5 << 20)))
    assert "bytes" in _one_line_error(BundleError, tiny_bundle)


@pytest.mark.parametrize("text, message", [
    ('{"format": ' + "9" * 5000 + "}", "number too long to read"),
    ("\xff\xfe{", "not UTF-8"),
    ('{"format": "edge-mer-bundle/1",', "not valid JSON"),
])
def test_unparsable_manifests_are_one_line(tiny_bundle: Path, text: str, message: str) -> None:
    (tiny_bundle / MANIFEST).write_bytes(text.encode("latin-1"))
    assert message in _one_line_error(BundleError, tiny_bundle)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["encoders"]["face"]["inputs"][0].update(shape=["N", 1, 10 ** 9, 64]), "dimension 1000000000"),
    (lambda d: d["encoders"]["face"]["inputs"][0].update(shape=["N"] + [2] * 20), "rank 21"),
    (lambda d: d["encoders"]["face"]["inputs"][0].update(shape=["N", 1024, 1024, 1024]), "elements"),
    (lambda d: d["encoders"]["face"]["preprocessing"].update(size=[100_000, 100_000]), "size must be"),
    (lambda d: d["encoders"]["face"]["preprocessing"].update(mean=[float("nan")]), "mean must be finite"),
    (lambda d: d["fusion"].update(weights={"face": float("inf")}), "weights.face must be a finite number"),
    (lambda d: d["fusion"].update(smoothing_half_life_s=1e12), "smoothing_half_life_s"),
    (lambda d: d.update(encoders={"../face": d["encoders"]["face"]}), "name '../face'"),
    (lambda d: d["encoders"]["face"]["models"]["fp32"].update(path="face/\x00.onnx"), "printable"),
    (lambda d: d["encoders"]["face"]["models"]["fp32"].update(path="a/" * 600), "printable"),
    (lambda d: d["encoders"]["face"]["models"]["fp32"].update(path="face/\ud800.onnx"),
     "encoders.face.models.fp32.path has a lone UTF-16 surrogate"),
])
def test_numbers_and_names_that_size_things_are_bounded(tiny_bundle: Path, change, message: str) -> None:
    _edit(tiny_bundle, change)
    assert message in _one_line_error(BundleError, tiny_bundle)


@pytest.fixture
def default_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_bundle_path(), tmp_path / "default"))


@pytest.mark.parametrize("encoder, update, message", [
    ("speech", {"sample_rate": 10 ** 9}, "sample_rate=1000000000: expected an integer in [8000, 192000]"),
    ("speech", {"sample_rate": 1e9}, "sample_rate: expected an integer, got 1000000000.0"),
    ("speech", {"n_fft": 1 << 20}, "n_fft=1048576: expected an integer in [16, 16384]"),
    ("speech", {"min_seconds": 1e12}, "min_seconds=1000000000000.0: expected a number in (0, 600]"),
    ("eeg", {"sample_rate": 10 ** 9}, "sample_rate: expected an integer in 16..100000 Hz"),
    ("eeg", {"window_s": 1e12}, "window_s: expected 0 < window_s <= 3600 s"),
    ("eeg", {"window_s": 600.0, "sample_rate": 100_000}, "more than the 4194304 samples"),
    ("eeg", {"channels": [f"C{i}" for i in range(300)]}, "channels: expected 1..256"),
])
def test_preprocessing_rates_and_windows_are_bounded(default_copy: Path, encoder: str, update: dict,
                                                     message: str) -> None:
    _edit(default_copy, lambda d: d["encoders"][encoder]["preprocessing"].update(update))
    seen = _one_line_error(BundleError, default_copy)
    assert message in seen and f"encoders.{encoder}.preprocessing" in seen


@pytest.mark.parametrize("update, message", [
    ({"num_anchors": 10 ** 9}, "num_anchors must be 1..65536"),
    ({"num_anchors": 900}, "give 896 anchors, not num_anchors 900"),
    ({"num_layers": 10 ** 6}, "num_layers must be 1..16"),
    ({"strides": [8, 16]}, "strides needs num_layers (4) values"),
    ({"input_size": [128, 10 ** 9]}, "input_size must be [width, height], each 16..1024"),
    ({"scale": [0, 128, 128, 128]}, "scale must be 4 positive numbers"),
    ({"min_score_thresh": 2}, "min_score_thresh must be in 0..1"),
    ({"keypoints": ["eye"]}, "keypoints must name num_keypoints (6) points"),
    ({"face_scale": 1e9}, "face_scale must be in 0.5..3"),
])
def test_detector_decoding_is_bounded(default_copy: Path, update: dict, message: str) -> None:
    _edit(default_copy, lambda d: d["detectors"]["blazeface"]["decoding"].update(update))
    seen = _one_line_error(BundleError, default_copy)
    assert message in seen and "detectors.blazeface.decoding" in seen


def test_altered_detector_weights_and_paths_out_of_the_bundle_are_refused(default_copy: Path) -> None:
    model = default_copy / "face" / "blazeface_short_range.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 1
    model.write_bytes(bytes(data))
    assert "blazeface_short_range.onnx fails its integrity check" in _one_line_error(IntegrityError, default_copy)
    _edit(default_copy, lambda d: d["detectors"]["blazeface"]["models"]["fp32"].update(path="../outside.onnx"))
    assert "outside.onnx" in _one_line_error(BundleError, default_copy)


# --- a bounded fuzz of manifest.json -------------------------------------------------------------

_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([0, -1, 1, 10 ** 9, 10 ** 12, 1e308, "", "fp32", "face", "N", "../x", "/abs", "a" * 300,
                     "face/\ud800.onnx", "\udcff", "a\nb", "x\x00"]),
)
_JSON = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position in a JSON tree, as key/index tuples (the root is ``()``)."""
    out = [prefix]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out += _paths(child, (*prefix, key))
    return out


#: Keys whose values reach files, buffers or arithmetic: half the mutations aim at a position whose
#: nearest key is one of them, and ``add_known`` adds one of them to an object.
_FOCUS = frozenset({"path", "sha256", "external_data", "fp32", "fp16", "int8", "shape", "size", "sample_rate",
                    "window_s", "n_fft", "n_mels", "channels", "bands", "min_seconds", "weights",
                    "smoothing_half_life_s", "cpu_latency_ms", "format", "modality"})


def _mutate(data: Any, path: tuple, op: str, value: Any, new_key: str = "x") -> Any:
    """``data`` with the node at ``path`` replaced, deleted, wrapped in a list/object, given a new key,
    or poked (a nasty character into a string, a number made 1e9 times larger)."""
    if not path:
        return value if op != "wrap" else [data]
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key, node = path[-1], parent[path[-1]]
    if op == "delete":
        del parent[key]
    elif op == "wrap":
        parent[key] = [node] if isinstance(value, list) else {"x": node}
    elif op == "add" and isinstance(node, dict):
        node[str(value)[:8]] = value
    elif op == "add_known" and isinstance(node, dict):
        node[new_key] = value
    elif op == "poke" and isinstance(node, str):  # a nasty character into a real name or path
        nasty = ["\ud800", "\x00", "\n", "/", "../", "\\", " ", "\u202e"][len(repr(value)) % 8]
        parent[key] = node[: len(node) // 2] + nasty + node[len(node) // 2:]
    elif op == "poke" and isinstance(node, (int, float)) and not isinstance(node, bool):
        parent[key] = node * 10 ** 9
    else:
        parent[key] = value
    return data


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A valid bundle (default bundle copied: three modalities, every table kind) and its manifest."""
    root = Path(shutil.copytree(default_bundle_path(), tmp_path_factory.mktemp("fuzz") / "bundle"))
    return root, json.loads((root / MANIFEST).read_text())


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_manifests_load_or_fail_with_one_line(fuzz_bundle: tuple[Path, dict], data: st.DataObject) -> None:
    root, valid = fuzz_bundle
    manifest = copy.deepcopy(valid)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(manifest)
        focused = [p for p in paths if next((k for k in reversed(p) if isinstance(k, str)), None) in _FOCUS]
        path = data.draw(st.sampled_from(paths) | st.sampled_from(focused or paths), label="path")
        op = data.draw(st.sampled_from(["replace", "delete", "wrap", "add", "add_known", "poke"]), label="op")
        key = data.draw(st.sampled_from(sorted(_FOCUS)), label="key")
        manifest = _mutate(manifest, path, op, data.draw(_JSON, label="value"), key)
    (root / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    try:
        bundle = load_bundle(root)
    except EdgeMerError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        bundle.summary()
        for name in bundle.manifest.encoders:
            bundle.model_ref(name)


_PATH_TEXT = st.lists(st.sampled_from(["a", "face", "/", ".", "..", "-", "\\", " ", "\x00", "\n", "\ud800",
                                         "\udcff", "\u202e", "é", "x" * 300, "mini_xception_fer2013.onnx"]),
                      max_size=8).map("".join)
_FILE_ENTRY = st.fixed_dictionaries({"path": _PATH_TEXT, "sha256": st.sampled_from(["0" * 64, "A" * 64, "", "0"])},
                                    optional={"external_data": st.lists(st.fixed_dictionaries(
                                        {"path": _PATH_TEXT, "sha256": st.just("0" * 64)}), max_size=2)})


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoder=st.sampled_from(["face", "speech", "eeg", "eeg_cyton"]), entry=_FILE_ENTRY)
def test_fuzzed_file_entries_load_or_fail_with_one_line(fuzz_bundle: tuple[Path, dict], encoder: str,
                                                        entry: dict) -> None:
    root, valid = fuzz_bundle
    manifest = copy.deepcopy(valid)
    manifest["encoders"][encoder]["models"]["fp32"] = entry
    (root / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(EdgeMerError) as info:  # no drawn entry names the real file with its real hash
        load_bundle(root)
    assert "\n" not in str(info.value)


# --- detector model files ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, name, content, message", [
    ("yunet", "detector.onnx", b"not a model", "is not a YuNet model OpenCV can run"),
    ("yunet", "face.onnx", None, "is not a YuNet model OpenCV can run"),  # a real ONNX, not YuNet
    ("yunet", "detector.xml", b"<opencv_storage/>", "does not end in .onnx"),
    ("yunet", "folder.onnx", "dir", "is not a file"),
    ("haar", "cascade.xml", b"hello", "is not a cascade OpenCV can load"),
    ("haar", "cascade.xml", b'<?xml version="1.0"?>\n<opencv_storage><x>1</x></opencv_storage>\n',
     "is not a cascade OpenCV can load"),
    ("haar", "missing.xml", "absent", "does not exist"),
])
def test_detector_model_files_are_one_line_errors(tmp_path: Path, capfd: pytest.CaptureFixture, kind: str,
                                                  name: str, content: Any, message: str) -> None:
    path = tmp_path / name
    if content is None:
        shutil.copyfile(next((default_bundle_path() / "face").glob("*.onnx")), path)
    elif content == "dir":
        path.mkdir()
    elif content != "absent":
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        create_detector(FaceDetectorOptions(kind=kind, model_path=path))
    text = str(info.value)
    assert message in text and str(path) in text and "expected" in text and "\n" not in text
    assert "ERROR" not in capfd.readouterr().err  # OpenCV's own multi-line log is silenced


# --- the CLI -------------------------------------------------------------------------------------

def _custom_op(root: Path) -> None:
    _with_node_domain(root / MODEL, "com.example.custom")
    _set_entry(root, file_entry(root, MODEL))


def _tampered_weights(root: Path) -> None:
    _to_external(root)
    _set_entry(root, file_entry(root, MODEL))
    (root / WEIGHTS).write_bytes(b"\0" + (root / WEIGHTS).read_bytes()[1:])


def _unlisted_weights(root: Path) -> None:
    _to_external(root)
    _set_entry(root, FileEntry(MODEL, sha256_file(root / MODEL)))


def _deep(root: Path) -> None:
    (root / MANIFEST).write_text("{\"a\": " * 100_000 + "1" + "}" * 100_000)


@pytest.mark.parametrize("spoil, message", [
    (_custom_op, "com.example.custom"), (_tampered_weights, "face_weights.bin fails its integrity check"),
    (_unlisted_weights, "face_weights.bin holds external data"), (_deep, "nests deeper than"),
])
def test_info_bundle_exits_2_with_one_line(tiny_bundle: Path, spoil, message: str) -> None:
    spoil(tiny_bundle)
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "info", "--bundle", str(tiny_bundle)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-mer: error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
