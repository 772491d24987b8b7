from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import make_face_model
from edge_mer.backends.options import BackendOptions
from edge_mer.bundle import CANONICAL_LABELS, load_bundle
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import (FORMAT, AffectSpace, EncoderSpec, FusionHead, FusionSpec, Manifest, Provenance,
                                    TensorInfo)
from edge_mer.bundle.writer import file_entry, write_manifest
from edge_mer.errors import BundleError, ConfigError
from edge_mer.fusion.learned import LearnedHead, LearnedOptions, head_layout
from edge_mer.fusion.registry import create_rule
from edge_mer.fusion.rules import WeightedMean
from edge_mer.names import ReasonCode
from edge_mer.results import ModalityResult
from edge_mer.preprocess.audio import AudioParams
from edge_mer.preprocess.face import FaceParams

SPEECH_LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "neutral")
# The head's speech input takes the labels in its own order, not the encoder's.
HEAD_SPEECH = ("neutral", "sad", "happy", "fear", "disgust", "boredom", "angry")
OUT_LABELS = ("boredom", *CANONICAL_LABELS)
ORT = BackendOptions(name="onnxruntime")


def make_speech_model(path: Path, classes: int = 7) -> Path:
    """A tiny real ONNX classifier with a speech signature: [N,1,64,T] -> softmax [N,classes]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.linspace(-1, 1, classes, dtype=np.float32).reshape(1, classes), "W")
    nodes = [helper.make_node("GlobalAveragePool", ["logmel"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "tiny_speech",
                              [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["N", 1, 64, "T"])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def head_params() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return (rng.normal(size=(16, len(OUT_LABELS))).astype(np.float32),
            rng.normal(size=(len(OUT_LABELS),)).astype(np.float32))


def make_head_model(path: Path, output_op: str = "Softmax") -> Path:
    """softmax(concat(face[7], speech[7], mask[2]) @ W + B) -> [1, 8]; ``Identity`` gives logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = head_params()
    nodes = [helper.make_node("Concat", ["face", "speech", "mask"], ["x"], axis=1),
             helper.make_node("Gemm", ["x", "W", "B"], ["z"]),
             helper.make_node(output_op, ["z"], ["probs"], **({"axis": 1} if output_op == "Softmax" else {}))]
    inputs = [helper.make_tensor_value_info("face", TensorProto.FLOAT, [1, 7]),
              helper.make_tensor_value_info("speech", TensorProto.FLOAT, [1, 7]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 2])]
    graph = helper.make_graph(nodes, "tiny_head", inputs,
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, len(OUT_LABELS)])],
                              initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def head_spec(root: Path, kind: str = "probs") -> FusionHead:
    return FusionHead(
        models={"fp32": file_entry(root, "fusion/head.onnx")},
        inputs=(TensorInfo("face", (1, 7), kind="probs", labels=CANONICAL_LABELS),
                TensorInfo("speech", (1, 7), kind="probs", labels=HEAD_SPEECH),
                TensorInfo("mask", (1, 2), labels=("face", "speech"))),
        outputs=(TensorInfo("probs", (1, len(OUT_LABELS)), kind=kind, labels=OUT_LABELS),))


def provenance() -> Provenance:
    return Provenance(source="generated in tests", training_data="none", licence="MIT")


@pytest.fixture
def head_bundle(tmp_path: Path) -> Bundle:
    """A face + speech bundle whose fusion rule is a real learned head."""
    root = tmp_path / "bundle"
    make_face_model(root / "face" / "model.onnx")
    make_speech_model(root / "speech" / "model.onnx")
    make_head_model(root / "fusion" / "head.onnx")
    face = EncoderSpec(
        modality="face", models={"fp32": file_entry(root, "face/model.onnx")},
        inputs=(TensorInfo("input_1", ("N", 1, 64, 64), layout="NCHW"),),
        outputs=(TensorInfo("probs", ("N", 7), kind="probs", labels=CANONICAL_LABELS),),
        preprocessing=FaceParams(), label_map={label: label for label in CANONICAL_LABELS}, provenance=provenance())
    speech = EncoderSpec(
        modality="speech", models={"fp32": file_entry(root, "speech/model.onnx")},
        inputs=(TensorInfo("logmel", ("N", 1, 64, "T"), layout="NCFT"),),
        outputs=(TensorInfo("probs", ("N", 7), kind="probs", labels=SPEECH_LABELS),),
        preprocessing=AudioParams(), label_map={label: label for label in SPEECH_LABELS}, provenance=provenance())
    affect = AffectSpace({label: (0.0, 0.0) for label in OUT_LABELS}, source="test")
    fusion = FusionSpec(rule="learned", weights={"face": 1.0, "speech": 1.0}, head=head_spec(root))
    write_manifest(root, Manifest(FORMAT, "headed", "0.0.1", {"face": face, "speech": speech}, affect, fusion))
    return load_bundle(root)


