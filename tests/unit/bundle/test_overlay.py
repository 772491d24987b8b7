"""Bundle overlays: merge over a hash-pinned base, overlay files kept inside the overlay, one-line refusals."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import make_face_model
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import MANIFEST, sha256_file
from edge_mer.bundle.overlay import OVERLAY_FORMAT
from edge_mer.errors import BundleError, IntegrityError

CALIBRATION = {"temperature": 2.0, "dataset": "session s", "split": "all windows", "n": 40, "ece_before": 0.2,
               "ece_after": 0.05}


def _overlay(root: Path, base: Path, *, base_ref: str | None = None, encoders: dict | None = None,
             calibrations: dict | None = None, **extra: Any) -> Path:
    """Write an overlay manifest into ``root`` over ``base`` (relative path unless ``base_ref`` is given)."""
    root.mkdir(parents=True, exist_ok=True)
    data = {"format": OVERLAY_FORMAT, "name": "tiny+user", "version": "0.0.1",
            "base": {"bundle": base_ref or os.path.relpath(base, root),
                     "manifest_sha256": sha256_file(base / MANIFEST), "name": "tiny", "version": "0.0.1"},
            "encoders": encoders or {}, "calibrations": calibrations or {}, **extra}
    (root / MANIFEST).write_text(json.dumps(data))
    return root


def _face_entry(base: Path, path: str, root: Path, seed: int = 1) -> dict:
    """The base's face encoder entry with its model replaced by a new one at ``root/path``."""
    make_face_model(root / path, seed=seed)
    entry = json.loads((base / MANIFEST).read_text())["encoders"]["face"]
    return dict(entry, models={"fp32": {"path": path, "sha256": sha256_file(root / path)}})


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_overlay_replaces_encoders_and_calibrates_the_rest(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    entry = _face_entry(tiny_bundle, "user/face.onnx", root)
    _overlay(root, tiny_bundle, encoders={"face_user": entry}, calibrations={"face": CALIBRATION})
    bundle = load_bundle(root)
    assert set(bundle.manifest.encoders) == {"face", "face_user"}
    assert bundle.manifest.name == "tiny+user"
    assert bundle.encoder("face").calibration.temperature == 2.0
    assert bundle.encoder("face_user").calibration is None
    # Overlay files resolve in the overlay, base files in the base.
    assert bundle.model_ref("face_user").file.path == root.resolve() / "user" / "face.onnx"
    assert bundle.model_ref("face").file.path == tiny_bundle.resolve() / "face" / "model.onnx"
    assert bundle.overlay is not None and bundle.overlay.base_root == tiny_bundle.resolve()
    assert bundle.manifest.fusion == load_bundle(tiny_bundle).manifest.fusion
    assert "overlay of tiny 0.0.1 at" in bundle.summary() and "calibrations of face" in bundle.summary()


def test_an_overlay_entry_replaces_the_base_entry_of_that_name(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    _overlay(root, tiny_bundle, encoders={"face": _face_entry(tiny_bundle, "user/face.onnx", root)})
    bundle = load_bundle(root)
    assert bundle.encoder("face").models["fp32"].path == "user/face.onnx"
    assert bundle.model_ref("face").file.path.is_relative_to(root.resolve())


def test_base_by_absolute_path_and_the_default_marker(tiny_bundle: Path, tmp_path: Path) -> None:
    absolute = _overlay(tmp_path / "abs", tiny_bundle, base_ref=str(tiny_bundle.resolve()),
                        calibrations={"face": CALIBRATION})
    assert load_bundle(absolute).overlay.base_root == tiny_bundle.resolve()
    default = tmp_path / "default"
    default.mkdir()
    data = {"format": OVERLAY_FORMAT, "name": "default+user", "version": "1",
            "base": {"bundle": "default", "manifest_sha256": sha256_file(default_bundle_path() / MANIFEST)},
            "calibrations": {"speech": CALIBRATION}}
    (default / MANIFEST).write_text(json.dumps(data))
    bundle = load_bundle(default)
    assert bundle.overlay.base_root == default_bundle_path().resolve()
    assert bundle.encoder("speech").calibration.temperature == 2.0
    # an encoder the overlay does not name keeps the base's own calibration
    assert bundle.encoder("face").calibration == load_bundle(default_bundle_path()).encoder("face").calibration


def test_a_changed_base_manifest_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _overlay(tmp_path / "overlay", tiny_bundle, calibrations={"face": CALIBRATION})
    data = json.loads((tiny_bundle / MANIFEST).read_text())
    data["description"] = "retrained"
    (tiny_bundle / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert "has changed since this overlay was made" in _one_line(exc)


def test_a_missing_base_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _overlay(tmp_path / "overlay", tiny_bundle, base_ref="../nowhere")
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert "is missing" in _one_line(exc) and "nowhere" in str(exc.value)


def test_an_overlay_cannot_be_the_base_of_an_overlay(tiny_bundle: Path, tmp_path: Path) -> None:
    first = _overlay(tmp_path / "first", tiny_bundle, calibrations={"face": CALIBRATION})
    second = _overlay(tmp_path / "second", first)
    with pytest.raises(BundleError) as exc:
        load_bundle(second)
    assert "is itself an overlay" in _one_line(exc)


@pytest.mark.parametrize("path, expected", [
    ("../escape.onnx", "without '..'"),
    ("/etc/escape.onnx", "without '..'"),
    ("user/../../escape.onnx", "without '..'"),
])
def test_overlay_paths_must_stay_inside_the_overlay(tiny_bundle: Path, tmp_path: Path, path: str,
                                                    expected: str) -> None:
    root = tmp_path / "overlay"
    entry = _face_entry(tiny_bundle, "user/face.onnx", root)
    entry["models"]["fp32"]["path"] = path
    _overlay(root, tiny_bundle, encoders={"face_user": entry})
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert expected in _one_line(exc)


def test_a_symlink_out_of_the_overlay_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    outside = make_face_model(tmp_path / "elsewhere" / "face.onnx", seed=3)
    (root / "user").mkdir(parents=True)
    (root / "user" / "face.onnx").symlink_to(outside)
    entry = json.loads((tiny_bundle / MANIFEST).read_text())["encoders"]["face"]
    entry = dict(entry, models={"fp32": {"path": "user/face.onnx", "sha256": sha256_file(outside)}})
    _overlay(root, tiny_bundle, encoders={"face_user": entry})
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert "outside the bundle directory" in _one_line(exc)


def test_a_tampered_overlay_file_fails_its_integrity_check(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    _overlay(root, tiny_bundle, encoders={"face_user": _face_entry(tiny_bundle, "user/face.onnx", root)})
    make_face_model(root / "user" / "face.onnx", seed=9)  # other weights, same path
    with pytest.raises(IntegrityError) as exc:
        load_bundle(root)
    assert "fails its integrity check" in _one_line(exc)


def test_overlay_files_need_paths_of_their_own(tiny_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    _overlay(root, tiny_bundle, encoders={"face_user": _face_entry(tiny_bundle, "face/model.onnx", root)})
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert "has the path of a base bundle file" in _one_line(exc)


def test_an_oversized_overlay_file_is_refused_unread(tiny_bundle: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_mer.bundle import overlay

    monkeypatch.setattr(overlay, "MAX_OVERLAY_FILE_BYTES", 100)
    root = tmp_path / "overlay"
    _overlay(root, tiny_bundle, encoders={"face_user": _face_entry(tiny_bundle, "user/face.onnx", root)})
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert "more than the 100 an overlay file may have" in _one_line(exc)


@pytest.mark.parametrize("change, expected", [
    ({"calibrations": {"nope": CALIBRATION}}, "calibrations.nope: not an encoder of the base"),
    ({"calibrations": {"face": dict(CALIBRATION, temperature=1e9)}}, "temperature must be in"),
    ({"calibrations": {"face": dict(CALIBRATION, extra=1)}}, "unknown key calibrations.face.extra"),
    ({"surprise": 1}, "unknown key surprise"),
    ({"base": {"bundle": "default"}}, "missing required key base.manifest_sha256"),
    ({"base": {"bundle": "default", "manifest_sha256": "abc"}}, "expected 64 lowercase hex digits"),
    ({"name": 5}, "name=5: expected a string"),
    ({"encoders": []}, "encoders: expected a table"),
])
def test_malformed_overlays_are_one_line_errors(tiny_bundle: Path, tmp_path: Path, change: dict,
                                                expected: str) -> None:
    root = _overlay(tmp_path / "overlay", tiny_bundle)
    data = json.loads((root / MANIFEST).read_text())
    (root / MANIFEST).write_text(json.dumps({**data, **change}))
    with pytest.raises(BundleError) as exc:
        load_bundle(root)
    assert expected in _one_line(exc)
