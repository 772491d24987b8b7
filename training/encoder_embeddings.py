"""An ``embedding`` output on every default-bundle encoder, by ONNX graph surgery (no retraining).

Each graph gains an output ``embedding`` (float32 ``[N, D]``, manifest kind
``embedding``) that fusion heads read as ``<encoder>.embedding``; ``probs`` is
computed exactly as before (checked bit for bit with ONNX Runtime):

* face (mini-Xception): GlobalAveragePool of its last feature map ``add_4``
  ``[N, 128, 4, 4]``, flattened: ``[N, 128]``;
* speech (``logmel`` ``[N, 1, 64, T]``): parameter-free functionals of the
  input, so no speaker was ever seen by them. The input is normalised per
  window and band (``cmvn = "utterance"``), so each band's mean over time is 0
  and its standard deviation 1 on every window: those two carry nothing. What
  the normalisation leaves is the shape of each band's trajectory, so the
  embedding is, per band, the population standard deviation over time of the
  frame-to-frame difference (how fast the band moves; 64) and the skewness
  over time (bursts against dips; 64): ``[N, 128]``;
* eeg, eeg_cyton: the standardised, flattened differential-entropy features
  the linear head reads (``/Flatten_output_0``): ``[N, 50]`` / ``[N, 40]``.

Every precision file the manifest lists is edited (the loader requires each
file of an encoder to have the declared outputs); a float16 tensor is cast to
float32 first. A file that already has ``embedding`` is left alone, so a
second run changes nothing.

    python training/encoder_embeddings.py [--bundle edge_mer/assets/default_bundle]   # after face.py, eeg.py, speech_manifest.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, shape_inference

from bundle_manifest import update_encoder
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import EncoderSpec, TensorInfo
from edge_mer.bundle.writer import file_entry

log = logging.getLogger("training.encoder_embeddings")

OUTPUT = "embedding"
PREFIX = "embedding/"
FLOOR = 1e-6  # variance floor of the speech skewness: a flat (silent) band gives 0, not 0/0
SEED = 5

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
        raise ValueError(f"tensor {tensor!r} not found in the graph")
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
    """Add the ``embedding`` output to ``model`` in place; return its width."""
    nodes, width = SURGERY[encoder](model)
    model.graph.node.extend(nodes)
    model.graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", width]))
    onnx.checker.check_model(model)
    return width


def embedding_width(model: onnx.ModelProto) -> int:
    out = next(o for o in model.graph.output if o.name == OUTPUT)
    return int(out.type.tensor_type.shape.dim[1].dim_value)


def _inputs(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch of 3 random inputs (speech: 201 frames, the daemon's 2 s window)."""
    feeds = {}
    for i in model.graph.input:
        dims = [3 if d.dim_param == "N" else (201 if d.dim_param else d.dim_value) for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def reference(encoder: str, before: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The embedding computed outside the new nodes (numpy, or the original graph's own tensor)."""
    if encoder == "speech":
        x = feeds["logmel"].astype(np.float64)[:, 0]
        d = np.diff(x, axis=-1)
        c = x - x.mean(-1, keepdims=True)
        skew = (c ** 3).mean(-1) / np.maximum((c ** 2).mean(-1), FLOOR) ** 1.5
        return np.concatenate([d.std(-1), skew], axis=1)
    tensor = "add_4" if encoder == "face" else "/Flatten_output_0"
    probe = onnx.ModelProto()
    probe.CopyFrom(before)
    probe.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    value = _session(probe).run([tensor], feeds)[0].astype(np.float64)
    return value.mean(axis=(2, 3)) if encoder == "face" else value


def check(encoder: str, before: onnx.ModelProto, after: onnx.ModelProto, precision: str) -> float:
    """Probs bit-identical to the original graph's; the embedding matches :func:`reference`. Returns its max error."""
    feeds = _inputs(before, np.random.default_rng(SEED))
    old = _session(before).run(["probs"], feeds)[0]
    probs, embedding = _session(after).run(["probs", OUTPUT], feeds)
    if not np.array_equal(old, probs):
        raise RuntimeError(f"{encoder} {precision}: probs changed by the surgery (max {np.abs(old - probs).max()})")
    want = reference(encoder, before, feeds)
    if embedding.dtype != np.float32 or embedding.shape != want.shape:
        raise RuntimeError(f"{encoder} {precision}: embedding {embedding.dtype}{embedding.shape}, expected {want.shape}")
    err = float(np.abs(embedding - want).max() / max(1.0, float(np.abs(want).max())))
    if err > (5e-3 if precision == "fp16" else 1e-4):
        raise RuntimeError(f"{encoder} {precision}: embedding differs from the reference by {err:.2e}")
    return err


def embedding_info(encoder: str, width: int) -> TensorInfo:
    return TensorInfo(OUTPUT, ("N", width), kind="embedding",
                      description=DESCRIPTIONS["eeg" if encoder.startswith("eeg") else encoder])


def process(bundle: Path, name: str, spec: EncoderSpec) -> EncoderSpec:
    """Edit every precision file of encoder ``name`` that lacks the output; the spec with its new entries.

    Every file is edited and checked before any is written, so a failed check leaves the bundle as it was.
    """
    edited, widths = {}, set()
    for precision, entry in spec.models.items():
        model = onnx.load(str(bundle / entry.path))
        if has_embedding(model):
            widths.add(embedding_width(model))
            log.info("%s %s: already has %s", name, precision, OUTPUT)
            continue
        before = onnx.ModelProto()
        before.CopyFrom(model)
        width = add_embedding(model, name)
        widths.add(width)
        err = check(name, before, model, precision)
        edited[entry.path] = model
        log.info("%s %s: %s [N, %d] added, probs bit-identical, embedding within %.1e of the reference",
                 name, precision, OUTPUT, width, err)
    if len(widths) != 1:
        raise RuntimeError(f"{name}: embedding widths {sorted(widths)} differ between precisions")
    for path, model in edited.items():
        onnx.save(model, str(bundle / path))
    models = {precision: file_entry(bundle, entry.path) for precision, entry in spec.models.items()}
    outputs = tuple(o for o in spec.outputs if o.name != OUTPUT) + (embedding_info(name, widths.pop()),)
    return dataclasses.replace(spec, models=models, outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = parse_manifest(json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8")))
    for name in SURGERY:
        spec = manifest.encoders[name]
        new = process(args.bundle, name, spec)
        if new != spec:
            update_encoder(args.bundle, name, new, fusion=manifest.fusion)
            manifest = parse_manifest(json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8")))
        else:
            log.info("%s: manifest entry unchanged", name)


if __name__ == "__main__":
    main()
