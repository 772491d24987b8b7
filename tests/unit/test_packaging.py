"""The layout rules of the design card, checked on the source tree."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIRS = {"edge_mer": "edge_mer", "export": "edge_mer_export", "calibration": "edge_mer_calibration"}


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


def test_layer_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml: host tools point one way, the runtime is layered, no cycles."""
    lint = Path(sys.executable).with_name("lint-imports")  # installed with the [dev] extra
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


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
    assert command == "scripts/test"
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
    script = (ROOT / "scripts" / "test").read_text()
    # It installs what PyAudio compiles against, makes the venv, installs [dev] and runs pytest.
    assert "portaudio19-dev" in script and "python3 -m venv .venv" in script
    assert ".venv/bin/pip install -q -e '.[dev]'" in script and "exec .venv/bin/python -m pytest" in script


def test_scripts_test_names_missing_packages_in_one_line_when_it_cannot_install() -> None:
    import os
    import subprocess

    if os.geteuid() == 0:
        # As root it would install them; run it as an unprivileged user when the host has one.
        import pwd

        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no unprivileged user to run scripts/test as")
        user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    else:
        user = []
    # A copy whose package list names one that is surely not installed, so nothing else runs.
    script = (ROOT / "scripts" / "test").read_text().replace("PACKAGES=(portaudio19-dev mosquitto chromium chromium-driver)",
                                                             "PACKAGES=(edge-mer-no-such-package)")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # no sudo rights for nobody
    # Fed on stdin from "/", which any user may read: the script stops before touching a venv.
    result = subprocess.run([*user, "bash", "-s"], input=script, capture_output=True, text=True,
                            timeout=60, env=env, cwd="/")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "scripts/test: missing system packages: edge-mer-no-such-package; "
        "install them with: sudo apt-get install edge-mer-no-such-package"]


def test_deploy_example_configuration_is_valid() -> None:
    from edge_mer.config import from_dict, read_toml
    from edge_mer.pipeline.config import RunConfig

    config = from_dict(RunConfig, read_toml(ROOT / "deploy" / "jetson.toml"))
    assert config.eeg.board.board == "CYTON_BOARD" and config.face.camera.api == "gstreamer"
    assert "nvarguscamerasrc" in config.face.camera.device
    assert config.face.detector.kind == "blazeface" and config.face.max_faces == 4


def test_the_run_command_never_imports_the_host_tools() -> None:
    code = ("import sys; from edge_mer.cli.main import build_parser; build_parser(['run', '--fast']); "
            "print(sorted(m for m in sys.modules if m.startswith(('edge_mer_export', 'edge_mer_calibration'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
