"""The default encoders' ``embedding`` output, added to an ONNX encoder by graph surgery (no retraining).

``training/encoder_embeddings.py`` adds it to the shipped files; a held-out
bundle (:func:`edge_mer_calibration.sessions.heldout_bundle`) adds it to the
fold models it swaps in, which share the shipped architecture, so every head
that reads embeddings runs on them too. Per encoder:

* face: mini-Xception's last feature map (``add_4``) averaged over space;
* speech: per mel band of the per-window-normalised log-mel input, the std over
  time of the frame-to-frame difference, then the skewness over time
  (parameter-free; the band mean and std are constants after the normalisation);
* eeg, eeg_cyton: the standardised differential-entropy features the linear head reads.

``probs`` is left untouched (the new nodes only read existing tensors).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edge_mer.errors import InputError

OUTPUT = "embedding"
PREFIX = "embedding/"
FLOOR = 1e-6  # variance floor of the speech skewness: a flat (silent) band gives 0, not 0/0

DESCRIPTIONS = {
    "face": "mini-Xception's last feature map (add_4, 128 x 4 x 4) averaged over space: 128 features",
    "speech": "per mel band of the per-window-normalised log-mel input: std over time of the frame-to-frame "
              "difference (bands 0-63), then skewness over time (64-127); parameter-free",
    "eeg": "the standardised differential-entropy features the linear head reads (channel-major, 5 bands each)",
}


def _float32(model: onnx.ModelProto, tensor: str, nodes: list) -> str:
    """``tensor``, cast to float32 when the graph holds it as float16 (appending the Cast to ``nodes``)."""
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(shape_inference.infer_shapes(model).graph.value_info) + list(model.graph.input)}
    if tensor not in types:
        raise InputError(f"tensor {tensor!r} not found in the graph; expected the default encoders' architecture")
    if types[tensor] == TensorProto.FLOAT:
        return tensor
    nodes.append(helper.make_node("Cast", [tensor], [PREFIX + "float32"], to=TensorProto.FLOAT, name=PREFIX + "Cast"))
    return PREFIX + "float32"


def _face(model: onnx.ModelProto) -> tuple[list, int]:
    nodes: list = []
    x = _float32(model, "add_4", nodes)
    nodes += [helper.make_node("GlobalAveragePool", [x], [PREFIX + "pool"], name=PREFIX + "GlobalAveragePool"),
              helper.make_node("Flatten", [PREFIX + "pool"], [OUTPUT], axis=1, name=PREFIX + "Flatten")]
    return nodes, 128


def _speech(model: onnx.ModelProto) -> tuple[list, int]:
    cast: list = []  # the input is float32 in every shipped precision, so this stays empty
    x = _float32(model, "logmel", cast)
    p = PREFIX

    def mean(src: str, dst: str) -> onnx.NodeProto:  # opset 17: axes is an attribute
        return helper.make_node("ReduceMean", [src], [dst], axes=[3], keepdims=1, name=dst)

    def op(kind: str, inputs: list[str], dst: str, **attrs: object) -> onnx.NodeProto:
        return helper.make_node(kind, inputs, [dst], name=dst, **attrs)

    nodes = cast + [
        # frame-to-frame difference along time, then its population std per band
        op("Slice", [x, p + "one", p + "end", p + "axis"], p + "later"),
        op("Slice", [x, p + "zero", p + "minus_one", p + "axis"], p + "earlier"),
        op("Sub", [p + "later", p + "earlier"], p + "diff"),
        mean(p + "diff", p + "diff_mean"),
        op("Sub", [p + "diff", p + "diff_mean"], p + "diff_c"),
        op("Mul", [p + "diff_c", p + "diff_c"], p + "diff_sq"),
        mean(p + "diff_sq", p + "diff_var"),
        op("Sqrt", [p + "diff_var"], p + "diff_std"),
        op("Flatten", [p + "diff_std"], p + "motion", axis=1),
        # skewness per band: E[(x - mu)^3] / max(var, floor)^1.5
        mean(x, p + "mean"),
        op("Sub", [x, p + "mean"], p + "c"),
        op("Mul", [p + "c", p + "c"], p + "c2"),
        mean(p + "c2", p + "var"),
        op("Mul", [p + "c2", p + "c"], p + "c3"),
        mean(p + "c3", p + "m3"),
        op("Max", [p + "var", p + "floor"], p + "var_floored"),
        op("Pow", [p + "var_floored", p + "three_halves"], p + "scale"),
        op("Div", [p + "m3", p + "scale"], p + "skew_4d"),
        op("Flatten", [p + "skew_4d"], p + "skew", axis=1),
        op("Concat", [p + "motion", p + "skew"], OUTPUT, axis=1),
    ]
    consts = {"one": np.array([1], np.int64), "end": np.array([np.iinfo(np.int64).max], np.int64),
              "zero": np.array([0], np.int64), "minus_one": np.array([-1], np.int64),
              "axis": np.array([3], np.int64), "floor": np.array(FLOOR, np.float32),
              "three_halves": np.array(1.5, np.float32)}
    model.graph.initializer.extend(numpy_helper.from_array(v, p + k) for k, v in consts.items())
    return nodes, 128


def _eeg(model: onnx.ModelProto) -> tuple[list, int]:
    width = next(d.dim_value for v in shape_inference.infer_shapes(model).graph.value_info
                 if v.name == "/Flatten_output_0" for d in v.type.tensor_type.shape.dim[1:])
    nodes: list = []
    if _float32(model, "/Flatten_output_0", nodes) == "/Flatten_output_0":
        return [helper.make_node("Identity", ["/Flatten_output_0"], [OUTPUT], name=PREFIX + "Identity")], int(width)
    # A float16 graph: a Cast consuming its features changes how ONNX Runtime places its own float32 casts, and
    # with it the probs (3e-4), so the standardisation is recomputed from the float32 input instead.
    by_output = {n.output[0]: n for n in model.graph.node}
    sub, div = by_output["/Sub_output_0"], by_output["/Div_output_0"]
    p = PREFIX
    nodes = [helper.make_node("Cast", [sub.input[1]], [p + "mean"], to=TensorProto.FLOAT, name=p + "mean"),
             helper.make_node("Cast", [div.input[1]], [p + "std"], to=TensorProto.FLOAT, name=p + "std"),
             helper.make_node("Sub", [model.graph.input[0].name, p + "mean"], [p + "centred"], name=p + "Sub"),
             helper.make_node("Div", [p + "centred", p + "std"], [p + "standardised"], name=p + "Div"),
             helper.make_node("Flatten", [p + "standardised"], [OUTPUT], axis=1, name=p + "Flatten")]
    return nodes, int(width)


SURGERY: dict[str, Callable[[onnx.ModelProto], tuple[list, int]]] = {
    "face": _face, "speech": _speech, "eeg": _eeg, "eeg_cyton": _eeg}


def has_embedding(model: onnx.ModelProto) -> bool:
    return any(o.name == OUTPUT for o in model.graph.output)


def add_embedding(model: onnx.ModelProto, encoder: str) -> int:
    """Add the ``embedding`` output to ``model`` (encoder ``face``, ``speech``, ``eeg`` or ``eeg_cyton``) in
    place; return its width."""
    if encoder not in SURGERY:
        raise InputError(f"no embedding surgery for encoder {encoder!r} (expected one of {', '.join(SURGERY)})")
    nodes, width = SURGERY[encoder](model)
    model.graph.node.extend(nodes)
    model.graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", width]))
    onnx.checker.check_model(model)
    return width


def embedding_width(model: onnx.ModelProto) -> int:
    out = next(o for o in model.graph.output if o.name == OUTPUT)
    return int(out.type.tensor_type.shape.dim[1].dim_value)
