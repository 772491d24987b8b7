from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_mer.bundle import default_bundle_path


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_info_reports_versions_backends_and_default_bundle(tmp_path: Path) -> None:
    result = _cli("info", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["backends"]["onnxruntime"] == "available"
    assert info["backends"]["tensorrt"] != "available"  # no TensorRT on this host: the reason is shown
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert info["packages"]["onnxruntime"] and info["brainflow"]
    assert "edge-mer-default" in info["default_bundle"]
    text = _cli("info", cwd=tmp_path)
    assert text.returncode == 0 and "default bundle edge-mer-default" in text.stdout


def test_info_bundle_validates(tmp_path: Path) -> None:
    result = _cli("info", "--bundle", str(default_bundle_path()))
    assert result.returncode == 0, result.stderr
    assert "bundle OK" in result.stdout


def test_tampered_bundle_exits_2_with_one_line_naming_the_file(tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(default_bundle_path(), tmp_path / "bundle"))
    model = next((bundle / "face").glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    result = _cli("info", "--bundle", str(bundle))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(model.resolve()) in lines[0] and "integrity" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["info", "--bundle", "/no/such/bundle"], "bundle directory /no/such/bundle does not exist"),
])
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"edge-mer: error: {message}"
