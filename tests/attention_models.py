"""Tiny real ONNX fusion heads for the multi-head, attention-INT8 and multilabel export tests.

Built with onnx.helper and seeded numpy weights (no training), on the input
convention the runtime accepts today: probability inputs named after the
encoders (``face`` [N,7], ``speech`` [N,7], the labels of
:data:`export_models.HEAD_INPUTS`), the speech encoder's ``embedding``
output (``speech.embedding`` [N,128], kind ``embedding``) and the validity
``mask`` [N,2] over face and speech.

* :func:`make_attention_head` (face probabilities and the speech
  embedding): per-modality token projections (MatMul), a
  Reshape to [N, 2, D] tokens, scaled dot-product attention (MatMul with
  the query pre-scaled, Transpose of the keys, an additive mask built from
  ``mask``, Softmax, MatMul with the values), an output projection, a
  residual Add and LayerNormalization (opset 17), a masked mean over the
  tokens, then Gemm + Softmax over the head's 8 labels;
* :func:`make_multilabel_head`: an MLP with a probs output and a Sigmoid
  ``multilabel`` output over :data:`SET_LABELS`;
* :func:`multi_head_bundle`: a copy of the default bundle with the stacked
  tiny head of :mod:`export_models` as its default head and these two as
  ``fusion.heads`` ``attention`` and ``compound``;
* :func:`multi_head_rows`: head data for all three heads in one file (the
  union of their inputs, the labels and the ``label_sets``).

Each head gets its evidence from fixed "vote" matrices (an encoder
probability votes for its own label), so FP32 is accurate and the gate has
something real to compare the candidates against.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.schema import FusionHead, TensorInfo
from edge_mer.bundle.writer import file_entry, write_manifest
from export_models import FACE_LABELS, HEAD_INPUTS, HEAD_LABELS, SPEECH_LABELS, head_rows, head_spec, make_head_model

#: Width of the attention head's tokens, and of the speech encoder's embedding output it reads.
DIM = 16
EMBED = 128
SPEECH_EMBEDDING = "speech.embedding"
#: The attention head's inputs: face probabilities, the speech encoder's embedding output, the mask.
ATTENTION_INPUTS = (HEAD_INPUTS[0], TensorInfo(SPEECH_EMBEDDING, ("N", EMBED), kind="embedding"), HEAD_INPUTS[2])
#: The multilabel head's labels and which head labels make each of them active.
SET_LABELS = ("positive", "negative", "aroused", "calm")
_MEMBERS = {"positive": ("happy", "surprise"), "negative": ("angry", "disgust", "fear", "sad"),
            "aroused": ("angry", "fear", "happy", "surprise"), "calm": ("neutral", "sad", "boredom")}
THRESHOLDS = (0.5, 0.5, 0.4, 0.6)
#: The additive mask: 0 where a token is valid, this much below where it is not.
MASK_PENALTY = 1.0e4


def _save(path: Path, nodes: list, outputs: list, inits: dict[str, np.ndarray], name: str,
          inputs: tuple[TensorInfo, ...] = HEAD_INPUTS) -> Path:
    inputs = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, ["N", t.shape[1]]) for t in inputs]
    tensors = [numpy_helper.from_array(np.asarray(v, dtype=np.int64 if k.startswith("shape") else np.float32), k)
               for k, v in inits.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _votes(labels: tuple[str, ...], width: int) -> np.ndarray:
    """[len(labels), width]: each input label votes for its own head label in the first 8 columns."""
    votes = np.zeros((len(labels), width))
    for i, label in enumerate(labels):
        votes[i, HEAD_LABELS.index(label)] = 1.0
    return votes


def speech_codes() -> np.ndarray:
    """[8, EMBED]: the speech embedding's direction for each head label (a fixed seeded code book)."""
    codes = np.random.default_rng(99).normal(0, 1, (len(HEAD_LABELS), EMBED))
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def _token_nodes(rng: np.random.Generator) -> tuple[list, dict[str, np.ndarray]]:
    """face probs, speech embedding -> one token each (MatMul + bias) -> Concat -> Reshape [N, 2, DIM]."""
    votes = np.concatenate([speech_codes().T, np.zeros((EMBED, DIM - len(HEAD_LABELS)))], axis=1)
    inits = {"W_face": 3.0 * _votes(FACE_LABELS, DIM) + rng.normal(0, 0.1, (7, DIM)),
             "W_speech": 3.0 * votes + rng.normal(0, 0.01, (EMBED, DIM))}
    nodes = []
    for name, source in (("face", "face"), ("speech", SPEECH_EMBEDDING)):
        inits[f"b_{name}"] = rng.normal(0, 0.1, DIM)  # also the modality-type embedding
        nodes += [helper.make_node("MatMul", [source, f"W_{name}"], [f"{name}_p"], name=f"{name}_proj"),
                  helper.make_node("Add", [f"{name}_p", f"b_{name}"], [f"{name}_tok"], name=f"{name}_bias")]
    inits["shape_tokens"] = np.array([-1, 2, DIM])
    nodes += [helper.make_node("Concat", ["face_tok", "speech_tok"], ["flat_tokens"], name="tokens", axis=1),
              helper.make_node("Reshape", ["flat_tokens", "shape_tokens"], ["x"], name="to_tokens")]
    return nodes, inits


