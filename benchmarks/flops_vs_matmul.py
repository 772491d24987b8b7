#!/usr/bin/env python
"""Encoder FLOPs against the matrix-multiply throughput measured on the same machine, in the same run.

For every fp32 encoder of a bundle this script

1. fixes the input to the shape the daemon feeds (batch 1; the speech
   encoder's time axis is what ``AudioPreprocessor`` makes of the daemon's
   speech window, 2.0 s by default) and counts its FLOPs with
   :func:`flops.count_flops` (``benchmarks/flops.py``; a multiply-add is 2 FLOPs);
2. measures its ONNX Runtime latency at batch 1 (p50 of ``--iterations`` runs
   after warm-up, through the same backend class the daemon uses);

and, in the same process and with the same intra-op thread count, measures
the throughput of a plain float32 matrix multiply (``[n, n] @ [n, n]`` for
n = 256, 512, 1024 in a one-node ONNX Runtime graph, best n kept; numpy's
matmul for reference).  That throughput is the physical bound: an encoder
cannot finish faster than ``FLOPs / matmul throughput``, and its achieved
GFLOP/s as a percentage of the matmul's says how far from that bound it runs.

Usage::

    python benchmarks/flops_vs_matmul.py [--bundle DIR] [--threads 1] [--iterations 200]
                                         [--json OUT.json] [--append-results benchmarks/RESULTS.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The FLOP counter is a sibling module: only these host scripts count FLOPs, the device runtime never does.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import count_flops  # noqa: E402

from edge_mer.backends.options import BackendOptions, OrtOptions  # noqa: E402
from edge_mer.backends.registry import create_backend  # noqa: E402
from edge_mer.bench.encoders import example_features  # noqa: E402
from edge_mer.bench.host import host_info as runtime_host_info  # noqa: E402
from edge_mer.bundle import default_bundle_path  # noqa: E402
from edge_mer.bundle.loader import Bundle, load_bundle  # noqa: E402
from edge_mer.bundle.schema import EncoderSpec  # noqa: E402
from edge_mer.errors import EdgeMerError  # noqa: E402

log = logging.getLogger(__name__)

MATMUL_SIZES = (256, 512, 1024)
WARMUP = 10
RESULTS_TITLE = """# Benchmark results

Rows are added by the scripts in this directory; never edit a measured row by hand.

"""
RESULTS_SECTION = """## Encoder FLOPs against the measured matmul bound (`flops_vs_matmul.py`)

Each row is one fp32 encoder (of the packaged default bundle unless stated) at batch 1, with the
input shape the daemon feeds. *MFLOPs* counts a multiply-add as 2 FLOPs (`benchmarks/flops.py`).
*p50 ms* is the median ONNX Runtime latency. *matmul GFLOP/s* is the best float32 `[n,n] @ [n,n]`
throughput (n = 256, 512, 1024) that ONNX Runtime reached on the same machine, in the same run,
with the same intra-op thread count; *bound ms* = FLOPs / that throughput is the latency the
encoder could not beat, and *% of matmul* = achieved GFLOP/s / matmul GFLOP/s. The host's core
count is `os.cpu_count()`; *(VM)* marks a CPU that reports a hypervisor.

