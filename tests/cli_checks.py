"""Running the real `edge-mer` CLI from tests, and the one-line user-error check its fault tests share."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``edge-mer ARGS`` in a fresh interpreter, output captured."""
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 2, no traceback, and exactly one ``edge-mer: error:`` line that contains ``expected``."""
    err = result.stderr
    assert "Traceback" not in err, err
    assert result.returncode == 2, (result.returncode, err[-2000:])
    lines = [line for line in err.splitlines() if line.startswith("edge-mer: error:")]
    assert len(lines) == 1 and expected in lines[0], err[-2000:]
