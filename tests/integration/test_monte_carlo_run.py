"""`edge-mer run --replay DEMO --fast --fusion-rule monte_carlo`: the real pipeline with the Monte-Carlo rule."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from cli_checks import assert_one_line_error, run_cli
from edge_mer.names import NO_EVIDENCE
from edge_mer.pipeline.session_run import demo_session_path
from edge_mer.results import Decision

DEMO = demo_session_path()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--replay", str(DEMO), "--fast", "--fusion-rule", "monte_carlo", *args, cwd=cwd)


def _decisions(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _without_latency(decision: dict[str, Any]) -> dict[str, Any]:
    """A decision less its timings, which differ from run to run."""
    modalities = {m: {k: v for k, v in r.items() if k != "latency_ms"} for m, r in decision["modalities"].items()}
    return {**{k: v for k, v in decision.items() if k != "latency_ms"}, "modalities": modalities}


def test_every_decision_with_evidence_has_a_sane_uncertainty(tmp_path: Path) -> None:
    decisions = _decisions(_run("--mc-samples", "300", "--mc-level", "0.8", cwd=tmp_path))
    assert len(decisions) >= 10
    with_evidence = [d for d in decisions if any(r["valid"] for r in d["modalities"].values())]
    assert with_evidence
    for data in decisions:
        if data not in with_evidence:
            assert data["label"] == NO_EVIDENCE and "uncertainty" not in data
            continue
        u = data["uncertainty"]
        assert set(u) == {"label", "entropy", "agreement", "interval", "level", "samples"}
        assert u["samples"] == 300 and u["level"] == 0.8
        assert 0 < u["entropy"] <= math.log(len(data["probs"])) + 1e-9
        assert 0 < u["agreement"] <= 1
        lo, hi = u["interval"]
        assert 0 <= lo < hi <= 1
        decision = Decision.from_json(data)
        assert decision.uncertainty is not None and decision.to_json()["uncertainty"] == u
        assert math.isclose(sum(decision.probs.values()), 1.0, abs_tol=1e-5)
    # The demo's face is happy throughout: the fused label is happy and most draws agree on it.
    assert all(d["label"] == "happy" for d in with_evidence)
    assert sum(d["uncertainty"]["agreement"] for d in with_evidence) / len(with_evidence) > 0.8


def test_the_same_seed_replays_the_same_decisions_and_another_seed_differs(tmp_path: Path) -> None:
    first = _decisions(_run("--mc-seed", "11", cwd=tmp_path))
    again = _decisions(_run("--mc-seed", "11", cwd=tmp_path))
    other = _decisions(_run("--mc-seed", "12", cwd=tmp_path))
    assert [_without_latency(d) for d in first] == [_without_latency(d) for d in again]
    assert len(other) == len(first)
    assert [d["uncertainty"] for d in other if "uncertainty" in d] != [d["uncertainty"] for d in first
                                                                       if "uncertainty" in d]


def test_the_config_table_and_the_flags_set_the_same_fields(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[fusion]\nrule = "monte_carlo"\n[fusion.monte_carlo]\nsamples = 50\nseed = 5\n'
                      'concentration = 20.0\n')
    by_file = _decisions(run_cli("run", "--replay", str(DEMO), "--fast", "--config", str(config), cwd=tmp_path))
    by_flags = _decisions(_run("--mc-samples", "50", "--mc-seed", "5", "--mc-concentration", "20", cwd=tmp_path))
    assert [_without_latency(d) for d in by_file] == [_without_latency(d) for d in by_flags]
    assert all(d["uncertainty"]["samples"] == 50 for d in by_file if "uncertainty" in d)


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    assert_one_line_error(_run("--mc-samples", "5", cwd=tmp_path),
                          "fusion.monte_carlo: samples must be an integer in 10..10000, got 5")
    assert_one_line_error(_run("--mc-level", "1.5", cwd=tmp_path),
                          "fusion.monte_carlo: level must be a number in (0, 1), got 1.5")
