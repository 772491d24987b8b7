"""The layout rules of the design card, checked on the source tree."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIRS = {"edge_mer": "edge_mer", "export": "edge_mer_export", "calibration": "edge_mer_calibration"}


def _imports(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = set()
    for folder, name in DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *rel)))
    assert on_disk == listed
    assert config["package-dir"] == {v: k for k, v in DIRS.items()}


def test_dependencies_point_one_way() -> None:
    assert not _imports(ROOT / "edge_mer") & {"edge_mer_export", "edge_mer_calibration", "export", "calibration"}
    assert "edge_mer_export" not in _imports(ROOT / "calibration")


def test_import_edge_mer_loads_no_gpu_sensor_or_inference_library() -> None:
    code = ("import sys, edge_mer, edge_mer.bundle, edge_mer.backends.registry, edge_mer.backends.tensorrt, "
            "edge_mer.cli.main; heavy = {'tensorrt', 'pycuda', 'pyaudio', 'brainflow', 'onnxruntime', 'torch'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("Run the tests:", 1)[1]
    command = section.split("```sh\n", 1)[1].split("\n```", 1)[0].strip()
    assert "pytest" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_deploy_example_configuration_is_valid() -> None:
    from edge_mer.config import load_toml
    from edge_mer.pipeline.config import RunConfig

    config = load_toml(RunConfig, ROOT / "deploy" / "jetson.toml")
    assert config.eeg.board.board == "CYTON_BOARD" and config.face.camera.api == "gstreamer"
    assert "nvarguscamerasrc" in config.face.camera.device


def test_the_run_command_never_imports_the_host_tools() -> None:
    code = ("import sys; from edge_mer.cli.main import build_parser; build_parser(['run', '--fast']); "
            "print(sorted(m for m in sys.modules if m.startswith(('edge_mer_export', 'edge_mer_calibration'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
