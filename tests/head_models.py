"""A tiny real bundle whose encoder has an embedding output and whose heads read it, one of them multi-label.

Built with onnx.helper and fixed weights (no training), written through the
package's own writer:

* encoder ``face``: ``input_1 [N,1,64,64]`` -> 32x32 average pooling ->
  ``embedding [N,4]`` (the four quadrant means) -> Gemm -> ``probs [N,7]``;
* head ``stacked`` (default): ``face [N,7]`` probabilities + ``mask`` -> the face's own distribution;
* head ``emb``: ``face [N,7]`` + ``face.embedding [N,4]`` + ``mask`` -> ``probs [N,7]``
  and ``labels [N,7]`` (kind ``multilabel``, sigmoid of the same logits, thresholds 0.5),
  where the embedding moves the logits so a test can tell it was fed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer.bundle.schema import (FORMAT, AffectSpace, EncoderSpec, FusionHead, FusionSpec, Manifest, Provenance,
                                    TensorInfo)
from edge_mer.bundle.writer import file_entry, write_manifest
from edge_mer.preprocess.face_params import FaceParams

LABELS = CANONICAL_LABELS
#: The head ``emb`` adds EMBEDDING_GAIN * (sum of the embedding) to the logit of this label.
BOOSTED = "happy"
EMBEDDING_GAIN = 8.0


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs,
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_encoder(path: Path) -> Path:
    """Quadrant means as the embedding, a fixed linear map of them as the class scores."""
    weights = np.random.default_rng(3).normal(0, 2.0, (4, len(LABELS)))
    nodes = [helper.make_node("AveragePool", ["input_1"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
             helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
             helper.make_node("Gemm", ["embedding", "W", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    inputs = [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 1, 64, 64])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(LABELS)]),
               helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 4])]
    return _save(path, nodes, inputs, outputs, {"W": weights, "B": np.zeros(len(LABELS))})


def make_stacked(path: Path) -> Path:
    """log p of the face, masked: a one-encoder head that returns the face's distribution."""
    nodes = [helper.make_node("Clip", ["face", "lo"], ["clipped"]), helper.make_node("Log", ["clipped"], ["logp"]),
             helper.make_node("Mul", ["logp", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=1)]
    inputs = [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", len(LABELS)]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(LABELS)])]
    return _save(path, nodes, inputs, outputs, {"lo": np.array(1e-6)})


def make_embedding_head(path: Path) -> Path:
    """logits = log p + gain * sum(embedding) on BOOSTED; ``probs`` its softmax, ``labels`` its sigmoid."""
    boost = np.zeros((4, len(LABELS)))
    boost[:, LABELS.index(BOOSTED)] = EMBEDDING_GAIN
    nodes = [helper.make_node("Clip", ["face", "lo"], ["clipped"]), helper.make_node("Log", ["clipped"], ["logp"]),
             helper.make_node("MatMul", ["face.embedding", "E"], ["shift"]),
             helper.make_node("Add", ["logp", "shift"], ["z"]),
             helper.make_node("Mul", ["z", "mask"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("Sigmoid", ["logits"], ["labels"])]
    inputs = [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", len(LABELS)]),
              helper.make_tensor_value_info("face.embedding", TensorProto.FLOAT, ["N", 4]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(LABELS)]),
               helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["N", len(LABELS)])]
    return _save(path, nodes, inputs, outputs, {"lo": np.array(1e-6), "E": boost})


def _probs_input() -> TensorInfo:
    return TensorInfo("face", ("N", len(LABELS)), kind="probs", labels=LABELS)


def embedding_head_spec(root: Path, thresholds: tuple[float, ...] = (0.5,) * len(LABELS)) -> FusionHead:
    inputs = (_probs_input(), TensorInfo("face.embedding", ("N", 4), kind="embedding"),
              TensorInfo("mask", ("N", 1), labels=("face",)))
    outputs = (TensorInfo("probs", ("N", len(LABELS)), kind="probs", labels=LABELS),
               TensorInfo("labels", ("N", len(LABELS)), kind="multilabel", labels=LABELS, thresholds=thresholds))
    return FusionHead({"fp32": file_entry(root, "fusion/emb.onnx")}, inputs, outputs)


def embedding_bundle(root: Path) -> Path:
    """The bundle of the module docstring in ``root``; its rule is ``learned`` with ``stacked`` the default head."""
    make_encoder(root / "face" / "model.onnx")
    make_stacked(root / "fusion" / "stacked.onnx")
    make_embedding_head(root / "fusion" / "emb.onnx")
    encoder = EncoderSpec(
        modality="face", models={"fp32": file_entry(root, "face/model.onnx")},
        inputs=(TensorInfo("input_1", ("N", 1, 64, 64), layout="NCHW"),),
        outputs=(TensorInfo("probs", ("N", len(LABELS)), kind="probs", labels=LABELS),
                 TensorInfo("embedding", ("N", 4), kind="embedding", description="quadrant means")),
        preprocessing=FaceParams(), label_map={label: label for label in LABELS},
        provenance=Provenance(source="generated in tests", training_data="none", licence="MIT"))
    stacked = FusionHead({"fp32": file_entry(root, "fusion/stacked.onnx")},
                         (_probs_input(), TensorInfo("mask", ("N", 1), labels=("face",))),
                         (TensorInfo("probs", ("N", len(LABELS)), kind="probs", labels=LABELS),))
    fusion = FusionSpec(rule="learned", weights={"face": 1.0}, head=stacked, heads={"emb": embedding_head_spec(root)})
    affect = AffectSpace({label: (0.0, 0.0) for label in LABELS}, source="test")
    write_manifest(root, Manifest(FORMAT, "embedding-test", "0.0.1", {"face": encoder}, affect, fusion))
    return root
