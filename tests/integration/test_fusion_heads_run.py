"""`edge-mer run --fusion-head NAME` runs every head the default bundle ships, at every precision it ships."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_checks import assert_one_line_error, run_cli

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.sessions import demo_session_path

HEADS = load_bundle(default_bundle_path()).manifest.fusion.named_heads()
CASES = [(name, precision) for name, head in HEADS.items() for precision in head.models]


def _decisions(tmp_path: Path, *flags: str) -> list[dict]:
    out = tmp_path / "decisions.jsonl"
    result = run_cli("run", "--replay", str(demo_session_path()), "--fast", "--jsonl", str(out), *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_bundle_ships_the_seed_systems_heads() -> None:
    assert {"stacked", "attention", "transformer", "compound"} <= set(HEADS)
    for name in ("attention", "transformer"):
        embedded = [t.name for t in HEADS[name].inputs if t.kind == "embedding"]
        assert {"face.embedding", "speech.embedding"} <= set(embedded), (name, embedded)


@pytest.mark.parametrize(("head", "precision"), CASES)
def test_each_head_runs_in_the_daemon(tmp_path: Path, head: str, precision: str) -> None:
    decisions = _decisions(tmp_path, "--fusion-head", head, "--precision", precision)
    assert len(decisions) >= 10
    multilabel = any(t.kind == "multilabel" for t in HEADS[head].outputs)
    fused = [d for d in decisions if d["label"] != "unknown"]
    assert fused, decisions[:2]
    for d in decisions:
        assert abs(sum(d["probs"].values()) - 1.0) < 1e-4
        assert ("labels_active" in d) == multilabel
        if multilabel:
            labels = next(t for t in HEADS[head].outputs if t.kind == "multilabel").labels
            assert set(d["labels_active"]) <= set(labels)
            assert all(0.0 <= s <= 1.0 for s in d["labels_active"].values())
    out = next(t for t in HEADS[head].outputs if t.kind in ("probs", "logits"))
    both = [d for d in fused if sum(m["valid"] for m in d["modalities"].values()) >= 2]
    assert both and all(set(d["probs"]) <= set(out.labels) for d in both)  # the head's own distribution
    lone = [d for d in fused if [m for m, r in d["modalities"].items() if r["valid"]] == ["face"]]
    assert all(d["label"] == d["modalities"]["face"]["label"] for d in lone)  # a lone modality passes through


def test_an_unknown_head_is_one_line(tmp_path: Path) -> None:
    result = run_cli("run", "--replay", str(demo_session_path()), "--fast", "--fusion-head", "nope", cwd=tmp_path)
    assert_one_line_error(result, "fusion head 'nope' is not in bundle")
    result = run_cli("run", "--replay", str(demo_session_path()), "--fast", "--fusion-head", "stacked",
                     "--fusion-rule", "weighted_mean", cwd=tmp_path)
    assert_one_line_error(result, "fusion.head 'stacked' is run by the fusion rule 'learned'")