def reference(face: np.ndarray, speech: np.ndarray, mask: np.ndarray, logits_only: bool = False) -> np.ndarray:
    w, b = head_params()
    z = np.concatenate([face, speech, mask]).astype(np.float32) @ w + b
    if logits_only:
        return z
    e = np.exp(z - z.max())
    return e / e.sum()


FACE = dict(zip(CANONICAL_LABELS, [0.05, 0.05, 0.1, 0.5, 0.1, 0.1, 0.1]))
SPEECH = dict(zip(SPEECH_LABELS, [0.1, 0.4, 0.05, 0.05, 0.2, 0.1, 0.1]))


def results(speech_valid: bool = True) -> list[ModalityResult]:
    speech = (ModalityResult("speech", "speech", True, None, SPEECH) if speech_valid
              else ModalityResult.invalid("speech", "speech", ReasonCode.SILENCE))
    return [ModalityResult("face", "face", True, None, FACE), speech]


UNCHECKED = LearnedOptions(min_confidence=0.0, single_passthrough=False, min_skill=0.0)


def test_learned_head_matches_numpy(head_bundle: Bundle) -> None:
    with LearnedHead(head_bundle, backend_options=ORT, options=UNCHECKED) as head:
        fused = head.fuse(results(), head_bundle.manifest.fusion.weights)
        assert list(fused) == list(OUT_LABELS)
        face = np.array([FACE[label] for label in CANONICAL_LABELS])
        speech = np.array([SPEECH[label] for label in HEAD_SPEECH])
        expected = reference(face, speech, np.array([1.0, 1.0]))
        assert np.array(list(fused.values())) == pytest.approx(expected, abs=1e-6)
        assert sum(fused.values()) == pytest.approx(1.0, abs=1e-12)

        # speech silent: zeros for its probabilities and 0 in its mask slot
        alone = head.fuse(results(speech_valid=False), {})
        expected = reference(face, np.zeros(7), np.array([1.0, 0.0]))
        assert np.array(list(alone.values())) == pytest.approx(expected, abs=1e-6)
        # a weight of 0 masks an encoder just like invalidity
        assert head.fuse(results(), {"face": 1.0, "speech": 0.0}) == pytest.approx(alone, abs=1e-12)
        # an encoder the head has no input for is left out
        extra = ModalityResult("eeg", "eeg", True, None, {"happy": 1.0})
        assert head.fuse([*results(), extra], {}) == pytest.approx(fused, abs=1e-12)
        assert head.fuse([ModalityResult.invalid("face", "face", ReasonCode.NO_FACE)], {}) is None


def test_the_modality_check_masks_an_uninformative_result_and_a_lone_one_passes_through(head_bundle: Bundle) -> None:
    uniform = dict.fromkeys(SPEECH_LABELS, 1 / 7)
    face = ModalityResult("face", "face", True, None, FACE)
    with LearnedHead(head_bundle, backend_options=ORT) as head:
        # speech silent: face alone is returned as it is, not re-mapped by the head
        assert head.fuse(results(speech_valid=False), {}) == pytest.approx(FACE, abs=1e-12)
        # speech uniform: confidence 0 < 0.1, masked out, so face alone again
        assert head.fuse([face, ModalityResult("speech", "speech", True, None, uniform)], {}) == \
            pytest.approx(FACE, abs=1e-12)
        # both informative: the head runs
        assert list(head.fuse(results(), {})) == list(OUT_LABELS)
        # every result uninformative: all are kept and the head runs on them
        flat = ModalityResult("face", "face", True, None, dict.fromkeys(CANONICAL_LABELS, 1 / 7))
        assert list(head.fuse([flat, ModalityResult("speech", "speech", True, None, uniform)], {})) == list(OUT_LABELS)
    with LearnedHead(head_bundle, backend_options=ORT, options=UNCHECKED) as head:
        assert list(head.fuse(results(speech_valid=False), {})) == list(OUT_LABELS)


