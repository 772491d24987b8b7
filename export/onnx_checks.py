"""Checking and preparing an FP32 ONNX model before conversion.

:func:`prepare_model` is the first export step.  It refuses a model that
fails ``onnx.checker`` (full check), then runs ONNX Runtime's own
quantization pre-processing (``quant_pre_process``): symbolic shape inference
(which handles dynamic axes such as the speech model's ``T``), ONNX Runtime's
*basic* graph optimizations (constant folding, Conv+BatchNormalization and
Conv+Add fusion, Identity/Dropout elimination; basic level emits standard
ONNX operators only) and ONNX shape inference.  onnxsim was not used: it
needs concrete input shapes to fold, and fixing ``T`` would change the
model's dynamic axes.

The result must keep input/output names, dtypes and axes (dynamic ones by
name) identical, contain only standard-domain operators, pass the checker,
and match the source numerically on a seeded random input.  The helpers here
(:func:`load_checked`, :func:`io_signature`, :func:`sample_feed`,
:func:`run_model`) are shared by the FP16 and INT8 steps.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

# onnxruntime is reached through the backend module, which imports it with its telemetry off.
from edge_mer.backends.onnxrt import first_line, onnxruntime_module, ort_errors
from edge_mer_export.errors import ExportError

log = logging.getLogger(__name__)

#: Domains of standard ONNX operators (what TensorRT's ONNX parser reads without plugins).
STANDARD_DOMAINS = ("", "ai.onnx")

#: Sizes given to unnamed or unlisted dynamic axes in test inputs: batch axis, any other axis.
DEFAULT_BATCH, DEFAULT_DYNAMIC = 2, 128

Signature = list[tuple[str, str, int, tuple[int | str | None, ...]]]


def load_checked(path: Path) -> onnx.ModelProto:
    """Load ``path`` and run ``onnx.checker`` with ``full_check`` (shape inference included)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model {path} does not exist")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path} fails the ONNX checker: {first_line(exc)}") from None
    return onnx.load(str(path))


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds (initializers listed as inputs by old exporters are left out)."""
    initializers = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in initializers]


def io_signature(model: onnx.ModelProto) -> Signature:
    """(kind, name, element type, axes) of every fed input and every output; dynamic axes by name."""
    rows = [("input", vi.name, vi.type.tensor_type.elem_type, _dims(vi)) for vi in graph_inputs(model)]
    rows += [("output", vi.name, vi.type.tensor_type.elem_type, _dims(vi)) for vi in model.graph.output]
    return rows


def _same_tensor(old: tuple, new: tuple) -> bool:
    # An axis the source left unknown (None) may become known; every other axis must stay as it was.
    if old[:3] != new[:3] or len(old[3]) != len(new[3]):
        return False
    return all(a is None or a == b for a, b in zip(old[3], new[3]))


def check_signature(before: onnx.ModelProto, after: onnx.ModelProto, where: Path) -> None:
    """Refuse ``after`` if its inputs/outputs differ from ``before`` (names, dtypes, axes).

    An axis the source leaves unknown may become a known size; fixed and
    named dynamic axes must stay exactly as they were.
    """
    old, new = io_signature(before), io_signature(after)
    if len(old) == len(new) and all(_same_tensor(a, b) for a, b in zip(old, new)):
        return
    changed = next((f"{a} -> {b}" for a, b in zip(old, new) if not _same_tensor(a, b)),
                   f"{len(old)} -> {len(new)} tensors")
    raise ExportError(f"{where}: conversion changed the model's inputs/outputs ({changed}); expected them identical")


def strip_unused_opsets(model: onnx.ModelProto) -> None:
    """Drop opset imports no node uses (ORT's optimizer lists every domain it knows)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    used |= {f.domain for f in model.functions} | {n.domain for f in model.functions for n in f.node}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def check_standard_ops(model: onnx.ModelProto, where: Path) -> None:
    """Refuse operators outside the standard ONNX domain (TensorRT would need plugins for them)."""
    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS:
            raise ExportError(f"{where}: node {node.name or node.op_type!r} is {node.domain}.{node.op_type}; "
                              "expected standard ONNX operators only")


def check_rewritten(before: onnx.ModelProto, after: onnx.ModelProto, where: Path, what: str) -> None:
    """``after`` (a rewrite of ``before``) uses standard ops, keeps the I/O signature and passes the checker."""
    check_standard_ops(after, where)
    check_signature(before, after, where)
    try:
        onnx.checker.check_model(after, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{where}: the {what} model fails the ONNX checker: {first_line(exc)}") from None


def sample_feed(model: onnx.ModelProto, dims: Mapping[str, int] | None = None, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """A seeded random input for every fed input; dynamic axes take ``dims[name]`` or a default size."""
    dims = dims or {}
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in graph_inputs(model):
        shape = []
        for axis, dim in enumerate(_dims(vi)):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str) and dim in dims:
                shape.append(int(dims[dim]))
            else:
                shape.append(DEFAULT_BATCH if axis == 0 else DEFAULT_DYNAMIC)
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feed[vi.name] = rng.random(shape) < 0.5
        else:
            feed[vi.name] = rng.integers(0, 4, size=shape).astype(dtype)
    return feed


def run_model(model: onnx.ModelProto | Path, feed: Mapping[str, np.ndarray], *, optimize: bool = False
              ) -> dict[str, np.ndarray]:
    """Outputs of ``model`` on ONNX Runtime's CPU provider; without ``optimize`` the graph runs as written."""
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feed))))
    except ort_errors() as exc:
        where = model if isinstance(model, Path) else (model.graph.name or "model")
        raise ExportError(f"ONNX Runtime cannot run {where}: {first_line(exc)}") from None


