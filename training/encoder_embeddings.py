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
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from bundle_manifest import update_encoder
from edge_mer_calibration.embeddings import (DESCRIPTIONS, FLOOR, OUTPUT, SURGERY, add_embedding, embedding_width,
                                             has_embedding)
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import EncoderSpec, TensorInfo
from edge_mer.bundle.writer import file_entry

log = logging.getLogger("training.encoder_embeddings")

SEED = 5

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