def _attention_nodes(rng: np.random.Generator) -> tuple[list, dict[str, np.ndarray]]:
    """x [N,2,D] -> softmax(q k^T / sqrt(D) + mask bias) v -> output projection -> residual -> LayerNorm."""
    inits = {k: rng.normal(0, 0.35, (DIM, DIM)) for k in ("Wq", "Wk", "Wv", "Wo")}
    inits.update({"scale": np.array(1.0 / np.sqrt(DIM)), "one": np.array(1.0), "penalty": np.array(MASK_PENALTY),
                  "shape_axis1": np.array([1]), "bo": np.zeros(DIM), "gamma": np.ones(DIM), "beta": np.zeros(DIM)})
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q"], name="query"),
             helper.make_node("MatMul", ["x", "Wk"], ["k"], name="key"),
             helper.make_node("MatMul", ["x", "Wv"], ["v"], name="value"),
             helper.make_node("Mul", ["q", "scale"], ["q_scaled"], name="query_scale"),  # TensorRT: scale before BMM1
             helper.make_node("Transpose", ["k"], ["k_t"], name="key_t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q_scaled", "k_t"], ["scores"], name="scores"),
             # Additive mask: (mask - 1) * 1e4 is 0 for a valid token, -1e4 for a masked one.
             helper.make_node("Sub", ["mask", "one"], ["mask_off"], name="mask_off"),
             helper.make_node("Mul", ["mask_off", "penalty"], ["mask_bias2"], name="mask_scale"),
             helper.make_node("Unsqueeze", ["mask_bias2", "shape_axis1"], ["mask_bias"], name="mask_rows"),
             helper.make_node("Add", ["scores", "mask_bias"], ["masked_scores"], name="masked_scores"),
             helper.make_node("Softmax", ["masked_scores"], ["attn"], name="attn_softmax", axis=-1),
             helper.make_node("MatMul", ["attn", "v"], ["context"], name="context"),
             helper.make_node("MatMul", ["context", "Wo"], ["projected"], name="out_proj"),
             helper.make_node("Add", ["projected", "bo"], ["projected_b"], name="out_bias"),
             helper.make_node("Add", ["x", "projected_b"], ["residual"], name="residual"),
             helper.make_node("LayerNormalization", ["residual", "gamma", "beta"], ["normed"], name="norm", axis=-1,
                              epsilon=1e-5)]
    return nodes, inits


def _pool_and_classify(rng: np.random.Generator) -> tuple[list, dict[str, np.ndarray]]:
    """normed [N,2,D] -> mean over the valid tokens -> Gemm -> Softmax [N, 8]."""
    w = np.concatenate([np.eye(len(HEAD_LABELS)), np.zeros((DIM - len(HEAD_LABELS), len(HEAD_LABELS)))])
    inits = {"shape_axis2": np.array([2]), "Wc": 2.5 * w + rng.normal(0, 0.05, w.shape),
             "bc": np.zeros(len(HEAD_LABELS))}
    nodes = [helper.make_node("Unsqueeze", ["mask", "shape_axis2"], ["mask_col"], name="mask_col"),
             helper.make_node("Mul", ["normed", "mask_col"], ["kept"], name="keep_valid"),
             helper.make_node("ReduceSum", ["kept", "shape_axis1"], ["summed"], name="sum_tokens", keepdims=0),
             helper.make_node("ReduceSum", ["mask", "shape_axis1"], ["count"], name="count_tokens", keepdims=1),
             helper.make_node("Div", ["summed", "count"], ["pooled"], name="mean_tokens"),
             helper.make_node("Gemm", ["pooled", "Wc", "bc"], ["logits"], name="classifier"),
             helper.make_node("Softmax", ["logits"], ["probs"], name="probs_softmax", axis=1)]
    return nodes, inits