| date | host | threads | onnxruntime | encoder | input | MFLOPs | p50 ms | GFLOP/s | matmul GFLOP/s | % of matmul | bound ms |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def host_info() -> dict[str, Any]:
    """The runtime's host description plus a few ISA flags, versions and the load average."""
    import onnxruntime

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass  # not Linux: no flags to report
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "neon", "asimd")
           if f in flags]
    return {**runtime_host_info(), "virtualized": "hypervisor" in flags, "isa": isa,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def timed_runs(fn: Callable[[], object], iterations: int, budget_s: float) -> list[float]:
    """Seconds per call of ``fn``: ``WARMUP`` untimed calls, then up to ``iterations`` timed ones.

    Stops early once ``budget_s`` has elapsed and at least 3 calls are timed.
    """
    for _ in range(WARMUP):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iterations:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return times


def _stats(times: Sequence[float]) -> dict[str, float]:
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=10, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 9
    return {"runs": len(ordered), "p50_ms": statistics.median(ordered) * 1e3, "p10_ms": q[0] * 1e3,
            "p90_ms": q[-1] * 1e3, "min_ms": ordered[0] * 1e3}


def ort_session_options(threads: int) -> Any:
    """ONNX Runtime session options with ``threads`` intra-op threads (0: ORT's default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def matmul_model(n: int, seed: int = 0) -> Any:
    """A one-node ONNX graph ``Y = A @ W`` with ``A`` an input and ``W`` a constant, both ``[n, n]`` float32.

    ``W`` is an initializer so ONNX Runtime prepacks it exactly as it does encoder weights.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"])], f"matmul_{n}",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _best(per_size: dict[str, dict[str, float]]) -> dict[str, Any]:
    best_n = max(per_size, key=lambda n: per_size[n]["gflops"])
    return {"sizes": per_size, "best_n": int(best_n), "best_gflops": per_size[best_n]["gflops"]}


def measure_ort_matmul(threads: int, iterations: int, budget_s: float) -> dict[str, Any]:
    """GFLOP/s (from the p50 time) of ONNX Runtime's float32 matmul for each size in ``MATMUL_SIZES``."""
    import onnxruntime as ort

    per_size: dict[str, dict[str, float]] = {}
    for n in MATMUL_SIZES:
        session = ort.InferenceSession(matmul_model(n).SerializeToString(), sess_options=ort_session_options(threads),
                                       providers=["CPUExecutionProvider"])
        a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        stats = _stats(timed_runs(lambda: session.run(["Y"], {"A": a}), iterations, budget_s))
        per_size[str(n)] = dict(stats, gflops=2 * n**3 / (stats["p50_ms"] * 1e-3) / 1e9)
    return dict(_best(per_size), threads=threads)


def measure_numpy_matmul(threads: int, iterations: int, budget_s: float) -> dict[str, Any]:
    """The same matmuls through numpy, with BLAS limited to ``threads`` via threadpoolctl where installed."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        threadpool_info = threadpool_limits = None
    per_size: dict[str, dict[str, float]] = {}
    limit = threadpool_limits(limits=threads, user_api="blas") if threadpool_limits and threads > 0 else None
    try:
        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                for i in threadpool_info() if i.get("user_api") == "blas"] if threadpool_info else []
        for n in MATMUL_SIZES:
            rng = np.random.default_rng(1)
            a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
            stats = _stats(timed_runs(lambda: a @ b, iterations, budget_s))
            per_size[str(n)] = dict(stats, gflops=2 * n**3 / (stats["p50_ms"] * 1e-3) / 1e9)
    finally:
        if limit is not None:
            limit.restore_original_limits()
    threads_note = f"{threads} via threadpoolctl" if limit is not None else "BLAS default threads"
    return dict(_best(per_size), threads=threads_note, blas=blas or ["unknown"])


def daemon_feeds(name: str, spec: EncoderSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """The input the daemon feeds ``spec`` at batch 1 (the runtime preprocessing of random data)."""
    features = example_features(spec, np.random.default_rng(seed))
    return {spec.inputs[0].name: features[None].astype(spec.inputs[0].np_dtype)}


def measure_encoder(bundle: Bundle, name: str, threads: int, iterations: int, budget_s: float,
                    matmul_gflops: float) -> dict[str, Any]:
    """FLOPs and ORT latency of encoder ``name`` (fp32) at the daemon's input shape."""
    spec = bundle.encoder(name)
    ref = bundle.model_ref(name, "fp32")
    feeds = daemon_feeds(name, spec)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    flops = count_flops(ref.file.path, shapes)
    options = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(
        intra_op_threads=threads, inter_op_threads=1, providers=("CPUExecutionProvider",)))
    with create_backend(ref, options) as backend:
        stats = _stats(timed_runs(lambda: backend.infer(feeds), iterations, budget_s))
    achieved = flops.total / (stats["p50_ms"] * 1e-3) / 1e9
    return dict(stats, model=ref.file.path.name, input_shapes=shapes, flops=flops.total, by_op=flops.by_op,
                uncounted=list(flops.uncounted), gflops=achieved, pct_of_matmul=100.0 * achieved / matmul_gflops,
                bound_ms=flops.total / (matmul_gflops * 1e9) * 1e3)


def _shape_text(shapes: dict[str, list[int]]) -> str:
    return "; ".join(f"{k}[{'x'.join(str(d) for d in v)}]" for k, v in shapes.items())


