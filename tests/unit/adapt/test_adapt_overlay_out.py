"""Writing overlays: staged and loaded before ``--out`` changes, earlier overlays replaced, nothing else touched."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import make_face_model
from edge_mer.adapt.overlay_out import REPORT, base_reference, write_overlay
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import MANIFEST
from edge_mer.bundle.overlay import OVERLAY_FORMAT
from edge_mer.errors import BundleError, ConfigError

CALIBRATION = {"temperature": 1.5, "dataset": "session s", "split": "all", "n": 20, "ece_before": 0.3,
               "ece_after": 0.1}


def _manifest(base_dir: Path, out: Path, **changes) -> dict:
    base = load_bundle(base_dir)
    return {"format": OVERLAY_FORMAT, "name": "tiny+user", "version": "0.0.1", "base": base_reference(base, out),
            "encoders": {}, "calibrations": {"face": CALIBRATION}, **changes}


def _head(base_dir: Path, tmp_path: Path, seed: int) -> tuple[str, bytes, dict]:
    model = make_face_model(tmp_path / f"model{seed}.onnx", seed=seed).read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    path = f"user/face-{digest[:12]}.onnx"
    entry = json.loads((base_dir / MANIFEST).read_text())["encoders"]["face"]
    return path, model, dict(entry, models={"fp32": {"path": path, "sha256": digest}})


def test_the_base_is_named_relative_to_the_overlay_or_default(tiny_bundle: Path, tmp_path: Path) -> None:
    ref = base_reference(load_bundle(tiny_bundle), tmp_path / "out")
    assert ref["bundle"] == "../bundle" and ref["name"] == "tiny" and len(ref["manifest_sha256"]) == 64
    assert base_reference(load_bundle(default_bundle_path()), tmp_path / "out")["bundle"] == "default"


def test_a_new_overlay_is_written_and_loads(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bundle = write_overlay(out, _manifest(tiny_bundle, out), {}, {"hello": 1})
    assert bundle.encoder("face").calibration.temperature == 1.5
    assert json.loads((out / REPORT).read_text()) == {"hello": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "out"]  # no staging directory left


def test_an_earlier_overlay_is_replaced_and_only_its_own_stale_files_removed(tiny_bundle: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_path, old_model, old_entry = _head(tiny_bundle, tmp_path, seed=1)
    write_overlay(out, _manifest(tiny_bundle, out, encoders={"face": old_entry}, calibrations={}),
                  {old_path: old_model}, {})
    (out / "notes.txt").write_text("mine")
    new_path, new_model, new_entry = _head(tiny_bundle, tmp_path, seed=2)
    bundle = write_overlay(out, _manifest(tiny_bundle, out, encoders={"face": new_entry}, calibrations={}),
                           {new_path: new_model}, {"run": 2})
    assert bundle.encoder("face").models["fp32"].path == new_path
    assert not (out / old_path).exists() and (out / new_path).read_bytes() == new_model
    assert (out / "notes.txt").read_text() == "mine"


def test_a_directory_that_is_not_an_overlay_is_never_written(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="is not empty and not an overlay"):
        write_overlay(out, _manifest(tiny_bundle, out), {}, {})
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        write_overlay(tmp_path / "file", _manifest(tiny_bundle, tmp_path / "file"), {}, {})


def test_an_overlay_that_does_not_load_leaves_out_as_it_was(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_overlay(out, _manifest(tiny_bundle, out), {}, {"first": True})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(BundleError, match="not an encoder of the base"):
        write_overlay(out, _manifest(tiny_bundle, out, calibrations={"nope": CALIBRATION}), {}, {})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "out"]


def test_an_overlay_is_not_a_base(tiny_bundle: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    overlay = write_overlay(first, _manifest(tiny_bundle, first), {}, {})
    with pytest.raises(ConfigError, match="is an overlay; adapt from a full bundle"):
        base_reference(overlay, tmp_path / "second")
