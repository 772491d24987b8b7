"""A run with every output off (`--jsonl ''`) runs to its end instead of stopping after the first decision."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.config import from_dict
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.session_run import build_daemon
from edge_mer.sessions import demo_session_path


def _decisions_with(outputs: dict) -> int:
    config = from_dict(RunConfig, {"replay": str(demo_session_path()), "fast": True, "rate_hz": 2.0,
                                   "eeg": {"enabled": False}, "outputs": outputs})
    with build_daemon(config, load_bundle(default_bundle_path())) as run:
        run.run(threading.Event())
        return run.daemon.scheduler.decisions


def test_with_every_output_off_the_whole_session_is_still_decided(tmp_path: Path) -> None:
    written = _decisions_with({"jsonl": str(tmp_path / "d.jsonl")})
    assert written == len((tmp_path / "d.jsonl").read_text().splitlines()) >= 10
    assert _decisions_with({"jsonl": ""}) == written  # not 1 ("every output has failed")


def test_the_cli_says_once_that_decisions_go_nowhere_and_exits_0(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(demo_session_path()),
                             "--fast", "--jsonl", "", "--no-eeg"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "" and "every output has failed" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "no output is configured" in line]
    assert len(warnings) == 1 and "decisions go nowhere" in warnings[0]
