"""A regular (non-editable) install carries the renamed packages and the default bundle."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_runs_from_any_directory(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("edge_mer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edge_mer_export/__init__.py" in names and "edge_mer_calibration/face.py" in names
    assert not any(n.startswith(("export/", "calibration/")) for n in names)
    assert "edge_mer/assets/default_bundle/manifest.json" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(site))
    code = ("import edge_mer, edge_mer_export, edge_mer_calibration.face, sys; "
            "from edge_mer.cli.main import main; print(edge_mer.__file__); sys.exit(main(['info', '--json']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first.startswith(str(site)), f"imported {first}, not the installed copy"
    assert f'{site}/edge_mer/assets/default_bundle' in rest
