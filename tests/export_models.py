"""Tiny real ONNX models and data for the export tests of fusion heads and valence/arousal outputs.

Everything is built with onnx.helper and seeded numpy weights (no training,
no torch) and written into bundles through the package's own writer:

* :func:`head_bundle`: a copy of the default bundle with a learned fusion
  head (face 7 + speech 7 probabilities + mask 2 -> MLP -> softmax over 8
  labels) added to its manifest;
* :func:`head_rows` / :func:`write_head_npz`: head data from a seeded
  generative process (a true label, then peaked encoder probabilities for
  the encoders present), in the ``.npz`` format of edge_mer_calibration.head;
* :func:`va_bundle`: a one-encoder bundle whose face or speech encoder has a
  ``valence_arousal`` output (and, optionally, a class output);
* :func:`face_images`, :func:`write_wavs`, :func:`write_va_csv`: sample files
  for those encoders.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import soundfile
from onnx import TensorProto, helper, numpy_helper

from edge_mer.bundle import CANONICAL_LABELS, default_bundle_path, load_bundle
from edge_mer.bundle.schema import (FORMAT, EncoderSpec, FusionHead, FusionSpec, Manifest, Provenance,
                                    TensorInfo)
from edge_mer.bundle.writer import file_entry, write_manifest
from edge_mer.preprocess.audio import AudioParams
from edge_mer.preprocess.face import FaceParams

FACE_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPEECH_LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "neutral")
HEAD_LABELS = (*CANONICAL_LABELS, "boredom")
HIDDEN = 24


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray], name: str) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _evidence() -> np.ndarray:
    """[16, 8]: each encoder probability votes for its own label among the head's labels."""
    e = np.zeros((16, len(HEAD_LABELS)))
    for i, label in enumerate(FACE_LABELS):
        e[i, HEAD_LABELS.index(label)] = 1.0
    for j, label in enumerate(SPEECH_LABELS):
        e[7 + j, HEAD_LABELS.index(label)] = 1.0
    return e


def make_head_model(path: Path, seed: int = 0, va: bool = False) -> Path:
    """concat(face[N,7], speech[N,7], mask[N,2]) -> Gemm-Relu (24) -> Gemm -> Softmax [N,8] (+ Gemm-Tanh ``va``)."""
    rng = np.random.default_rng(seed)
    w1 = np.concatenate([4.0 * _evidence(), rng.normal(0, 0.3, (16, HIDDEN - len(HEAD_LABELS)))], axis=1)
    w2 = np.concatenate([3.0 * np.eye(len(HEAD_LABELS)), rng.normal(0, 0.2, (HIDDEN - len(HEAD_LABELS),
                                                                            len(HEAD_LABELS)))])
    nodes = [helper.make_node("Concat", ["face", "speech", "mask"], ["x"], axis=1),
             helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probs"], axis=1)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", k])
              for n, k in (("face", 7), ("speech", 7), ("mask", 2))]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(HEAD_LABELS)])]
    inits = {"W1": w1, "B1": rng.normal(0, 0.1, HIDDEN), "W2": w2, "B2": np.zeros(len(HEAD_LABELS))}
    if va:
        nodes += [helper.make_node("Gemm", ["r", "W3", "B3"], ["va_raw"]), helper.make_node("Tanh", ["va_raw"], ["va"])]
        outputs.append(helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2]))
        inits.update({"W3": rng.normal(0, 0.3, (HIDDEN, 2)), "B3": np.zeros(2)})
    return _save(path, nodes, inputs, outputs, inits, "tiny_head")


#: The tiny head's declared inputs (the runtime's convention: one per encoder, then the mask).
HEAD_INPUTS = (TensorInfo("face", ("N", 7), kind="probs", labels=FACE_LABELS),
               TensorInfo("speech", ("N", 7), kind="probs", labels=SPEECH_LABELS),
               TensorInfo("mask", ("N", 2), labels=("face", "speech")))


