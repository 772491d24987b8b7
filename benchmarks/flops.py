"""Counting an ONNX model's floating-point operations for given input shapes.

:func:`count_flops` fixes the graph inputs to concrete shapes, runs ONNX
shape inference and sums a per-operator formula over the nodes of the main
graph.  One multiply-add counts as **2 FLOPs**, the convention under which a
matrix multiply of ``[M, K] @ [K, N]`` costs ``2*M*N*K`` and under which the
throughput of a measured matrix multiply is quoted (see
``flops_vs_matmul.py``, which imports this module as a sibling).  It lives
beside the benchmark scripts rather than in ``edge_mer``: counting FLOPs is
host-side analysis, and the device runtime never does it.

The formulas (``Y`` is the output, ``X`` the first input, ``numel`` an
element count):

* Conv: ``2 * numel(Y) * (Cin/group) * prod(kernel)``, plus ``numel(Y)`` for
  the bias add.  Depthwise and grouped convolutions fall out of the weight
  shape ``[Cout, Cin/group, k...]``.
* ConvTranspose: ``2 * numel(X) * (Cout/group) * prod(kernel)``, plus
  ``numel(Y)`` for the bias (every input element scatters one kernel).
* Gemm: ``2*M*N*K``, plus ``M*N`` for each of: the ``C`` add, an ``alpha``
  other than 1, a ``beta`` other than 1 (with ``C``).
* MatMul (numpy broadcasting, batched): ``2 * numel(Y) * K``.
* BatchNormalization (inference): 2 per element (scale and shift, after the
  mean/variance are folded, as runtimes do).
* Elementwise arithmetic (Add, Sub, Mul, Div, Sqrt, ...): 1 per output element.
* Activations: a per-element constant from :data:`ACTIVATION_FLOPS`, with one
  transcendental (exp, tanh, erf) counted as 1 FLOP.
* MaxPool / AveragePool: ``prod(kernel)`` per output element (k-1 compares or
  adds, plus the divide of the average).  GlobalAveragePool / GlobalMaxPool and
  the Reduce* family: one per input element (ReduceSumSquare, ReduceL2 and
  ReduceLogSumExp: two).

Pure data movement (Reshape, Transpose, Concat, Gather, Cast, ...) is
:data:`FREE_OPS` and costs 0.  Any other op type is reported in
:attr:`FlopCount.uncounted` and contributes 0, so a reader can see what the
total leaves out.  Nodes inside subgraphs (If, Loop, Scan) are not visited;
those op types are reported as uncounted.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_mer.errors import InputError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

#: FLOPs per output element of the activation functions (one exp/tanh/erf = 1 FLOP).
ACTIVATION_FLOPS: dict[str, int] = {
    "Relu": 1,          # max(x, 0): one compare
    "Clip": 2,          # min(max(x, lo), hi)
    "LeakyRelu": 2,     # compare + multiply
    "PRelu": 2,         # compare + multiply
    "Elu": 3,           # compare, exp, multiply-subtract
    "Selu": 4,          # Elu plus the output scale
    "Sigmoid": 4,       # 1 / (1 + exp(-x)): negate, exp, add, divide
    "HardSigmoid": 3,   # alpha*x + beta, clip
    "HardSwish": 4,     # HardSigmoid, then multiply by x
    "Tanh": 4,          # counted like Sigmoid (tanh(x) = 2*sigmoid(2x) - 1)
    "Softplus": 3,      # log(1 + exp(x))
    "Gelu": 8,          # 0.5*x*(1 + erf(x/sqrt 2)): erf + 4 arithmetic, rounded up for the tanh form
    "Softmax": 5,       # max, subtract, exp, sum, divide
    "LogSoftmax": 5,    # max, subtract, exp, sum, log-subtract
}

#: Elementwise arithmetic: 1 FLOP per output element.
ELEMENTWISE_OPS: frozenset[str] = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf",
    "Max", "Min", "Sum", "Mean", "Floor", "Ceil", "Round", "Sign",
})

#: Reductions: FLOPs per input element.
REDUCE_OPS: dict[str, int] = {
    "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceL1": 1,
    "ReduceSumSquare": 2, "ReduceL2": 2, "ReduceLogSum": 1, "ReduceLogSumExp": 2,
    "GlobalAveragePool": 1, "GlobalMaxPool": 1,
}

#: Data movement and bookkeeping: 0 FLOPs by definition, never reported as uncounted.
FREE_OPS: frozenset[str] = frozenset({
    "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "Shape", "Size", "Cast", "CastLike", "Constant",
    "ConstantOfShape", "Expand", "Tile", "Pad", "Dropout", "Range", "DepthToSpace", "SpaceToDepth",
    "ArgMax", "ArgMin", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or",
    "Where",
})

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one model at fixed input shapes (a multiply-add counts as 2).

    ``by_op`` sums the FLOPs per ONNX op type; ``uncounted`` lists op types in
    the graph that have arithmetic but no formula here (they add 0 to ``total``).
    """

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: tuple[str, ...] = ()


