"""Lint a Q/DQ (explicitly quantized) ONNX model against TensorRT's INT8 rules.

TensorRT 10 and 11 build explicit INT8 from QuantizeLinear/DequantizeLinear
nodes only if the quantization is signed INT8 and symmetric; every check here
names the node it found wrong:

* each Q/DQ is a standard-domain op whose quantized type is ``int8`` (an
  ``uint8`` Q/DQ, including a QuantizeLinear without zero point, which
  defaults to uint8, is refused);
* scales are constants (initializers or Constant nodes), floating point,
  finite and positive; zero points are constants, all exactly 0, shaped like
  the scale;
* per-channel (1-D scale) quantization applies to constant weights only, its
  ``axis`` is in range, has one scale per channel, and is the output-channel
  axis of the consuming op (Conv and Gemm(transB=1): 0, ConvTranspose and
  Gemm(transB=0): 1, MatMul: last); block-wise scales are refused;
* a QuantizeLinear feeds only DequantizeLinear nodes, never a graph output,
  and each Q -> DQ pair uses the same scale, zero point and axis; a
  DequantizeLinear reads a constant or a QuantizeLinear output;
* no DequantizeLinear feeds an op in :data:`NO_QDQ_OPS` (its inputs stay
  float), and no QuantizeLinear reads a probability (:data:`PROBABILITY_OPS`)
  or a normalisation's output (:data:`NORMALISATION_OPS`), except as the
  input quantization of the layer reading it: a Softmax output read only by
  attention MatMuls (the attention weights of attn·V, which TensorRT's INT8
  attention quantizes), a LayerNormalization output read only by
  Conv/Gemm/MatMul;
* attention blocks: a MatMul both of whose inputs are activations (Q·K^T,
  attn·V) has a Q -> DQ pair on each input (TensorRT runs a batched MatMul
  in INT8 only with both operands quantized; one quantized operand only
  adds rounding), and no DequantizeLinear feeds an Add whose sum a Softmax
  or LayerNormalization normalises (through shape-only ops, and element-wise
  Mul/Div/Sub/Add/Where with a constant operand, and Gather/Slice with
  constant indices, e.g. the [CLS] token before the final norm, see
  :func:`normaliser`): the additive mask and the residual stream stay float.

These two lists are policy rather than parser limits: TensorRT's
explicit-quantization guide ("Q/DQ layer-placement recommendations") fuses
Q/DQ into weighted layers (Conv, ConvTranspose, Gemm/MatMul), pooling and
element-wise Add plus the activations that follow them.  The ops listed are
not among those fusions, so TensorRT would run them in float behind extra
reformat layers, and rounding their inputs hurts: probabilities, pooled
statistics (the speech model's mean/std pooling), normalisation.  Their
outputs may be quantized for a following weighted layer (a ReduceMean
feeding a Gemm is ordinary global pooling), except probabilities in [0, 1],
on which symmetric INT8 wastes half its codes.  NVIDIA ModelOpt's ONNX
Runtime-based INT8 recipe likewise removes Softmax, Sigmoid and
InstanceNormalization from the quantized op types.  Subgraphs (If/Loop
bodies) are not inspected.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge_mer_export.errors import QdqLintError
from edge_mer_export.onnx_checks import STANDARD_DOMAINS

log = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

_PROBS = "a [0, 1] probability: TensorRT has no Q/DQ fusion for it and symmetric INT8 wastes half its codes"
_STATS = "pooled statistics (e.g. mean/std pooling): TensorRT has no Q/DQ fusion for it and INT8 rounding is " \
         "amplified through the variance"
_MATH = "normalisation arithmetic: TensorRT has no Q/DQ fusion for it and runs it in float"

#: Op types no DequantizeLinear may feed (their inputs stay float), with the reason reported.
NO_QDQ_OPS: dict[str, str] = {
    "Softmax": _PROBS, "LogSoftmax": _PROBS, "Sigmoid": _PROBS,
    "ReduceMean": _STATS, "ReduceSum": _STATS, "ReduceSumSquare": _STATS, "ReduceL2": _STATS,
    "ReduceLogSumExp": _STATS, "ReduceProd": _STATS,
    "Sqrt": _MATH, "Pow": _MATH, "Div": _MATH, "Reciprocal": _MATH, "Exp": _MATH, "Log": _MATH,
    "LayerNormalization": _MATH, "InstanceNormalization": _MATH, "GroupNormalization": _MATH,
    "LpNormalization": _MATH,
}

#: Op types whose output no QuantizeLinear may read: probabilities (Softmax: except attention weights, below).
PROBABILITY_OPS: tuple[str, ...] = ("Softmax", "LogSoftmax", "Sigmoid")
#: Normalisations whose output is quantized only as the input of a weighted layer that reads it.
NORMALISATION_OPS: tuple[str, ...] = ("LayerNormalization", "InstanceNormalization", "GroupNormalization")
#: Layers whose activation input Q/DQ TensorRT fuses into an INT8 kernel.
WEIGHTED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops that only move values: a normalisation reached through them normalises the same numbers.
SHAPE_OPS: tuple[str, ...] = ("Reshape", "Transpose", "Unsqueeze", "Squeeze", "Identity", "Flatten", "Expand", "Cast")
#: Ops that normalise their input in float (their inputs, and the sums feeding them, stay float).
NORMALISING_OPS: tuple[str, ...] = ("Softmax", "LogSoftmax", *NORMALISATION_OPS)

#: How many problems a QdqLintError message spells out.
SHOWN_PROBLEMS = 3


@dataclass
class Graph:
    """Constants, producers and consumers of a model's tensors (:func:`index_graph`)."""

    consts: dict[str, np.ndarray] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=lambda: defaultdict(list))
    outputs: set[str] = field(default_factory=set)


