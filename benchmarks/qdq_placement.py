"""Where an INT8 Q/DQ model is quantized: per operator type, which inputs and outputs pass through Q/DQ.

For the attention and transformer heads this shows the placement the
closing notes and README describe (Q/DQ on both operands of every MatMul,
Softmax and LayerNormalization in float, the mask path in float):

    python benchmarks/qdq_placement.py edge_mer/assets/default_bundle/fusion/attention_head.int8.onnx [--json]

A "quantized input" is one produced by a DequantizeLinear; a "quantized
output" is one read by a QuantizeLinear. Shape-only and Q/DQ nodes are not listed.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import onnx

from edge_mer_export.qdq_lint import index_graph, is_attention_matmul

SKIP = {"QuantizeLinear", "DequantizeLinear", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Reshape",
        "Transpose", "Concat", "Slice", "Identity", "Flatten", "Expand", "Cast"}


def placement(path: Path) -> dict[str, dict[str, int]]:
    """Per operator type: nodes, nodes with every / some / no activation input quantized, nodes whose output is."""
    model = onnx.load(str(path))
    g = index_graph(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {init.name for init in model.graph.initializer}
    table: dict[str, Counter] = {}
    for node in model.graph.node:
        if node.op_type in SKIP:
            continue
        kind = "MatMul (attention)" if node.op_type == "MatMul" and is_attention_matmul(node, g) else node.op_type
        inputs = [n for n in node.input if n and n not in weights]
        quantized = [n for n in inputs if n in producers and producers[n].op_type == "DequantizeLinear"]
        row = table.setdefault(kind, Counter())
        row["nodes"] += 1
        row["all inputs quantized" if inputs and len(quantized) == len(inputs) else
            "some inputs quantized" if quantized else "float inputs"] += 1
        if any(c.op_type == "QuantizeLinear" for out in node.output for c in consumers.get(out, ())):
            row["output quantized"] += 1
    return {kind: dict(counts) for kind, counts in sorted(table.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    report = {str(path): placement(path) for path in args.models}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    columns = ("nodes", "all inputs quantized", "some inputs quantized", "float inputs", "output quantized")
    for path, table in report.items():
        print(f"\n{path}\n| op | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
        for kind, row in table.items():
            print(f"| {kind} | " + " | ".join(str(row.get(c, 0)) for c in columns) + " |")


if __name__ == "__main__":
    main()
