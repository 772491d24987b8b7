"""edge_mer.bench.fusion and its report sections, on real bundles with real ONNX Runtime sessions.

The default bundle gives every registered rule and its shipped heads; the
tiny bundle of ``tests/head_models.py`` adds a head with an ``embedding``
input beside its default head; the one-encoder ``tiny_bundle`` has no head
at all. No timing thresholds: only that every row is there and positive.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_mer.backends.options import BackendOptions
from edge_mer.bench.fusion import bench_encoders_of, bench_heads, bench_rules, example_ticks, head_feed
from edge_mer.bench.report import HEADERS, render_markdown, render_text
from edge_mer.bench.run import BenchConfig, run_bench
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.schema import TensorInfo
from edge_mer.fusion.registry import RULE_NAMES
from head_models import embedding_bundle

ITERATIONS = 10


def _check_timed(r: dict[str, Any], where: str) -> None:
    assert "skipped" not in r, (where, r)
    assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["max_us"], (where, r)
    assert r["mean_us"] > 0 and math.isfinite(r["mean_us"]) and r["iterations"] == ITERATIONS, (where, r)


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_bench(BenchConfig(encoders=False, pipeline=False, face_path=False, iterations=ITERATIONS, warmup=2))


def test_only_the_fusion_sections_when_the_rest_is_off(result: dict[str, Any]) -> None:
    assert {"fusion_rules", "fusion_heads"} <= set(result)
    assert not {"encoders", "pipeline", "face_path"} & set(result)
    assert result["config"]["fusion"] is True


def test_every_rule_is_timed_on_face_speech_and_eeg(result: dict[str, Any]) -> None:
    section = result["fusion_rules"]
    assert section["encoders"] == ["face", "speech", "eeg"]
    rules = section["rules"]
    assert tuple(rules)[:len(RULE_NAMES)] == RULE_NAMES
    assert {"monte_carlo", "learned"} <= set(rules)
    for name in RULE_NAMES:
        _check_timed(rules[name], name)
    heads = load_bundle(default_bundle_path()).manifest.fusion.named_heads()
    # ``learned`` on every shipped head besides the default one, timed or saying why it cannot run.
    assert set(rules) - set(RULE_NAMES) == {f"learned:{name}" for name in list(heads)[1:]}


def test_every_head_at_every_precision_it_ships(result: dict[str, Any]) -> None:
    heads = load_bundle(default_bundle_path()).manifest.fusion.named_heads()
    section = result["fusion_heads"]
    assert list(section) == list(heads) and "stacked" in section
    for name, head in heads.items():
        assert list(section[name]) == list(head.models), name
        for precision, r in section[name].items():
            _check_timed(r, f"{name} {precision}")
            assert r["backend"] == "onnxruntime"
            assert r["gate"] == ("passed" if head.precisions[precision].passed else "failed")


def test_text_and_markdown_sections(result: dict[str, Any]) -> None:
    text = render_text(result)
    assert "Fusion rules: fuse() per tick on valid face, speech, eeg results" in text
    assert "Fusion heads: the backend alone, batch 1, every modality present" in text
    lines = [line.split() for line in text.splitlines()]
    for name, r in result["fusion_rules"]["rules"].items():
        row = next(line for line in lines if line and line[0] == name)
        assert row[1:5] == [f"{r[k]:.1f}" for k in ("p50_us", "p90_us", "p99_us", "max_us")], name
    for name, per_precision in result["fusion_heads"].items():
        for precision, r in per_precision.items():
            row = next(line for line in lines if line[:2] == [name, precision])
            assert row[2:] == [f"{r[k]:.1f}" for k in ("p50_us", "p90_us", "p99_us", "max_us")] + [r["gate"]]
    tables = [t for t in _indented_runs(text) if t[0].split()[:2] in (["fusion", "rule"], ["fusion", "head"])]
    assert len(tables) == 2
    for table in tables:
        assert len({len(line) for line in table}) == 1, table  # aligned
    md = render_markdown(result)
    assert "| " + " | ".join(HEADERS["fusion_rules"]) + " |" in md
    assert "| " + " | ".join(HEADERS["fusion_heads"]) + " |" in md
    for name in RULE_NAMES:
        assert any(line.startswith(f"| {name} | ") for line in md.splitlines()), name


def _indented_runs(text: str) -> list[list[str]]:
    runs, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("  "):
            current.append(line)
        elif current:
            runs.append(current)
            current = []
    return runs


def test_requested_precisions_and_skips_in_the_report(result: dict[str, Any]) -> None:
    bundle = load_bundle(default_bundle_path())
    only = bench_heads(bundle, BackendOptions(), ("int8",), warmup=1, iterations=ITERATIONS)
    for name, head in bundle.manifest.fusion.named_heads().items():
        assert list(only[name]) == ["int8"]
        if "int8" in head.models:
            _check_timed(only[name]["int8"], name)
    shown = dict(result, fusion_heads={"stacked": {"fp8": {"skipped": "no fp8 model in the bundle"}}},
                 fusion_rules={"encoders": ["face"], "rules": {"learned": {"skipped": "bundle x has no fusion head"}}})
    md = render_markdown(shown)
    assert "| stacked | fp8 | skipped: no fp8 model in the bundle |  |  |  |  |" in md
    assert "| learned | skipped: bundle x has no fusion head |  |  |  |" in md


def test_a_head_with_an_embedding_input_and_a_second_head(tmp_path: Path) -> None:
    bundle = load_bundle(embedding_bundle(tmp_path / "bundle"))
    heads = bench_heads(bundle, BackendOptions(), warmup=1, iterations=ITERATIONS)
    assert list(heads) == ["stacked", "emb"]
    for name in heads:
        _check_timed(heads[name]["fp32"], name)
        assert heads[name]["fp32"]["gate"] is None  # no export gate recorded for these heads
    rules = bench_rules(bundle, BackendOptions(), warmup=1, iterations=ITERATIONS)
    assert rules["encoders"] == ["face"]
    assert set(rules["rules"]) == set(RULE_NAMES) | {"learned:emb"}
    for name, r in rules["rules"].items():
        _check_timed(r, name)


def test_a_bundle_without_a_head_says_why_learned_is_skipped(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    rules = bench_rules(bundle, BackendOptions(), warmup=1, iterations=ITERATIONS)["rules"]
    assert "has no fusion head" in rules["learned"]["skipped"]
    for name in set(RULE_NAMES) - {"learned"}:
        _check_timed(rules[name], name)
    assert bench_heads(bundle, BackendOptions(), warmup=1, iterations=ITERATIONS) == {}


def test_example_ticks_and_head_feeds() -> None:
    bundle = load_bundle(default_bundle_path())
    encoders = bench_encoders_of(bundle)
    ticks = example_ticks(bundle, encoders, np.random.default_rng(0), ticks=3)
    assert len(ticks) == 3 and ticks[0] != ticks[1]
    for tick in ticks:
        assert [r.encoder for r in tick] == encoders and all(r.valid for r in tick)
        for r in tick:
            spec = bundle.encoder(r.encoder)
            assert set(r.probs) == set(spec.label_map.values())
            assert math.isclose(sum(r.probs.values()), 1.0, abs_tol=1e-9)
            widths = {o.name: o.shape[-1] for o in spec.outputs if o.kind == "embedding"}
            assert {k: v.shape[0] for k, v in r.embeddings.items()} == widths
    rng = np.random.default_rng(0)
    probs = head_feed(TensorInfo("face", ("N", 7), kind="probs", labels=tuple("abcdefg")), rng)
    assert probs.shape == (1, 7) and probs.dtype == np.float32 and math.isclose(probs.sum(), 1.0, rel_tol=1e-6)
    emb = head_feed(TensorInfo("face.embedding", ("N", 128), dtype="float16", kind="embedding"), rng)
    assert emb.shape == (1, 128) and emb.dtype == np.float16 and 0 < np.abs(emb).max() < 1
    mask = head_feed(TensorInfo("mask", (1, 3), labels=("face", "speech", "eeg")), rng)
    assert mask.tolist() == [[1.0, 1.0, 1.0]]
