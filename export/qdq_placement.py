"""Where INT8 Q/DQ goes: the graph rules :mod:`edge_mer_export.int8` applies around ONNX Runtime's quantizer.

ONNX Runtime's ``quantize_static`` puts a Q/DQ pair on every float input of
every node whose op type is quantized.  These functions pick the nodes it
must leave alone (``nodes_to_exclude``) and repair what it does that
TensorRT would not fuse:

* :func:`bias_adds`: an Add with a constant operand is a bias, not a
  residual, and stays float;
* :func:`normalised_adds`: an Add whose sum a Softmax or LayerNormalization
  normalises (through shape-only ops and element-wise ops with a constant
  operand, e.g. ``(scores + mask_bias) * scale``, and constant-index selections, e.g. the
  [CLS] token ``Gather`` before a transformer's final norm) stays float: in attention it adds the
  mask bias (0 or about -1e4) to the scores, whose INT8 scale would then be
  set by the mask and round every real score to 0; before a
  LayerNormalization it is the residual stream, whose mean and variance the
  normalisation takes and whose rounding it would amplify.  TensorRT runs
  both sums in float around its float Softmax/normalisation kernels;
* :func:`float_path_adds`: an Add whose non-constant inputs all derive from
  the named graph inputs alone (a head's validity ``mask``) stays float, so
  the additive mask path carries exact 0 / -1e4 values;
* :func:`fuse_residual_adds` (after quantization): the Q/DQ pair on an Add
  input a weighted layer produces is removed, so TensorRT fuses the Add into
  that layer;
* :func:`float_consumer_pairs` (after quantization): a node left float (an
  op of a type that is not quantized, or one of the Adds above) that reads
  the DequantizeLinear ONNX Runtime shares among an activation's readers
  reads the float tensor again, as it reads every other tensor;
* :func:`stem_convs`: a network's first Convs, which a caller may keep float.

Names are those :func:`named` gives (``nodes_to_exclude`` works by name).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import onnx

from edge_mer_export.qdq_lint import WEIGHTED_OPS, index_graph, normaliser

log = logging.getLogger(__name__)


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes all have unique names (nodes_to_exclude works by name)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    taken = {n.name for n in copy.graph.node if n.name}
    for i, node in enumerate(copy.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
            while node.name in taken:
                node.name += "_"
            taken.add(node.name)
    return copy


def _constants(model: onnx.ModelProto) -> set[str]:
    constants = {i.name for i in model.graph.initializer}
    return constants | {n.output[0] for n in model.graph.node if n.op_type == "Constant"}


def bias_adds(model: onnx.ModelProto) -> list[str]:
    """Names of Add nodes with a constant operand: a bias, not a residual, so left unquantized."""
    constants = _constants(model)
    return [n.name for n in model.graph.node if n.op_type == "Add" and any(i in constants for i in n.input)]


def normalised_adds(model: onnx.ModelProto) -> list[str]:
    """Names of Add nodes whose sum a Softmax or normalisation reads (the module docstring says why)."""
    g = index_graph(model)
    return [n.name for n in model.graph.node if n.op_type == "Add" and normaliser(n.output[0], g) is not None]


def float_path_adds(model: onnx.ModelProto, inputs: Sequence[str]) -> list[str]:
    """Names of Add nodes whose non-constant inputs all derive from the graph ``inputs`` alone (in graph order)."""
    derived = set(inputs)
    constants = _constants(model)
    found = []
    for node in model.graph.node:
        live = [i for i in node.input if i and i not in constants]
        if live and all(i in derived for i in live):
            derived.update(node.output)
            if node.op_type == "Add":
                found.append(node.name)
    return found


def fuse_residual_adds(model: onnx.ModelProto) -> list[str]:
    """Drop the Q/DQ pair on each Add input a weighted layer produces; return the Adds changed.

    ONNX Runtime quantizes every input of an Add.  TensorRT fuses an Add into
    the Conv/Gemm/MatMul producing one of its inputs when only the *other*
    (residual) input carries Q/DQ; a Q/DQ on the weighted layer's output
    would split that fusion.  At most one input per Add is changed, and only
    a dedicated pair (no other reader) is removed.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    readers = Counter(i for n in model.graph.node for i in n.input)
    dropped: set[str] = set()
    changed = []
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        for k, name in enumerate(add.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            source = producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if source is None or source.op_type not in WEIGHTED_OPS or readers[name] != 1 \
                    or readers[q.output[0]] != 1:
                continue
            add.input[k] = q.input[0]
            dropped.update((q.output[0], dq.output[0]))
            changed.append(add.name)
            break
    _drop(model, dropped)
    return changed


def float_consumer_pairs(model: onnx.ModelProto, quantized: Sequence[str], float_nodes: Sequence[str] = ()
                         ) -> list[str]:
    """Rewire nodes left float that read an activation's DQ to its float source; return their names.

    ONNX Runtime replaces *every* reader of a quantized activation with its
    DequantizeLinear when only one reader is quantized (``DedicatedQDQPair``
    splits the pair only among several quantized readers), so nodes it must
    leave alone read the DQ too: nodes of op types outside ``quantized``
    (the speech encoder's embedding functionals, ReduceMean/Slice/Sub over
    ``logmel``, beside the first Conv) and the nodes named in
    ``float_nodes`` (the Adds :func:`float_nodes` keeps float: a post-LN
    residual ``Add(r, f(r))`` whose ``r`` a MatMul also reads, a bias Add, the
    mask path). They read the float tensor instead, as they read any other
    tensor; a pair left without readers is removed.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    constants = _constants(model)
    kept = set(float_nodes)
    changed = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or (node.op_type in quantized
                                                                        and node.name not in kept):
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in constants:
                node.input[k] = q.input[0]
                changed.append(node.name)
    readers = Counter(i for n in model.graph.node for i in n.input)
    graph_outputs = {o.name for o in model.graph.output}
    unread = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
              and readers[n.output[0]] == 0 and n.output[0] not in graph_outputs}
    orphans = {producers[dq].input[0] for dq in unread if readers[producers[dq].input[0]] == 1}
    _drop(model, unread | orphans)
    return list(dict.fromkeys(changed))


def _drop(model: onnx.ModelProto, outputs: set[str]) -> None:
    """Remove the nodes producing ``outputs`` and the initializers nothing reads any more."""
    kept = [n for n in model.graph.node if n.output[0] not in outputs]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def stem_convs(model: onnx.ModelProto, blocks: int = 3) -> list[str]:
    """Names of the Conv nodes before the ``blocks``-th residual Add, in graph order (a network's stem).

    The stem sees the raw image, whose fine contrast an INT8 step there
    loses for every later layer; BlazeFace keeps its recall only with these
    layers in float (the choice was made on a validation video, see
    ``training/README.md``).  Names are those of :func:`named`.
    """
    found: list[str] = []
    adds = 0
    for node in named(model).graph.node:
        if node.op_type == "Add":
            adds += 1
            if adds >= blocks:
                break
        elif node.op_type == "Conv":
            found.append(node.name)
    return found


def float_nodes(model: onnx.ModelProto, float_inputs: Sequence[str] = ()) -> list[str]:
    """Every node :mod:`~edge_mer_export.int8` leaves unquantized by rule (bias, normalised and float-path Adds)."""
    chosen = [*bias_adds(model), *normalised_adds(model), *float_path_adds(model, float_inputs)]
    unique = list(dict.fromkeys(chosen))
    log.debug("nodes kept float by the placement rules: %s", unique)
    return unique
