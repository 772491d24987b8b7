"""Running the real `edge-mer` CLI from tests, and the one-line user-error check its fault tests share."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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


def wait_until(check: Callable[[], T], what: str, timeout_s: float = 20.0, interval_s: float = 0.05) -> T:
    """The first truthy ``check()`` within ``timeout_s``; an AssertionError naming ``what`` after that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")
