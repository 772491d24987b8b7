"""Heads by name, embedding inputs fed from the encoder's own output, and multi-label outputs, on real ORT sessions."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge_mer.backends.options import TrtOptions
from edge_mer.backends.registry import create_backend
from edge_mer.backends.tensorrt.profiles import onnx_io_specs, profile_shapes
from edge_mer.bundle import load_bundle
from edge_mer.bundle.feeds import head_ranges
from edge_mer.bundle.schema import TensorInfo
from edge_mer.config import from_dict
from edge_mer.errors import BackendError, BundleError, ConfigError, InputError
from edge_mer.fusion.head_layout import split_embedding_name
from edge_mer.fusion.learned import LearnedHead, LearnedOptions, head_layout
from edge_mer.fusion.registry import create_rule
from edge_mer.fusion.smoothing import EmaSmoother
from edge_mer.pipeline.assembly import build_fusion
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.feeds import bundle_refs
from edge_mer.pipeline.runner_base import ModalityRunner
from edge_mer.pipeline.scheduler import Scheduler
from edge_mer.results import Decision, ModalityResult
from head_models import BOOSTED, EMBEDDING_GAIN, LABELS, embedding_bundle, embedding_head_spec

ALWAYS_RUN = LearnedOptions(min_confidence=0.0, single_passthrough=False, min_skill=0.0)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(embedding_bundle(tmp_path_factory.mktemp("emb") / "bundle"))


def _face(probs: np.ndarray, embedding: np.ndarray | None) -> ModalityResult:
    emb = {} if embedding is None else {"embedding": embedding.astype(np.float32)}
    return ModalityResult("face", "face", True, None, dict(zip(LABELS, probs.tolist())), embeddings=emb)


def test_the_runner_puts_the_encoders_embedding_beside_its_probabilities(bundle) -> None:
    spec = bundle.encoder("face")
    with create_backend(bundle.model_ref("face", "fp32")) as backend:
        runner = ModalityRunner("face", spec, backend, 1.0, 2.0)
        batch = np.zeros((2, 1, 64, 64), np.float32)
        batch[0, 0, :32, :32], batch[1, 0, 32:, 32:] = 1.0, 0.5
        rows = runner._infer(batch)
        assert rows.shape == (2, len(LABELS) + 4)
        np.testing.assert_allclose(rows[:, :len(LABELS)].sum(axis=1), 1.0, atol=1e-6)
        means = runner.embedding_means(rows)
        np.testing.assert_allclose(means["embedding"], [0.5, 0.0, 0.0, 0.25], atol=1e-6)
        assert abs(sum(runner.canonical(rows).values()) - 1.0) < 1e-9


def test_the_named_head_is_fed_the_embedding_and_its_label_set_is_reported(bundle) -> None:
    probs = np.full(len(LABELS), 1.0 / len(LABELS))
    with LearnedHead(bundle, precision="fp32", options=ALWAYS_RUN, head_name="emb") as head:
        assert head.head_name == "emb" and head.last_labels_active == {}
        flat = head.fuse([_face(probs, np.zeros(4))], {})
        boosted = head.fuse([_face(probs, np.full(4, 0.25))], {})
        # sum(embedding) = 1 adds EMBEDDING_GAIN to the boosted label's logit; nothing else moves.
        ratio = boosted[BOOSTED] / boosted["sad"] / (flat[BOOSTED] / flat["sad"])
        assert abs(np.log(ratio) - EMBEDDING_GAIN) < 1e-3
        active = head.last_labels_active
        assert list(active) == [BOOSTED] and active[BOOSTED] > 0.99
        # Not renormalised: with no embedding every sigmoid is below 0.5, so the set is empty.
        head.fuse([_face(probs, np.zeros(4))], {})
        assert head.last_labels_active == {}


def test_an_absent_embedding_is_fed_as_zeros_and_a_wrong_one_is_refused(bundle) -> None:
    probs = np.full(len(LABELS), 1.0 / len(LABELS))
    with LearnedHead(bundle, precision="fp32", options=ALWAYS_RUN, head_name="emb") as head:
        assert head.fuse([_face(probs, None)], {}) == pytest.approx(head.fuse([_face(probs, np.zeros(4))], {}))
        with pytest.raises(InputError, match=r"embedding 'embedding' has shape \[3\], the head expects \[4\]"):
            head.fuse([_face(probs, np.zeros(3))], {})


def test_the_default_head_and_unknown_names(bundle) -> None:
    with create_rule("learned", bundle=bundle, precision="fp32") as rule:
        assert rule.head_name == "stacked" and rule.last_labels_active is None
    with pytest.raises(ConfigError, match=r"fusion head 'attention' is not in bundle embedding-test "
                                          r"\(it ships: stacked, emb\)"):
        create_rule("learned", bundle=bundle, precision="fp32", head="attention")


def test_fusion_head_needs_the_learned_rule(bundle) -> None:
    config = from_dict(RunConfig, {"fusion": {"rule": "weighted_mean", "head": "emb"}})
    with pytest.raises(ConfigError, match=r"fusion.head 'emb' is run by the fusion rule 'learned'"):
        build_fusion(config, bundle, ["face"])


def test_a_multilabel_decision_carries_labels_active_in_its_json(bundle) -> None:
    config = from_dict(RunConfig, {"fusion": {"head": "emb", "learned": {"single_passthrough": False,
                                                                          "min_confidence": 0.0}}})
    rule, weights, _ = build_fusion(config, bundle, ["face"])
    scheduler = Scheduler([], rule, weights, EmaSmoother(0.0), bundle.manifest.affect)
    probs = np.full(len(LABELS), 1.0 / len(LABELS))
    fused = scheduler._fuse([_face(probs, np.full(4, 0.25))])
    assert fused is not None and max(fused, key=fused.get) == BOOSTED
    empty = scheduler.tick(0, 0.0)  # no runner: no evidence, yet a multi-label decision still says its set
    data = json.loads(empty.json_text)
    assert data["labels_active"] == {} and data["label"] == "unknown"
    assert Decision.from_json(data).labels_active == {}
    rule.close()


def test_layout_errors_are_one_line(bundle) -> None:
    head = bundle.manifest.fusion.heads["emb"]
    bad_output = dataclasses.replace(head, inputs=(head.inputs[0], TensorInfo("face.pooled", ("N", 4), kind="embedding"),
                                                   head.inputs[2]))
    with pytest.raises(BundleError, match=r"needs kind 'embedding' and an embedding output 'pooled' of encoder face "
                                          r"\(its embedding outputs: embedding\)"):
        head_layout(bundle, bad_output)
    wrong_width = dataclasses.replace(head, inputs=(head.inputs[0], TensorInfo("face.embedding", ("N", 5),
                                                                               kind="embedding"), head.inputs[2]))
    with pytest.raises(BundleError, match=r"has shape \['N', 5\], expected \[1, 4\]"):
        head_layout(bundle, wrong_width)
    with pytest.raises(ConfigError, match="thresholds for 7 labels"):
        embedding_head_spec(Path(bundle.root), thresholds=(0.5,))


def test_every_shipped_head_gets_engine_ranges(bundle) -> None:
    refs = {r.name: r for r in bundle_refs(bundle, RunConfig())}
    assert {"fusion_head", "fusion_head.emb"} <= set(refs)
    emb = refs["fusion_head.emb"]
    assert emb.dim_ranges == head_ranges(bundle.manifest.fusion.heads["emb"])
    assert emb.dim_ranges == {"N": (1, 1, 1)}  # one decision at a time, however large the default max batch
    inputs, _ = onnx_io_specs(emb.files["fp32"].path)
    shapes = {r.name: (r.min, r.opt, r.max) for r in profile_shapes(inputs, TrtOptions(max_batch=16), emb.dim_ranges)}
    assert shapes == {"face": ((1, 7),) * 3, "face.embedding": ((1, 4),) * 3, "mask": ((1, 1),) * 3}


def test_a_failed_tick_reports_no_label_set(bundle) -> None:
    probs = np.full(len(LABELS), 1.0 / len(LABELS))
    with LearnedHead(bundle, precision="fp32", options=ALWAYS_RUN, head_name="emb") as head:
        head.fuse([_face(probs, np.full(4, 0.25))], {})
        assert head.last_labels_active
        with pytest.raises(BackendError, match="NaN or Inf"):
            head.fuse([_face(probs, np.full(4, 1e38))], {})
        assert head.last_labels_active == {}


def test_embedding_names_split_at_the_longest_encoder_name() -> None:
    assert split_embedding_name("eeg.v2.embedding", ["eeg", "eeg.v2"]) == ("eeg.v2", "embedding")
    assert split_embedding_name("eeg.embedding", ["eeg", "eeg.v2"]) == ("eeg", "embedding")
    assert split_embedding_name("speech.embedding", ["eeg"]) is None
    assert split_embedding_name("eeg.", ["eeg"]) is None
