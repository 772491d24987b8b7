"""`edge-mer run --replay DEMO --fast --fusion-rule reliability`: the real pipeline with the reliability rule."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_mer.names import NO_EVIDENCE
from edge_mer.pipeline.session_run import demo_session_path
from edge_mer.results import Decision

DEMO = demo_session_path()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(DEMO), "--fast", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def _decisions(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _without_latency(decision: dict[str, Any]) -> dict[str, Any]:
    """A decision less its timings, which differ from run to run."""
    modalities = {m: {k: v for k, v in r.items() if k != "latency_ms"} for m, r in decision["modalities"].items()}
    return {**{k: v for k, v in decision.items() if k != "latency_ms"}, "modalities": modalities}


def test_reliability_rule_on_the_demo_session_reports_its_weights(tmp_path: Path) -> None:
    decisions = _decisions(_run("--fusion-rule", "reliability", "--reliability-contradiction-factor", "0",
                                cwd=tmp_path))
    assert len(decisions) >= 10
    for data in decisions:
        decision = Decision.from_json(data)
        assert decision.to_json()["fusion_weights"] == data["fusion_weights"]
        assert decision.label != NO_EVIDENCE and math.isclose(sum(decision.probs.values()), 1.0, abs_tol=1e-5)
        weights = data["fusion_weights"]
        assert set(weights) == set(data["modalities"])
        assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-5)
        assert all(weights[m] == 0.0 for m, r in data["modalities"].items() if not r["valid"])
    # Once every modality is valid the demo's face (happy, the most skilled) leads the fusion.
    all_valid = [d for d in decisions if all(r["valid"] for r in d["modalities"].values())]
    assert all_valid and all(d["fusion_weights"]["face"] > 0.5 for d in all_valid)


def test_fusion_reliability_table_and_flags_map_to_the_same_fields(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[fusion]\nrule = "reliability"\n[fusion.reliability]\ncontradiction_factor = 0.0\n'
                      'confidence = "entropy"\n')
    by_file = _decisions(_run("--config", str(config), cwd=tmp_path))
    by_flags = _decisions(_run("--fusion-rule", "reliability", "--reliability-contradiction-factor", "0",
                               "--reliability-confidence", "entropy", cwd=tmp_path))
    assert [_without_latency(d) for d in by_file] == [_without_latency(d) for d in by_flags]


@pytest.mark.parametrize("args, message", [
    (["--reliability-max-disagreement", "1.5"],
     "fusion.reliability: max_disagreement must be a number in 0..1, got 1.5"),
    (["--reliability-confidence", "median"],
     "fusion.reliability.confidence: expected one of 'top', 'entropy', got 'median'"),
])
def test_bad_reliability_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = _run("--fusion-rule", "reliability", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"edge-mer: error: {message}"]