def head_spec(root: Path, relative: str = "fusion/head.onnx", va: bool = False) -> FusionHead:
    """The manifest entry of the head at ``root/relative`` (with its ``va`` output when ``va``)."""
    outputs = [TensorInfo("probs", ("N", len(HEAD_LABELS)), kind="probs", labels=HEAD_LABELS)]
    if va:
        outputs.append(TensorInfo("va", ("N", 2), kind="valence_arousal"))
    return FusionHead(models={"fp32": file_entry(root, relative)}, inputs=HEAD_INPUTS, outputs=tuple(outputs))


def head_bundle(root: Path, va: bool = False) -> Path:
    """A copy of the default bundle in ``root`` with the tiny head as its ``fusion.head``."""
    shutil.copytree(default_bundle_path(), root)
    make_head_model(root / "fusion" / "head.onnx", va=va)
    manifest = load_bundle(root).manifest
    # The tiny head replaces every shipped head: they read other encoder widths than it does.
    fusion = dataclasses.replace(manifest.fusion, head=head_spec(root, va=va), head_name="stacked", heads={})
    write_manifest(root, dataclasses.replace(manifest, fusion=fusion))
    load_bundle(root)
    return root


def _peaked(rng: np.random.Generator, labels: tuple[str, ...], truth: str) -> np.ndarray:
    alpha = np.full(len(labels), 0.4)
    alpha[labels.index(truth) if truth in labels else labels.index("neutral")] += 6.0
    return rng.dirichlet(alpha)


