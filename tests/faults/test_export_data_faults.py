"""Hostile or broken export data: fusion-head .npz files and V/A CSVs through the real `edge-mer export`.

Each case runs the CLI in a child process and expects exit 2, exactly one
``edge-mer: error:`` line naming the problem, no traceback, and no output
bundle left behind.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.writer import write_manifest
from export_models import (face_images, head_bundle, head_rows, va_bundle, write_claimed_npz, write_head_npz,
                           write_va_csv)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-faults")
    images = face_images(root / "va" / "img", 6, seed=1)
    return {"root": root, "head": head_bundle(root / "head_bundle"), "va": va_bundle(root / "va_bundle", "face", False),
            "eval": write_head_npz(root / "eval.npz", head_rows(40, seed=1)),
            "calib": write_head_npz(root / "calib.npz", head_rows(30, seed=2)),
            "csv": write_va_csv(root / "va" / "va.csv", images, seed=3), "headless": _headless(root / "headless")}


def _headless(root: Path) -> Path:
    """The default bundle without its fusion head (the default bundle ships one)."""
    bundle = load_bundle(default_bundle_path())
    shutil.copytree(bundle.root, root)
    fusion = dataclasses.replace(bundle.manifest.fusion, rule="weighted_mean", head=None, heads={})
    write_manifest(root, dataclasses.replace(bundle.manifest, fusion=fusion))
    return root


def _npz(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        rows = head_rows(40, seed=5)
        edit(rows)
        np.savez(path, **rows)
        return path
    return make


def _csv(text: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_text("path,valence,arousal\n" + text, encoding="utf-8")
        return path
    return make


def _pop(key: str) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda rows: rows.pop(key)


def _set(key: str, value: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda rows: rows.__setitem__(key, value(rows))


#: case -> (bundle key, file maker or None, flags with {file}/{eval}/{calib}/{csv} placeholders, expected text)
HEAD = ["--head-eval", "{file}", "--precisions", "fp16"]
VA = ["--va-eval", "face={file}", "--precisions", "fp16"]
CASES = {
    "npz wrong width": ("head", _npz(_set("face", lambda r: r["face"][:, :5])), HEAD,
                        "array 'face' has shape [40, 5], the head's input is [rows, 7]"),
    "npz missing input": ("head", _npz(_pop("speech")), HEAD, "lacks array 'speech'"),
    "npz missing labels": ("head", _npz(_pop("labels")), HEAD, "lacks array 'labels'"),
    "npz unknown label": ("head", _npz(_set("labels", lambda r: np.array(["joy"] * 40))), HEAD,
                          "labels row 0 is 'joy', not one of the head's output labels"),
    "npz huge row count": ("head", lambda p: write_claimed_npz(p, "face", (10**9, 7)), HEAD,
                           "array 'face': 1000000000 rows, expected 1..200000"),
    "npz pickled labels": ("head", _npz(_set("labels", lambda r: r["labels"].astype(object))), HEAD,
                           "expected a 1-d unicode string array"),
    "npz not a zip": ("head", lambda p: (p.write_bytes(b"\x93NUMPY garbage"), p)[1], HEAD,
                      "is not a readable .npz file"),
    "npz nan": ("head", _npz(lambda r: r["face"].__setitem__((0, 0), np.nan)), HEAD,
                "input 'face' row 0 column 0 is nan, not a finite float32 value"),
    "calib is eval": ("head", None, ["--head-eval", "{eval}", "--head-calib", "{eval}"], "hold the same data"),
    "calib shares rows": ("head", lambda p: write_head_npz(p, {k: v[:10] for k, v in head_rows(40, seed=1).items()}),
                          ["--head-eval", "{eval}", "--head-calib", "{file}"], "10 rows of --head-calib"),
    "int8 without head calib": ("head", None, ["--head-eval", "{eval}"], "give --head-calib NPZ"),
    "bundle without head": ("headless", None, ["--head-eval", "{eval}"], "has no fusion.head to export"),
    "head calib without eval": ("head", None, ["--head-calib", "{calib}"], "head_calib needs head_eval"),
    "csv bad valence": ("va", _csv("img/img1_000.png,high,0.1\n"), VA, "row 2: valence 'high' is not a number"),
    "csv arousal out of range": ("va", _csv("img/img1_000.png,0.1,-7\n"), VA, "row 2: arousal '-7' is not a number"),
    "csv escapes its folder": ("va", _csv("../eval.npz,0.1,0.1\n"), VA, "row 2: path '../eval.npz' must be a relative"),
    "csv missing file": ("va", _csv("img/absent.png,0.1,0.1\n"), VA, "row 2: path 'img/absent.png' does not exist"),
    "csv wrong header": ("va", lambda p: (p.write_text("file,v,a\nx.png,0,0\n"), p)[1], VA,
                         "expected path,valence,arousal"),
    "csv short row": ("va", _csv("img/img1_000.png,0.1,0.1\nimg/img1_001.png\n"), VA, "row 3: 1 fields, expected 3"),
    "va-eval without a va output": ("default", None, ["--va-eval", "face={csv}", "--encoder", "face", "--eval",
                                                      "face={csv}"], "has no valence_arousal output"),
    "calib is the va-eval csv": ("va", None, ["--va-eval", "face={csv}", "--calib", "face={csv}"],
                                 "calibration and V/A evaluation both read"),
    "max ccc drop out of range": ("va", None, ["--va-eval", "face={csv}", "--max-ccc-drop", "3"],
                                  "max_ccc_drop must be in 0..2"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_export_data_is_one_line_exit_2(case: str, data: dict[str, Path]) -> None:
    bundle_key, make, flags, expected = CASES[case]
    slug = case.replace(" ", "_")
    folder = data["root"] / "va" if flags is VA else data["root"]  # CSV rows are relative to the CSV's folder
    file = make(folder / f"{slug}.{'csv' if flags is VA else 'npz'}") if make is not None else None
    values = {"file": str(file), "eval": str(data["eval"]), "calib": str(data["calib"]), "csv": str(data["csv"])}
    bundle = str(default_bundle_path()) if bundle_key == "default" else str(data[bundle_key])
    out = data["root"] / f"out_{slug}"
    result = _cli("export", bundle, "--out", str(out), *[f.format(**values) for f in flags])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-mer: error: ") and expected in lines[0], lines
    assert not out.exists()  # nothing half-written
