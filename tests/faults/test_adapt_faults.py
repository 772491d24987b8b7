"""`edge-mer adapt` and overlays as a user meets them when something is wrong: one line, exit 2, no traceback.

Bad labels files, sessions that cannot give a head, an ``--out`` that is not an
overlay, an overlay whose base changed, a tampered overlay file. Each case runs
the real ``edge-mer`` in a child process.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_mer.adapt.fit import fit_linear_head
from edge_mer.adapt.head_onnx import head_model
from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import MANIFEST, sha256_file
from edge_mer.bundle.overlay import OVERLAY_FORMAT
from edge_mer.bundle.schema import TensorInfo
from edge_mer.sessions import demo_session_path
from cli_checks import assert_one_line_error as _one_line_error
from cli_checks import run_cli as _cli

DEMO = demo_session_path()


BAD_LABELS = {
    "labels.csv": ("start_s,end_s,label\n0,4,happy\n4,oops,sad\n", "line 3: end_s='oops', expected a finite number"),
    "header.csv": ("from,to,emotion\n0,4,happy\n", "header 'from,to,emotion', expected start_s,end_s,label"),
    "unknown.csv": ("start_s,end_s,label\n0,4,ecstatic\n", "label 'ecstatic' at 0..4 s is not known"),
    "overlap.json": ('[{"start": 0, "end": 5, "label": "happy"}, {"start": 4, "end": 8, "label": "sad"}]',
                     "overlaps label 'happy'"),
    "broken.json": ('{"labels": [', "is not valid JSON"),
    "labels.txt": ("0 4 happy\n", "expected a .csv (start_s,end_s,label) or .json file"),
}


@pytest.mark.parametrize("name", sorted(BAD_LABELS))
def test_a_bad_labels_file_is_one_line(name: str, tmp_path: Path) -> None:
    text, expected = BAD_LABELS[name]
    (tmp_path / name).write_text(text)
    result = _cli("adapt", "--session", str(DEMO), "--labels", name, "--out", "user", cwd=tmp_path)
    _one_line_error(result, expected)
    assert not (tmp_path / "user").exists()


def _labels(tmp_path: Path, rows: str) -> str:
    (tmp_path / "labels.csv").write_text("start_s,end_s,label\n" + rows)
    return str(tmp_path / "labels.csv")


@pytest.mark.parametrize("rows, args, expected", [
    (None, [], "has no labels; adaptation needs labelled segments"),
    ("0,8,happy\n", ["--encoder", "eeg"], "a per-user head needs at least two labels"),
    ("0,2,happy\n", ["--encoder", "face"], "4 labelled windows with labels it can output"),
    ("0,4,happy\n4,8,sad\n", ["--folds", "1"], "folds must be in 2..10, got 1"),
    ("0,4,happy\n4,8,sad\n", ["--encoder", "nope"], "has no encoder 'nope'"),
    ("0,4,happy\n4,8,sad\n", ["--encoder", "eeg", "--encoder", "eeg_cyton"], "are both eeg encoders"),
    ("0,4,happy\n4,8,sad\n", ["--step-s", "0"], "step_s must be in 0.05..10 s"),
])
def test_sessions_that_cannot_be_adapted_are_one_line(rows: str | None, args: list[str], expected: str,
                                                      tmp_path: Path) -> None:
    labels = ["--labels", _labels(tmp_path, rows)] if rows is not None else []
    result = _cli("adapt", "--session", str(DEMO), *labels, "--out", "user", *args, cwd=tmp_path)
    _one_line_error(result, expected)


def test_an_out_that_is_not_an_overlay_is_never_written(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    result = _cli("adapt", "--session", str(DEMO), "--labels", _labels(tmp_path, "0,4,happy\n"), "--out", "user",
                  cwd=tmp_path)
    _one_line_error(result, "is not empty and not an overlay written by edge-mer adapt")
    assert [p.name for p in (tmp_path / "user").iterdir()] == ["notes.txt"]


@pytest.fixture
def overlay(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the default bundle and an overlay over it with a per-user EEG head file."""
    base = tmp_path / "base"
    shutil.copytree(default_bundle_path(), base)
    rng = np.random.default_rng(0)
    head = fit_linear_head(rng.normal(size=(30, 10, 5)), np.arange(30) % 3, ("happy", "sad", "fear"), 0.1)
    data = head_model(head, TensorInfo("de", ("N", 10, 5), layout="NCF"),
                      embedding=TensorInfo("embedding", ("N", 50), kind="embedding"))  # as the shipped eeg has
    root = tmp_path / "user"
    (root / "user").mkdir(parents=True)
    (root / "user" / "eeg.onnx").write_bytes(data)
    entry = json.loads((base / MANIFEST).read_text())["encoders"]["eeg"]
    # The new head has only fp32: the base's fp16/int8 gate results are not its own.
    entry = dict(entry, models={"fp32": {"path": "user/eeg.onnx", "sha256": hashlib.sha256(data).hexdigest()}},
                 precisions={})
    manifest = {"format": OVERLAY_FORMAT, "name": "user", "version": "1",
                "base": {"bundle": "../base", "manifest_sha256": sha256_file(base / MANIFEST)},
                "encoders": {"eeg": entry}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return base, root


def test_the_overlay_runs(overlay, tmp_path: Path) -> None:
    _, root = overlay
    result = _cli("run", "--replay", str(DEMO), "--fast", "--bundle", str(root), "--no-face", "--no-speech",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"eeg":{"valid":true' in result.stdout


def test_an_overlay_whose_base_changed_is_one_line(overlay, tmp_path: Path) -> None:
    base, root = overlay
    data = json.loads((base / MANIFEST).read_text())
    data["fusion"]["weights"]["eeg"] = 0.9
    (base / MANIFEST).write_text(json.dumps(data))
    for args in (["info", "--bundle", str(root)], ["run", "--replay", str(DEMO), "--fast", "--bundle", str(root)]):
        _one_line_error(_cli(*args, cwd=tmp_path), "has changed since this overlay was made")


def test_a_tampered_overlay_file_is_one_line(overlay, tmp_path: Path) -> None:
    _, root = overlay
    head = root / "user" / "eeg.onnx"
    data = bytearray(head.read_bytes())
    data[-8] ^= 0xFF  # a flipped bit in the head's last tensor
    head.write_bytes(bytes(data))
    for args in (["info", "--bundle", str(root)], ["run", "--replay", str(DEMO), "--fast", "--bundle", str(root)]):
        _one_line_error(_cli(*args, cwd=tmp_path), "fails its integrity check")


def test_a_missing_base_is_one_line(overlay, tmp_path: Path) -> None:
    base, root = overlay
    shutil.rmtree(base)
    _one_line_error(_cli("info", "--bundle", str(root), cwd=tmp_path), "is missing")