def count_flops(model: onnx.ModelProto | str | Path, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """Count the FLOPs of ``model`` when its graph inputs have ``input_shapes``.

    ``input_shapes`` maps each graph input to its full shape; it must cover
    every input with a dynamic dimension.  Raises :class:`InputError` for an
    unknown input name, a missing or non-positive dimension, a size that
    contradicts a fixed dimension, or a tensor whose shape inference cannot
    determine.
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    elif not isinstance(model, onnx.ModelProto):
        raise InputError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    _fix_input_shapes(fixed.graph, input_shapes)
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    shapes = _known_shapes(inferred.graph)
    by_op: dict[str, int] = {}
    uncounted: set[str] = set()
    for node in inferred.graph.node:
        formula = _FORMULAS.get(node.op_type)
        if formula is None:
            if node.op_type not in FREE_OPS:
                uncounted.add(node.op_type)
            continue
        flops = formula(node, _ShapeLookup(node, shapes))
        by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    if uncounted:
        log.debug("no FLOP formula for %s; counted as 0", ", ".join(sorted(uncounted)))
    return FlopCount(sum(by_op.values()), by_op, tuple(sorted(uncounted)))


def _fix_input_shapes(graph: Any, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Write ``input_shapes`` into the graph inputs, checking them against the declared dims."""
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    unknown = sorted(set(input_shapes) - {v.name for v in inputs})
    if unknown:
        raise InputError(f"input_shapes names {unknown[0]!r}, which is not a model input "
                         f"(inputs: {', '.join(v.name for v in inputs)})")
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        given = input_shapes.get(value.name)
        if given is None:
            missing = next(((i, d.dim_param or "?") for i, d in enumerate(dims) if not d.HasField("dim_value")), None)
            if missing is not None:
                raise InputError(f"input {value.name!r} has dynamic dimension {missing[1]!r} (axis {missing[0]}); "
                                 f"give its full shape in input_shapes")
            continue
        given = tuple(given)
        if len(given) != len(dims):
            raise InputError(f"input {value.name!r}: shape {list(given)} has rank {len(given)}, "
                             f"the model's has {len(dims)}")
        for axis, (dim, size) in enumerate(zip(dims, given)):
            name = dim.dim_param or ("?" if not dim.HasField("dim_value") else str(dim.dim_value))
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise InputError(f"input {value.name!r}: dimension {name!r} (axis {axis}) must be a positive int, "
                                 f"got {size!r}")
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise InputError(f"input {value.name!r}: axis {axis} is fixed at {dim.dim_value} in the model, "
                                 f"got {size}")
            dim.Clear()
            dim.dim_value = size


def _known_shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    """Every tensor whose shape is fully known after inference, by name."""
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = tensor.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


class _ShapeLookup:
    """Shapes of one node's inputs and outputs, raising a one-line InputError when unknown."""

    def __init__(self, node: Any, shapes: Shapes) -> None:
        self._node = node
        self._shapes = shapes

    def _get(self, name: str) -> tuple[int, ...]:
        shape = self._shapes.get(name)
        if shape is None:
            label = self._node.name or self._node.op_type
            raise InputError(f"node {label!r} ({self._node.op_type}): the shape of tensor {name!r} is unknown after "
                             f"shape inference; check input_shapes")
        return shape

    def input(self, index: int) -> tuple[int, ...]:
        return self._get(self._node.input[index])

    def output(self, index: int = 0) -> tuple[int, ...]:
        return self._get(self._node.output[index])

    def has_input(self, index: int) -> bool:
        return len(self._node.input) > index and self._node.input[index] != ""


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _conv(node: Any, s: _ShapeLookup) -> int:
    """Weight ``[Cout, Cin/group, k...]``: each output element is Cin/group * prod(k) multiply-adds."""
    weight = s.input(1)
    y = _numel(s.output())
    bias = y if s.has_input(2) else 0
    return 2 * y * _numel(weight[1:]) + bias


def _conv_transpose(node: Any, s: _ShapeLookup) -> int:
    """Weight ``[Cin, Cout/group, k...]``: each input element scatters Cout/group * prod(k) multiply-adds."""
    weight = s.input(1)
    bias = _numel(s.output()) if s.has_input(2) else 0
    return 2 * _numel(s.input(0)) * _numel(weight[1:]) + bias


def _gemm(node: Any, s: _ShapeLookup) -> int:
    """``alpha * A' @ B' + beta * C`` with ``A'`` of shape [M, K]."""
    a = s.input(0)
    m, n = s.output()
    k = a[0] if _attr(node, "transA", 0) else a[1]
    flops = 2 * m * n * k
    if _attr(node, "alpha", 1.0) != 1.0:
        flops += m * n
    if s.has_input(2):
        flops += m * n * (2 if _attr(node, "beta", 1.0) != 1.0 else 1)
    return flops


def _matmul(node: Any, s: _ShapeLookup) -> int:
    """numpy-style (batched, broadcast) matmul: every output element is a K-long dot product."""
    return 2 * _numel(s.output()) * s.input(0)[-1]


def _pool(node: Any, s: _ShapeLookup) -> int:
    """``prod(kernel_shape)`` operations per output element."""
    kernel = _attr(node, "kernel_shape", [1])
    return _numel(s.output()) * _numel(kernel)


def _per_output(flops: int) -> Callable[[Any, _ShapeLookup], int]:
    return lambda node, s: flops * _numel(s.output())


def _per_input(flops: int) -> Callable[[Any, _ShapeLookup], int]:
    return lambda node, s: flops * _numel(s.input(0))


_FORMULAS: dict[str, Callable[[Any, _ShapeLookup], int]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "BatchNormalization": _per_output(2),
    **{op: _per_output(1) for op in ELEMENTWISE_OPS},
    **{op: _per_output(f) for op, f in ACTIVATION_FLOPS.items()},
    **{op: _per_input(f) for op, f in REDUCE_OPS.items()},
}