def index_graph(model: onnx.ModelProto) -> Graph:
    """The constants (initializers, Constant nodes), producer and consumers of every tensor of ``model``."""
    g = Graph(outputs={o.name for o in model.graph.output})
    for init in model.graph.initializer:
        g.consts[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                g.consts[node.output[0]] = numpy_helper.to_array(value.t)
        for name in node.output:
            g.producer[name] = node
        for name in node.input:
            if name:
                g.consumers[name].append(node)
    return g


def _label(node: onnx.NodeProto) -> str:
    return repr(node.name) if node.name else f"<unnamed {node.op_type} -> {node.output[0]}>"


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else int(onnx.helper.get_attribute_value(found))


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _qtype(node: onnx.NodeProto, g: Graph) -> np.dtype | None:
    """The integer type on the quantized side of a Q or DQ node (None when it cannot be told)."""
    zp = _input(node, 2)
    if zp and zp in g.consts:
        return g.consts[zp].dtype
    if node.op_type == "QuantizeLinear":
        to = _attr(node, "output_dtype", 0)
        return onnx.helper.tensor_dtype_to_np_dtype(to) if to else np.dtype(np.uint8)  # ONNX's default
    x = node.input[0]
    if x in g.consts:
        return g.consts[x].dtype
    source = g.producer.get(x)
    return _qtype(source, g) if source is not None and source.op_type == "QuantizeLinear" else None


def _weight_shape(node: onnx.NodeProto, g: Graph) -> tuple[int, ...] | None:
    """Shape of the constant a Q/DQ quantizes (through a Q for a DQ), None for an activation."""
    x = node.input[0]
    if x in g.consts:
        return g.consts[x].shape
    source = g.producer.get(x)
    if node.op_type == "DequantizeLinear" and source is not None and source.op_type == "QuantizeLinear":
        return _weight_shape(source, g)
    return None


def _expected_axis(dq: onnx.NodeProto, g: Graph, rank: int) -> tuple[int, str] | None:
    """The output-channel axis TensorRT needs for the weight a DQ feeds, with the consumer's label."""
    for user in g.consumers.get(dq.output[0], []):
        if _input(user, 1) != dq.output[0]:
            continue
        if user.op_type == "Conv":
            return 0, _label(user)
        if user.op_type == "ConvTranspose":
            return 1, _label(user)
        if user.op_type == "Gemm":
            return (0 if _attr(user, "transB", 0) else 1), _label(user)
        if user.op_type == "MatMul":
            return rank - 1, _label(user)
    return None


def _scale_problems(node: onnx.NodeProto, g: Graph, who: str) -> list[str]:
    scale_name, zp_name = node.input[1], _input(node, 2)
    scale = g.consts.get(scale_name)
    if scale is None:
        return [f"{who}: scale {scale_name!r} is not a constant; TensorRT needs scales known at build time"]
    problems = []
    if not np.issubdtype(scale.dtype, np.floating):
        problems.append(f"{who}: scale {scale_name!r} is {scale.dtype}, expected a floating-point type")
    elif scale.size == 0 or not (np.isfinite(scale).all() and (scale > 0).all()):
        problems.append(f"{who}: scale {scale_name!r} has values {scale.ravel()[:4].tolist()}..., "
                        "expected positive finite scales")
    if zp_name:
        zp = g.consts.get(zp_name)
        if zp is None:
            problems.append(f"{who}: zero point {zp_name!r} is not a constant; expected a constant 0")
        elif np.any(zp != 0):
            problems.append(f"{who}: zero point {zp_name!r} is {zp.ravel()[:4].tolist()}, expected 0 "
                            "(TensorRT INT8 is symmetric)")
        elif zp.shape != scale.shape:
            problems.append(f"{who}: zero point shape {list(zp.shape)} differs from scale shape {list(scale.shape)}")
    return problems


def _axis_problems(node: onnx.NodeProto, g: Graph, who: str) -> list[str]:
    scale = g.consts.get(node.input[1])
    if scale is None or scale.ndim == 0:
        return []
    if scale.ndim > 1:
        return [f"{who}: block-wise scale of shape {list(scale.shape)}; TensorRT INT8 takes per-tensor or "
                "per-channel scales"]
    shape = _weight_shape(node, g)
    if shape is None:
        return [f"{who}: per-channel quantization of activation {node.input[0]!r}; TensorRT quantizes "
                "activations per tensor"]
    rank, axis = len(shape), _attr(node, "axis", 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        return [f"{who}: axis {_attr(node, 'axis', 1)} is out of range for weight {node.input[0]!r} "
                f"of shape {list(shape)}"]
    if shape[axis] != scale.size:
        return [f"{who}: {scale.size} scales for axis {axis} of weight {node.input[0]!r} of shape {list(shape)}"]
    expected = _expected_axis(node, g, rank) if node.op_type == "DequantizeLinear" else None
    if expected is not None and expected[0] != axis:
        return [f"{who}: per-channel axis {axis} of weight {node.input[0]!r}, but {expected[1]} needs its "
                f"output-channel axis {expected[0]}"]
    return []


def _type_problems(node: onnx.NodeProto, g: Graph, who: str) -> list[str]:
    if node.domain not in STANDARD_DOMAINS:
        return [f"{who}: {node.domain}.{node.op_type} is not the standard ONNX op TensorRT parses"]
    qtype = _qtype(node, g)
    if qtype is None:
        return [f"{who}: cannot tell its quantized type (input {node.input[0]!r} has no constant or Q source)"]
    if qtype != np.int8:
        return [f"{who}: quantized type is {qtype}, expected int8 (TensorRT explicit INT8 is signed)"]
    return []


def _wiring_problems(node: onnx.NodeProto, g: Graph, who: str) -> list[str]:
    problems = []
    if node.op_type == "QuantizeLinear":
        out = node.output[0]
        if out in g.outputs:
            problems.append(f"{who}: its int8 output {out!r} is a graph output; expected a DequantizeLinear after it")
        for user in g.consumers.get(out, []):
            if user.op_type != "DequantizeLinear":
                problems.append(f"{who}: feeds {user.op_type} node {_label(user)}; expected only DequantizeLinear")
        return problems + _output_problems(node, g, who)
    source = g.producer.get(node.input[0])
    if node.input[0] not in g.consts:
        if source is None or source.op_type != "QuantizeLinear":
            problems.append(f"{who}: reads {node.input[0]!r}, which is neither a constant nor a QuantizeLinear output")
        else:
            problems += _pair_problems(source, node, g, who)
    for user in g.consumers.get(node.output[0], []):
        if user.op_type in NO_QDQ_OPS:
            problems.append(f"{who}: feeds {user.op_type} node {_label(user)}, {NO_QDQ_OPS[user.op_type]}")
        reader = normaliser(user.output[0], g) if user.op_type == "Add" else None
        if reader is not None:
            problems.append(f"{who}: feeds Add node {_label(user)}, whose sum {reader.op_type} node "
                            f"{_label(reader)} normalises; {_NORMALISED_SUM}")
    return problems


_NORMALISED_SUM = ("the additive attention mask and the residual stream before a normalisation stay float "
                   "(an INT8 scale set by the -1e4 mask bias would round every score to 0)")


#: Element-wise ops through which a normalisation still normalises a sum when their other operand is a constant
#: (``(scores + mask_bias) * scale -> Softmax``); a Where passes its selected value on beside a constant fill.
AFFINE_OPS: tuple[str, ...] = ("Mul", "Div", "Sub", "Add", "Where")
#: Ops selecting part of their first input by constant indices (``Gather(x, 0)``: the [CLS] token before a norm).
SELECTION_OPS: tuple[str, ...] = ("Gather", "Slice")


def _passes_on(user: onnx.NodeProto, name: str, g: Graph) -> bool:
    """Whether ``user`` carries ``name`` on: a shape op, a selection or an affine op with constant other inputs."""
    if user.op_type in SHAPE_OPS:
        return True
    if user.op_type in SELECTION_OPS:
        return user.input[0] == name and all(not i or i in g.consts for i in user.input[1:])
    if user.op_type not in AFFINE_OPS:
        return False
    if user.op_type == "Where":  # Where(condition, x, y): the value operand beside a constant fill
        values = list(user.input[1:3])
        return name in values and len(values) == 2 and values[1 - values.index(name)] in g.consts
    operands = list(user.input[:2])
    if len(operands) != 2 or name not in operands or (user.op_type == "Div" and operands[0] != name):
        return False  # const / sum is a reciprocal, not a rescaled sum
    return operands[1 - operands.index(name)] in g.consts


def normaliser(name: str, g: Graph, depth: int = 0) -> onnx.NodeProto | None:
    """The Softmax/normalisation that reads tensor ``name``, directly or through :func:`_passes_on` ops, if any."""
    for user in g.consumers.get(name, []) if depth <= 8 else []:
        if user.op_type in NORMALISING_OPS and user.input[0] == name:
            return user
        found = normaliser(user.output[0], g, depth + 1) if _passes_on(user, name, g) else None
        if found is not None:
            return found
    return None


def _is_activation(name: str, g: Graph) -> tuple[bool, bool]:
    """(is it an activation rather than a constant weight, does it come through a Q -> DQ pair)."""
    if name in g.consts:
        return False, False
    source = g.producer.get(name)
    if source is not None and source.op_type == "DequantizeLinear":
        return _weight_shape(source, g) is None, True
    return True, False


def is_attention_matmul(node: onnx.NodeProto, g: Graph) -> bool:
    """A MatMul both of whose inputs are activations (Q·K^T, attn·V), not a layer with a constant weight."""
    return node.op_type == "MatMul" and all(_is_activation(i, g)[0] for i in node.input[:2])


def _output_problems(q: onnx.NodeProto, g: Graph, who: str) -> list[str]:
    """A Q on a probability or normalisation output: allowed only as the input quantization of the layer reading it.

    Softmax output may feed (through its DQ) only attention MatMuls (the attention weights of attn·V, which
    TensorRT's INT8 attention quantizes); a normalisation's output only weighted layers (their activation
    input). The Softmax/normalisation itself runs in float either way.
    """
    source = g.producer.get(q.input[0])
    if source is None or source.op_type not in (*PROBABILITY_OPS, *NORMALISATION_OPS):
        return []
    users = [u for dq in g.consumers.get(q.output[0], []) for u in g.consumers.get(dq.output[0], [])]
    if source.op_type == "Softmax" and users and all(is_attention_matmul(u, g) for u in users):
        return []
    if source.op_type in NORMALISATION_OPS and users and all(u.op_type in WEIGHTED_OPS for u in users):
        return []
    if source.op_type in PROBABILITY_OPS:
        return [f"{who}: quantizes the output of {source.op_type} node {_label(source)}, {_PROBS}"]
    return [f"{who}: quantizes the output of {source.op_type} node {_label(source)} for a layer other than a "
            f"Conv/Gemm/MatMul; a normalisation's output is quantized only as a weighted layer's input"]


def _attention_problems(model: onnx.ModelProto, g: Graph) -> list[str]:
    """Each attention MatMul needs Q/DQ on both inputs: TensorRT runs a batched MatMul in INT8 only then."""
    problems = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or not is_attention_matmul(node, g):
            continue
        for name in node.input[:2]:
            if not _is_activation(name, g)[1]:
                problems.append(f"MatMul {_label(node)}: attention MatMul input {name!r} (both inputs are "
                                "activations) has no QuantizeLinear -> DequantizeLinear; TensorRT runs it in INT8 "
                                "only with both operands quantized")
    return problems


def _pair_problems(q: onnx.NodeProto, dq: onnx.NodeProto, g: Graph, who: str) -> list[str]:
    def params(node: onnx.NodeProto) -> tuple:
        scale, zp = g.consts.get(node.input[1]), g.consts.get(_input(node, 2))
        per_channel = scale is not None and scale.ndim > 0
        return scale, zp, _attr(node, "axis", 1) if per_channel else None

    (qs, qz, qa), (ds, dz, da) = params(q), params(dq)
    same_scale = qs is not None and ds is not None and qs.shape == ds.shape and np.array_equal(qs, ds)
    same_zp = (qz is None and dz is None) or (qz is not None and dz is not None and qz.dtype == dz.dtype
                                              and np.array_equal(qz, dz))
    if same_scale and same_zp and qa == da:
        return []
    return [f"{who}: scale, zero point or axis differ from its QuantizeLinear {_label(q)}; a Q -> DQ pair "
            "must share them"]


def lint_qdq(path: Path | str | onnx.ModelProto) -> list[str]:
    """Every problem found in the Q/DQ model at ``path`` (a ModelProto is accepted too); empty when clean."""
    model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
    g = index_graph(model)
    nodes = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    if not nodes:
        return ["the model has no QuantizeLinear/DequantizeLinear nodes; expected an explicitly quantized model"]
    problems: list[str] = []
    for node in nodes:
        who = f"{node.op_type} {_label(node)}"
        problems += _type_problems(node, g, who)
        problems += _scale_problems(node, g, who)
        problems += _axis_problems(node, g, who)
        problems += _wiring_problems(node, g, who)
    problems += _attention_problems(model, g)
    log.debug("Q/DQ lint: %d Q/DQ nodes, %d problems", len(nodes), len(problems))
    return problems


def check_qdq(path: Path | str | onnx.ModelProto, *, label: str | None = None) -> None:
    """Raise :class:`QdqLintError` naming the first problems :func:`lint_qdq` finds.

    The message starts with ``label`` (default: the path, or "model" for a ModelProto).
    """
    problems = lint_qdq(path)
    if problems:
        where = label or ("model" if isinstance(path, onnx.ModelProto) else str(path))
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        raise QdqLintError(f"{where}: {len(problems)} Q/DQ problem(s): {shown}{more}")