def make_attention_head(path: Path, seed: int = 0) -> Path:
    """The attention head (module docstring) at ``path``: inputs face, speech, mask; output ``probs`` [N, 8]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    for part in (_token_nodes, _attention_nodes, _pool_and_classify):
        more_nodes, more_inits = part(rng)
        nodes += more_nodes
        inits.update(more_inits)
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(HEAD_LABELS)])]
    return _save(path, nodes, outputs, inits, "tiny_attention_head", ATTENTION_INPUTS)


def set_matrix() -> np.ndarray:
    """[8, 4]: 1 where head label i belongs to set label j."""
    return np.array([[float(label in _MEMBERS[s]) for s in SET_LABELS] for label in HEAD_LABELS])


def make_multilabel_head(path: Path, seed: int = 0) -> Path:
    """concat(face, speech, mask) -> Gemm-Relu -> (Gemm -> Softmax ``probs`` [N,8], Gemm -> Sigmoid ``sets`` [N,4])."""
    rng = np.random.default_rng(seed)
    votes = np.concatenate([_votes(FACE_LABELS, len(HEAD_LABELS)), _votes(SPEECH_LABELS, len(HEAD_LABELS)),
                            np.zeros((2, len(HEAD_LABELS)))])
    hidden = 12
    w1 = np.concatenate([4.0 * votes, rng.normal(0, 0.3, (16, hidden - len(HEAD_LABELS)))], axis=1)
    w_sets = np.concatenate([6.0 * set_matrix(), rng.normal(0, 0.2, (hidden - len(HEAD_LABELS), 4))])
    w_probs = np.concatenate([3.0 * np.eye(len(HEAD_LABELS)), rng.normal(0, 0.2, (hidden - len(HEAD_LABELS),
                                                                                len(HEAD_LABELS)))])
    inits = {"W1": w1, "B1": np.full(hidden, -0.5), "W2": w_probs, "B2": np.zeros(len(HEAD_LABELS)),
             "W3": w_sets, "B3": np.full(4, -3.0)}
    nodes = [helper.make_node("Concat", ["face", "speech", "mask"], ["x"], axis=1),
             helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probs"], axis=1),
             helper.make_node("Gemm", ["r", "W3", "B3"], ["set_logits"]),
             helper.make_node("Sigmoid", ["set_logits"], ["sets"])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(HEAD_LABELS)]),
               helper.make_tensor_value_info("sets", TensorProto.FLOAT, ["N", len(SET_LABELS)])]
    return _save(path, nodes, outputs, inits, "tiny_multilabel_head")


PROBS_OUTPUT = TensorInfo("probs", ("N", len(HEAD_LABELS)), kind="probs", labels=HEAD_LABELS)
SETS_OUTPUT = TensorInfo("sets", ("N", len(SET_LABELS)), kind="multilabel", labels=SET_LABELS, thresholds=THRESHOLDS)


def attention_spec(root: Path, relative: str = "fusion/attention.onnx") -> FusionHead:
    """The manifest entry of the attention head at ``root/relative``."""
    return FusionHead(models={"fp32": file_entry(root, relative)}, inputs=ATTENTION_INPUTS, outputs=(PROBS_OUTPUT,))


def multilabel_spec(root: Path, relative: str = "fusion/compound.onnx") -> FusionHead:
    """The manifest entry of the multilabel head at ``root/relative``."""
    return FusionHead(models={"fp32": file_entry(root, relative)}, inputs=HEAD_INPUTS,
                      outputs=(PROBS_OUTPUT, SETS_OUTPUT))


def multi_head_bundle(root: Path, default: str = "stacked") -> Path:
    """A copy of the default bundle whose fusion ships three tiny heads: ``stacked`` (default), ``attention``, ``compound``.

    ``default`` names which of the three is ``fusion.head`` (the others go to ``fusion.heads``).
    """
    shutil.copytree(default_bundle_path(), root)
    make_head_model(root / "fusion" / "head.onnx")
    make_attention_head(root / "fusion" / "attention.onnx")
    make_multilabel_head(root / "fusion" / "compound.onnx")
    specs = {"stacked": head_spec(root), "attention": attention_spec(root), "compound": multilabel_spec(root)}
    manifest = load_bundle(root).manifest
    fusion = dataclasses.replace(manifest.fusion, head=specs.pop(default), head_name=default, heads=specs)
    write_manifest(root, dataclasses.replace(manifest, fusion=fusion))
    load_bundle(root)
    return root


def label_sets_of(labels: np.ndarray) -> np.ndarray:
    """[n, 4] float 0/1: the set labels each true head label belongs to."""
    matrix = set_matrix()
    return np.stack([matrix[HEAD_LABELS.index(str(label))] for label in labels]).astype(np.float32)


def multi_head_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """:func:`export_models.head_rows` plus what the other two heads read: the speech embedding and label sets.

    The embedding is the true label's code (:func:`speech_codes`) plus noise, zeros where speech is masked out.
    """
    rows = head_rows(n, seed)
    rng = np.random.default_rng(seed + 1000)
    truth = np.array([HEAD_LABELS.index(str(label)) for label in rows["labels"]])
    embedding = speech_codes()[truth] + rng.normal(0, 0.08, (n, EMBED))
    rows[SPEECH_EMBEDDING] = (embedding * rows["mask"][:, 1:2]).astype(np.float32)
    rows["label_sets"] = label_sets_of(rows["labels"])
    return rows