def max_difference(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
                   ) -> tuple[str, float]:
    """The output with the largest absolute difference and that difference (inf when non-finite)."""
    worst, worst_name = -1.0, ""
    for name, ref in reference.items():
        diff = np.abs(candidate[name].astype(np.float64) - ref.astype(np.float64))
        if diff.size == 0:
            continue
        value = float(diff.max()) if np.isfinite(diff).all() else float("inf")
        if value > worst:
            worst, worst_name = value, name
    return worst_name, worst


def _pre_process(src: Path) -> onnx.ModelProto:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edge-mer-prepare-") as tmp:
        out = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(out))
        except (*ort_errors(), ImportError, ValueError, RuntimeError, AssertionError, KeyError,
                onnx.shape_inference.InferenceError) as exc:  # ImportError: symbolic inference needs sympy
            raise ExportError(f"{src}: shape inference or graph optimization failed: {first_line(exc)}") from None
        return onnx.load(str(out))


def prepare_model(src: Path, dst: Path, *, dims: Mapping[str, int] | None = None, atol: float = 1e-5) -> Path:
    """Check, shape-infer and constant-fold ``src`` into ``dst``; verified equal to ``src`` within ``atol``.

    ``dims`` sizes dynamic axes for the numerical check (default: batch 2,
    other dynamic axes 128).  Outputs must agree within ``atol`` absolute plus
    ``atol`` relative.  Raises :class:`ExportError` naming the file on a
    checker failure, a changed signature, a non-standard operator or a
    numerical mismatch.
    """
    src, dst = Path(src), Path(dst)
    model = load_checked(src)
    prepared = _pre_process(src)
    strip_unused_opsets(prepared)
    for prop in model.metadata_props:
        if prop.key not in {p.key for p in prepared.metadata_props}:
            prepared.metadata_props.add(key=prop.key, value=prop.value)
    check_rewritten(model, prepared, src, "prepared")
    feed = sample_feed(model, dims)
    reference, candidate = run_model(model, feed), run_model(prepared, feed)
    for name, ref in reference.items():
        if not np.allclose(candidate[name], ref, rtol=atol, atol=atol):
            diff = float(np.abs(candidate[name].astype(np.float64) - ref).max())
            raise ExportError(f"{src}: prepared output {name!r} differs by {diff:.3g} on a random input; "
                              f"expected within {atol:g}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(prepared, str(dst))
    name, diff = max_difference(reference, candidate)
    log.info("prepared %s -> %s: %d -> %d nodes, max |diff| %.2g (%s)", src.name, dst, len(model.graph.node),
             len(prepared.graph.node), diff, name)
    return dst
