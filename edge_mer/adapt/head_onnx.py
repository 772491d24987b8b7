"""The per-user EEG head as an ONNX graph the bundle loader and every backend accept.

``de float32[N, channels, bands]`` (the shipped EEG encoder's input, same
name, shape and layout) -> Flatten -> Sub(mean) -> Mul(1 / scale) -> Gemm
-> Softmax -> ``probs float32[N, classes]``: the standardisation and the
linear map of :class:`~edge_mer.adapt.fit.LinearHead`, row-major flattening
as its ``predict_proba`` does. When the shipped encoder has an embedding
output (the default EEG encoders' standardised features), the head exposes
its own standardised features under that name, so the fusion heads that read
``eeg.embedding`` run on the adapted encoder too. Opset 17 and IR version 8, as the shipped
``eeg_de_linear.onnx``; only standard operators, so TensorRT can build it too.
"""
from __future__ import annotations

import numpy as np

from edge_mer.adapt.fit import LinearHead
from edge_mer.bundle.schema import TensorInfo
from edge_mer.errors import InputError

OPSET = 17
IR_VERSION = 8
OUTPUT = "probs"


def head_model(head: LinearHead, input_info: TensorInfo, name: str = "eeg_user_head",
               embedding: TensorInfo | None = None) -> bytes:
    """The serialised ONNX model of ``head`` reading ``input_info`` (checked by ``onnx.checker``), with the
    standardised features as the output ``embedding`` when given (its width must be the feature count)."""
    import onnx  # lazy, as everywhere in the runtime
    from onnx import TensorProto, helper, numpy_helper

    fixed = [d for d in input_info.shape[1:] if isinstance(d, int)]
    if len(fixed) != len(input_info.shape) - 1 or int(np.prod(fixed)) != head.weights.shape[0]:
        raise InputError(f"input {input_info.name} {list(input_info.shape)} does not flatten to the head's "
                         f"{head.weights.shape[0]} features")
    k = len(head.classes)
    if embedding is not None and embedding.shape[-1] != head.weights.shape[0]:
        raise InputError(f"embedding {embedding.name} {list(embedding.shape)} is not the head's "
                         f"{head.weights.shape[0]} standardised features")
    init = [
        numpy_helper.from_array(head.mean.astype(np.float32), "mean"),
        numpy_helper.from_array((1.0 / head.scale).astype(np.float32), "inv_scale"),
        numpy_helper.from_array(head.weights.astype(np.float32), "weight"),
        numpy_helper.from_array(head.bias.astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Flatten", [input_info.name], ["flat"], axis=1),
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_scale"], ["standard"]),
        helper.make_node("Gemm", ["standard", "weight", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT], axis=1),
    ]
    batch = input_info.shape[0]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, k])]
    if embedding is not None:
        nodes.append(helper.make_node("Identity", ["standard"], [embedding.name]))
        outputs.append(helper.make_tensor_value_info(embedding.name, TensorProto.FLOAT,
                                                     [batch, head.weights.shape[0]]))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(input_info.name, TensorProto.FLOAT, list(input_info.shape))],
        outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-mer adapt")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()