def format_table(result: dict[str, Any]) -> str:
    """The human-readable summary printed at the end of a run."""
    host, mm, npm = result["host"], result["matmul"]["onnxruntime"], result["matmul"]["numpy"]
    lines = [f"host: {host['cpu_model']}, {host['logical_cores']} logical cores"
             f"{' (VM)' if host['virtualized'] else ''}; ISA {', '.join(host['isa']) or 'n/a'}",
             f"onnxruntime {host['onnxruntime']}, numpy {host['numpy']}, intra-op threads {result['threads']}",
             f"matmul bound: onnxruntime {mm['best_gflops']:.1f} GFLOP/s (n={mm['best_n']}); "
             f"numpy {npm['best_gflops']:.1f} GFLOP/s (n={npm['best_n']}, {npm['threads']}; {', '.join(npm['blas'])})",
             "",
             f"{'encoder':<12} {'input':<24} {'MFLOPs':>10} {'p50 ms':>9} {'GFLOP/s':>9} {'% matmul':>9} "
             f"{'bound ms':>9}"]
    for name, enc in result["encoders"].items():
        lines.append(f"{name:<12} {_shape_text(enc['input_shapes']):<24} {enc['flops'] / 1e6:>10.4g} "
                     f"{enc['p50_ms']:>9.3f} {enc['gflops']:>9.3g} {enc['pct_of_matmul']:>8.3g}% "
                     f"{enc['bound_ms']:>9.3g}")
    uncounted = sorted({op for enc in result["encoders"].values() for op in enc["uncounted"]})
    if uncounted:
        lines.append(f"ops without a FLOP formula (counted as 0): {', '.join(uncounted)}")
    return "\n".join(lines)


def append_results(path: Path, result: dict[str, Any]) -> None:
    """Add one Markdown row per encoder to this script's table in ``path``.

    The rows go right after the table's last row, so other sections of the file stay where they
    are; a missing file gets :data:`RESULTS_TITLE`, a file without the table gets :data:`RESULTS_SECTION`.
    """
    host, mm = result["host"], result["matmul"]["onnxruntime"]
    host_text = f"{host['cpu_model']}, {host['logical_cores']} cores{' (VM)' if host['virtualized'] else ''}"
    rows = [f"| {result['date']} | {host_text} | {result['threads']} | {host['onnxruntime']} | {name} | "
            f"{_shape_text(enc['input_shapes'])} | {enc['flops'] / 1e6:.4g} | {enc['p50_ms']:.3f} | "
            f"{enc['gflops']:.3g} | {mm['best_gflops']:.1f} | {enc['pct_of_matmul']:.3g} | {enc['bound_ms']:.3g} |"
            for name, enc in result["encoders"].items()]
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    table_head = RESULTS_SECTION.splitlines()[-2]
    if not lines:
        lines = RESULTS_TITLE.splitlines()
    if table_head not in lines:
        lines += ([""] if lines[-1] != "" else []) + RESULTS_SECTION.splitlines()
    end = lines.index(table_head) + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[end:end] = rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_path(),
                        help="bundle directory (default: the packaged default bundle)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for ORT and BLAS (0: library default)")
    parser.add_argument("--iterations", type=int, default=200, help="timed runs per encoder and per matmul size")
    parser.add_argument("--budget-s", type=float, default=3.0,
                        help="stop timing one measurement after this many seconds (at least 3 runs)")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--append-results", type=Path, help="append one Markdown row per encoder to this file")
    args = parser.parse_args(argv)
    if args.threads < 0 or args.iterations < 1 or args.budget_s <= 0:
        parser.error("--threads must be >= 0, --iterations >= 1 and --budget-s > 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; return the result that is printed, written and appended."""
    bundle = load_bundle(args.bundle)
    result: dict[str, Any] = {"date": datetime.date.today().isoformat(), "host": host_info(), "threads": args.threads,
                              "bundle": {"name": bundle.manifest.name, "version": bundle.manifest.version,
                                         "path": str(bundle.root)}}
    log.info("timing matmul at n=%s", ", ".join(map(str, MATMUL_SIZES)))
    ort_mm = measure_ort_matmul(args.threads, args.iterations, args.budget_s)
    result["matmul"] = {"onnxruntime": ort_mm,
                        "numpy": measure_numpy_matmul(args.threads, args.iterations, args.budget_s)}
    result["encoders"] = {}
    for name in bundle.manifest.encoders:
        log.info("timing encoder %s", name)
        result["encoders"][name] = measure_encoder(bundle, name, args.threads, args.iterations, args.budget_s,
                                                   ort_mm["best_gflops"])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with a one-line message on an edge-mer error."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        result = run(args)
    except EdgeMerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.append_results is not None:
        append_results(args.append_results, result)
        print(f"appended {len(result['encoders'])} rows to {args.append_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
