"""The shipped INT8 heads' Q/DQ placement, read back from the files: attention MatMuls quantized, norms float."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_mer.bundle import default_bundle_path, load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from qdq_placement import placement  # noqa: E402

HEADS = {name: head for name, head in load_bundle(default_bundle_path()).manifest.fusion.named_heads().items()
         if "int8" in head.models}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_int8_heads_quantize_matmuls_and_keep_normalisation_float(name: str) -> None:
    bundle = load_bundle(default_bundle_path())
    table = placement(bundle.path(HEADS[name].models["int8"]))
    for kind in ("MatMul", "MatMul (attention)", "Gemm"):
        row = table.get(kind)
        if row:
            assert row.get("all inputs quantized", 0) == row["nodes"], (kind, row)
    for kind in ("Softmax", "LayerNormalization"):
        row = table.get(kind)
        if row:
            assert row.get("float inputs", 0) == row["nodes"], (kind, row)


def test_the_attention_head_has_attention_blocks() -> None:
    bundle = load_bundle(default_bundle_path())
    table = placement(bundle.path(HEADS["attention"].models["int8"]))
    assert table["MatMul (attention)"]["nodes"] >= 2 and table["Softmax"]["nodes"] >= 1