def head_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` rows of head inputs and labels from a seeded process (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows = {"face": np.zeros((n, 7)), "speech": np.zeros((n, 7)), "mask": np.zeros((n, 2))}
    labels = []
    for i in range(n):
        truth = HEAD_LABELS[rng.integers(len(HEAD_LABELS))]
        present = [rng.random() < 0.75, rng.random() < 0.75]
        if not any(present):
            present[rng.integers(2)] = True
        for j, (name, labels_of) in enumerate((("face", FACE_LABELS), ("speech", SPEECH_LABELS))):
            if present[j]:
                rows[name][i] = _peaked(rng, labels_of, truth)
                rows["mask"][i, j] = 1.0
        labels.append(truth)
    out = {k: v.astype(np.float32) for k, v in rows.items()}
    out["labels"] = np.array(labels, dtype=str)
    return out


def write_head_npz(path: Path, rows: dict[str, np.ndarray]) -> Path:
    """``rows`` saved as an ``.npz`` (``numpy.savez``, no pickles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **rows)
    return path


def write_claimed_npz(path: Path, key: str, shape: tuple[int, ...], descr: str = "<f4") -> Path:
    """An ``.npz`` whose one array's header claims ``shape`` but carries no data (a hostile file)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", header.getvalue())
    return path


def _va_nodes(feature: str, with_classes: bool) -> tuple[list, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Gemm", [feature, "WV", "BV"], ["va_raw"]), helper.make_node("Tanh", ["va_raw"], ["va"])]
    inits = {"WV": np.array([[2.5, 1.5], [-1.0, 2.0]]), "BV": np.array([0.1, -0.2])}
    if with_classes:
        nodes += [helper.make_node("Gemm", [feature, "WC", "BC"], ["logits"]),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
        inits.update({"WC": rng.normal(0, 3.0, (2, 7)), "BC": rng.normal(0, 0.5, 7)})
    return nodes, inits


def make_va_model(path: Path, modality: str, with_classes: bool) -> Path:
    """Face [N,1,64,64] or speech [N,1,64,T] -> (mean, max) pooled -> Gemm-Tanh ``va`` [N,2] (+ softmax probs)."""
    name, shape = ("input_1", ["N", 1, 64, 64]) if modality == "face" else ("logmel", ["N", 1, 64, "T"])
    scale = 1.0 if modality == "face" else 0.02  # log-mel dB values span tens of units
    nodes = [helper.make_node("Mul", [name, "S"], ["scaled"]),
             helper.make_node("GlobalAveragePool", ["scaled"], ["mean"]),
             helper.make_node("GlobalMaxPool", ["scaled"], ["max"]),
             helper.make_node("Concat", ["mean", "max"], ["pooled"], axis=1),
             helper.make_node("Flatten", ["pooled"], ["feature"], axis=1)]
    va_nodes, inits = _va_nodes("feature", with_classes)
    outputs = [helper.make_tensor_value_info("va", TensorProto.FLOAT, ["N", 2])]
    if with_classes:
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7]))
    return _save(path, nodes + va_nodes, [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)], outputs,
                 {"S": np.array(scale), **inits}, f"tiny_{modality}_va")


def va_bundle(root: Path, modality: str = "face", with_classes: bool = True) -> Path:
    """A one-encoder bundle (encoder named ``modality``) with a ``valence_arousal`` output ``va``."""
    make_va_model(root / modality / "model.onnx", modality, with_classes)
    labels = FACE_LABELS if modality == "face" else SPEECH_LABELS
    outputs = [TensorInfo("va", ("N", 2), kind="valence_arousal")]
    if with_classes:
        outputs.append(TensorInfo("probs", ("N", 7), kind="probs", labels=labels))
    tensor = (TensorInfo("input_1", ("N", 1, 64, 64), layout="NCHW") if modality == "face"
              else TensorInfo("logmel", ("N", 1, 64, "T"), layout="NCFT"))
    spec = EncoderSpec(modality=modality, models={"fp32": file_entry(root, f"{modality}/model.onnx")},
                       inputs=(tensor,), outputs=tuple(outputs),
                       preprocessing=FaceParams() if modality == "face" else AudioParams(),
                       label_map={label: label for label in labels} if with_classes else {},
                       provenance=Provenance(source="generated in tests", training_data="none", licence="MIT"))
    affect = load_bundle(default_bundle_path()).manifest.affect
    write_manifest(root, Manifest(FORMAT, "tiny-va", "0.0.1", {modality: spec}, affect,
                                  FusionSpec(weights={modality: 1.0})))
    load_bundle(root)
    return root


def face_images(folder: Path, n: int, seed: int, *, grey: int | None = None, classes: bool = False) -> list[Path]:
    """``n`` 48x48 grey PNGs of varied brightness and contrast (all ``grey`` when given), in class folders if asked."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        if grey is None:
            base, spread = rng.uniform(40, 215), rng.uniform(5, 40)
            image = np.clip(rng.normal(base, spread, (48, 48)), 0, 255).astype(np.uint8)
        else:
            image = np.full((48, 48), grey, np.uint8)
        sub = folder / FACE_LABELS[i % len(FACE_LABELS)] if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{seed}_{i:03d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def write_wavs(folder: Path, n: int, seed: int, seconds: float = 1.5,
               levels_db: tuple[float, float] = (-32.0, -6.0)) -> list[Path]:
    """``n`` 16 kHz PCM WAVs: tones plus noise, peak levels spread evenly over ``levels_db`` (never silent)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    low, high = levels_db
    paths = []
    for i in range(n):
        level = 10 ** ((low + (high - low) * (i + rng.uniform(0, 1)) / n) / 20)
        tone = np.sin(2 * np.pi * rng.uniform(120, 900) * t) + rng.uniform(0, 1) * rng.normal(size=t.size)
        path = folder / f"w{seed}_{i:03d}.wav"
        soundfile.write(str(path), np.clip(level * tone / np.abs(tone).max(), -1, 1), 16000, subtype="PCM_16")
        paths.append(path)
    return paths


def write_va_csv(path: Path, files: list[Path], seed: int) -> Path:
    """A ``path,valence,arousal`` CSV for ``files`` (relative to the CSV's directory), seeded V/A values."""
    rng = np.random.default_rng(seed)
    lines = ["path,valence,arousal"]
    for file in files:
        v, a = rng.uniform(-1, 1, 2)
        lines.append(f"{file.relative_to(path.parent).as_posix()},{v:.4f},{a:.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
