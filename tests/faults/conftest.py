"""The fault suite: bad input, hostile files, signals, dying sensors, NaN models, HTTP abuse.

Every test here is one *case*, and a test may add sub-cases (fuzz examples,
one per bad file) through the :func:`fault_case` fixture or, from another
process, by appending JSON lines to ``$EDGE_MER_FAULT_LOG``
(``{"case": ..., "outcome": "handled"|"traceback"|"crash"|"hang", "loss_s": {...}}``).
At the end pytest prints one line::

    faults: N cases, N handled, 0 tracebacks, 0 crashes, 0 hangs, lost <= 2 s

A failed test counts as a ``hang`` when it timed out, a ``traceback`` when a
traceback appears in its report (the tests put a child's stderr there), and a
``crash`` otherwise.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

OUTCOMES = ("handled", "traceback", "crash", "hang")
_LOG_ENV = "EDGE_MER_FAULT_LOG"
#: nodeid -> outcome of each fault test run in this session (reports carry no config to hang it on).
_ITEMS: dict[str, str] = {}


def _log_path(config: pytest.Config) -> Path:
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    folder = Path(cache.makedir("faults")) if cache is not None else Path(tempfile.gettempdir())
    return folder / f"faults-{os.getpid()}.jsonl"


def pytest_configure(config: pytest.Config) -> None:
    path = _log_path(config)
    path.unlink(missing_ok=True)
    os.environ[_LOG_ENV] = str(path)  # children (the daemon under test, helper scripts) append here
    _ITEMS.clear()


def _classify(report: pytest.TestReport) -> str:
    if report.passed or report.skipped:
        return "handled"
    text = str(report.longrepr)
    if "Timeout" in text:
        return "hang"
    if "Traceback (most recent call last)" in text:
        return "traceback"
    return "crash"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if not report.skipped:
            _ITEMS[report.nodeid] = _classify(report)


@pytest.fixture
def fault_case() -> Callable[..., None]:
    """Record a sub-case: ``fault_case(name, outcome="handled", loss_s=None)``."""
    def record(name: str, outcome: str = "handled", loss_s: dict[str, float] | None = None) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        with open(os.environ[_LOG_ENV], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": name, "outcome": outcome, "loss_s": loss_s}) + "\n")

    return record


def _sub_cases(path: Path) -> Iterator[dict]:
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            yield entry


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    if not _ITEMS:
        return
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in _ITEMS.values():
        counts[outcome] += 1
    lost = 0.0
    for entry in _sub_cases(Path(os.environ.get(_LOG_ENV, ""))):
        outcome = entry.get("outcome", "handled")
        counts[outcome if outcome in counts else "crash"] += 1
        for seconds in (entry.get("loss_s") or {}).values():
            lost = max(lost, float(seconds))
    total = sum(counts.values())
    terminalreporter.write_line(
        f"faults: {total} cases, {counts['handled']} handled, {counts['traceback']} tracebacks, "
        f"{counts['crash']} crashes, {counts['hang']} hangs, lost <= {max(lost, 0.0):.2g} s")