def test_an_encoder_below_min_skill_is_masked_out(head_bundle: Bundle) -> None:
    with LearnedHead(head_bundle, backend_options=ORT) as head:
        # speech's skill 0.05 < 0.1: masked, so face passes through alone
        assert head.fuse(results(), {"face": 0.6, "speech": 0.05}) == pytest.approx(FACE, abs=1e-12)
        # no weights given: no skill to judge by, both go to the head
        assert list(head.fuse(results(), {})) == list(OUT_LABELS)
    with LearnedHead(head_bundle, backend_options=ORT, options=LearnedOptions(min_skill=0.0)) as head:
        assert list(head.fuse(results(), {"face": 0.6, "speech": 0.05})) == list(OUT_LABELS)


def test_learned_options_are_checked(head_bundle: Bundle) -> None:
    with pytest.raises(ConfigError, match=r"min_confidence must be a number in 0\.\.1, got 2"):
        LearnedOptions(min_confidence=2)
    with pytest.raises(ConfigError, match="single_passthrough must be true or false"):
        LearnedOptions(single_passthrough="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fusion rule 'learned'"):
        create_rule("learned", bundle=head_bundle, backend_options=ORT, eps=0.1)
    rule = create_rule("learned", bundle=head_bundle, backend_options=ORT, min_confidence=0.3)
    try:
        assert isinstance(rule, LearnedHead) and rule.options.min_confidence == 0.3
    finally:
        rule.close()


def test_logits_output_is_softmaxed(head_bundle: Bundle, tmp_path: Path) -> None:
    make_head_model(head_bundle.root / "fusion" / "logits.onnx", output_op="Identity")
    head = dataclasses.replace(head_spec(head_bundle.root, kind="logits"),
                               models={"fp32": file_entry(head_bundle.root, "fusion/logits.onnx")})
    with LearnedHead(head_bundle, head, backend_options=ORT, options=UNCHECKED) as rule:
        fused = rule.fuse(results(), {})
    face = np.array([FACE[label] for label in CANONICAL_LABELS])
    speech = np.array([SPEECH[label] for label in HEAD_SPEECH])
    z = reference(face, speech, np.ones(2), logits_only=True).astype(np.float64)
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.array(list(fused.values())) == pytest.approx(expected, abs=1e-6)


def test_create_rule_builds_the_head_from_the_bundle(head_bundle: Bundle) -> None:
    rule = create_rule("learned", bundle=head_bundle, precision="auto", backend_options=ORT)
    try:
        assert isinstance(rule, LearnedHead) and rule.labels == OUT_LABELS
    finally:
        rule.close()
    # the arithmetic rules accept and ignore the bundle arguments
    assert isinstance(create_rule("weighted_mean", bundle=head_bundle, precision="auto", backend_options=ORT),
                      WeightedMean)
    with pytest.raises(BundleError, match="no int8 model"):
        LearnedHead(head_bundle, precision="int8", backend_options=ORT)


def _with_inputs(head: FusionHead, *inputs: TensorInfo) -> FusionHead:
    return dataclasses.replace(head, inputs=inputs)


def test_head_layout_is_checked(head_bundle: Bundle) -> None:
    good = head_bundle.manifest.fusion.head
    face, speech, mask = good.inputs
    cases = {
        "needs an input named 'mask'": _with_inputs(good, face, speech),
        "names no encoder": _with_inputs(good, face, dataclasses.replace(speech, name="voice"),
                                         dataclasses.replace(mask, labels=("face", "voice"))),
        "must be distinct labels of encoder speech": _with_inputs(
            good, face, dataclasses.replace(speech, labels=("surprise", *HEAD_SPEECH[1:])), mask),
        "mask labels": _with_inputs(good, face, speech, dataclasses.replace(mask, labels=("face", "face"))),
        "expected \\[1, 2\\]": _with_inputs(good, face, speech, dataclasses.replace(mask, shape=(2, 2))),
        "needs kind 'probs'": _with_inputs(good, face, dataclasses.replace(speech, kind=None), mask),
        "exactly one output": dataclasses.replace(good, outputs=()),
    }
    assert head_layout(head_bundle, good).mask.labels == ("face", "speech")
    for message, head in cases.items():
        with pytest.raises(BundleError, match=message):
            head_layout(head_bundle, head)
    unknown = TensorInfo("probs", (1, 2), kind="probs", labels=("happy", "contempt"))
    with pytest.raises(BundleError, match="'contempt' has no affect"):
        head_layout(head_bundle, dataclasses.replace(good, outputs=(unknown,)))


def test_bundle_without_head(tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match="has no fusion head"):
        LearnedHead(load_bundle(tiny_bundle), backend_options=ORT)
