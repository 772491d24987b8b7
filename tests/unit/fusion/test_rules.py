from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from edge_mer.bundle import CANONICAL_LABELS, default_bundle_path, load_bundle
from edge_mer.errors import ConfigError, InputError
from edge_mer.fusion.registry import RULES, create_rule
from edge_mer.fusion.reliability import ReliabilityRule
from edge_mer.fusion.rules import CombiningRule, LogLinear, WeightedMean, extend_to_labels, label_order
from edge_mer.names import ReasonCode
from edge_mer.results import ModalityResult

SPEECH_LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "neutral")
EEG_LABELS = ("happy", "sad", "fear")


def result(encoder: str, probs: dict[str, float], modality: str = "face") -> ModalityResult:
    return ModalityResult(modality, encoder, True, None, probs)


def one_hot(labels: tuple[str, ...], hot: str) -> dict[str, float]:
    return {label: 1.0 if label == hot else 0.0 for label in labels}


def uniform(labels: tuple[str, ...]) -> dict[str, float]:
    return {label: 1.0 / len(labels) for label in labels}


A = result("a", {"happy": 0.6, "sad": 0.3, "fear": 0.1})
B = result("b", {"happy": 0.2, "sad": 0.2, "fear": 0.6}, "speech")


def test_weighted_mean_worked_example() -> None:
    # weights 3:1 -> 0.75/0.25: happy .75*.6+.25*.2 = .5, sad .75*.3+.25*.2 = .275, fear .75*.1+.25*.6 = .225
    fused = WeightedMean().fuse([A, B], {"a": 3.0, "b": 1.0})
    assert fused == pytest.approx({"happy": 0.5, "sad": 0.275, "fear": 0.225}, abs=1e-12)
    assert list(fused) == ["fear", "happy", "sad"]  # canonical order


def test_log_linear_worked_example() -> None:
    # p ∝ pa^.75 * pb^.25: happy .6^.75*.2^.25 = .45590, sad .3^.75*.2^.25 = .27108, fear .1^.75*.6^.25 = .15651
    fused = LogLinear().fuse([A, B], {"a": 3.0, "b": 1.0})
    assert fused == pytest.approx({"happy": 0.51602, "sad": 0.30683, "fear": 0.17715}, abs=1e-5)
    raw = {k: A.probs[k] ** 0.75 * B.probs[k] ** 0.25 for k in A.probs}
    assert fused == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()}, abs=1e-12)


@pytest.mark.parametrize("rule", [WeightedMean(), LogLinear()])
def test_single_contributor_yields_its_own_distribution(rule) -> None:
    assert rule.fuse([A], {"a": 0.2}) == pytest.approx(A.probs, abs=1e-12)


@pytest.mark.parametrize("rule", [WeightedMean(), LogLinear()])
def test_invalid_modality_is_left_out_and_weights_renormalised(rule) -> None:
    c = result("c", {"happy": 0.1, "sad": 0.1, "fear": 0.8}, "eeg")
    dead = ModalityResult.invalid("speech", "b", ReasonCode.SILENCE)
    weights = {"a": 1.0, "b": 5.0, "c": 3.0}
    with_invalid = rule.fuse([A, dead, c], weights)
    assert with_invalid == pytest.approx(rule.fuse([A, c], weights), abs=1e-12)
    if isinstance(rule, WeightedMean):
        # a:c = 1:3 -> .25/.75, whatever b's weight was
        assert with_invalid == pytest.approx({"happy": 0.225, "sad": 0.15, "fear": 0.625}, abs=1e-12)


@pytest.mark.parametrize("rule", [WeightedMean(), LogLinear()])
def test_all_invalid_or_no_results_is_none(rule) -> None:
    dead = [ModalityResult.invalid("face", "face", ReasonCode.NO_FACE), ModalityResult.invalid("speech", "speech", ReasonCode.SILENCE)]
    assert rule.fuse(dead, {}) is None
    assert rule.fuse([], {"face": 1.0}) is None


@pytest.mark.parametrize("rule", [WeightedMean(), LogLinear()])
def test_zero_weights(rule) -> None:
    assert rule.fuse([A, B], {"a": 0.0, "b": 0.0}) is None
    # a weight of 0 leaves the encoder out entirely, labels included
    only_b = rule.fuse([A, result("x", {"boredom": 1.0})], {"a": 1.0, "x": 0.0})
    assert only_b == pytest.approx(A.probs, abs=1e-12)


def test_empty_weights_mean_equal_weights() -> None:
    fused = WeightedMean().fuse([A, B], {})
    assert fused == pytest.approx({"happy": 0.4, "sad": 0.25, "fear": 0.35}, abs=1e-12)


def test_encoder_missing_from_weights_weighs_zero_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    rule = WeightedMean()
    with caplog.at_level(logging.WARNING, logger="edge_mer.fusion.base"):
        first = rule.fuse([A, B], {"a": 1.0})
        second = rule.fuse([A, B], {"a": 1.0})
    assert first == second == pytest.approx(A.probs, abs=1e-12)
    warnings = [r for r in caplog.records if "'b'" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_weight_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="'a'"):
        WeightedMean().fuse([A], {"a": bad})


@pytest.mark.parametrize("probs", [{}, {"happy": -0.1, "sad": 1.1}, {"happy": math.nan}, {"happy": 2.0, "sad": 3.0}])
def test_valid_result_with_bad_probabilities_is_an_input_error(probs: dict[str, float]) -> None:
    with pytest.raises(InputError, match="encoder 'z'"):
        WeightedMean().fuse([result("z", probs)], {})


def test_float32_rounding_is_renormalised() -> None:
    fused = WeightedMean().fuse([result("a", {"happy": 0.7000001, "sad": 0.3000001})], {})
    assert sum(fused.values()) == pytest.approx(1.0, abs=1e-15)


def test_log_linear_with_a_zero_probability_is_finite() -> None:
    # face rules sad out (p=0); speech is sure of sad. eps=1e-6 floors the zero: the veto is strong, finite.
    face = result("face", {"happy": 0.5, "sad": 0.0, "neutral": 0.5})
    speech = result("speech", {"happy": 0.0, "sad": 1.0, "neutral": 0.0}, "speech")
    fused = LogLinear(eps=1e-6).fuse([face, speech], {})
    values = np.array(list(fused.values()))
    assert np.isfinite(values).all() and sum(values) == pytest.approx(1.0)
    # every label has one zero: happy/neutral sqrt(.5*eps), sad sqrt(eps*1) -> sad = sqrt(2) * happy
    assert fused["sad"] / fused["happy"] == pytest.approx(math.sqrt(2), rel=1e-9)
    assert fused["happy"] == pytest.approx(fused["neutral"])


def test_log_linear_eps_is_checked() -> None:
    for eps in (0.0, 1.0, -1e-3):
        with pytest.raises(ConfigError, match="eps"):
            LogLinear(eps=eps)


# --- the coverage rule ------------------------------------------------------------------------------------------


def test_extension_keeps_proportions_and_gives_missing_labels_the_uniform_share() -> None:
    labels = CANONICAL_LABELS  # 7
    vec = extend_to_labels({"happy": 0.5, "sad": 0.25, "fear": 0.25}, labels)
    expected = {"happy": 0.5 * 3 / 7, "sad": 0.25 * 3 / 7, "fear": 0.25 * 3 / 7}
    assert dict(zip(labels, vec)) == pytest.approx({label: expected.get(label, 1 / 7) for label in labels})
    assert vec.sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="boredom"):
        extend_to_labels({"boredom": 1.0}, labels)


@pytest.mark.parametrize("rule", [WeightedMean(), LogLinear()])
def test_uninformative_partial_encoder_does_not_favour_its_labels(rule) -> None:
    # The naive per-label rule would give happy/sad/fear (1/7 + 1/3) / 2 and the rest 1/7.
    face = result("face", uniform(CANONICAL_LABELS))
    eeg = result("eeg", uniform(EEG_LABELS), "eeg")
    fused = rule.fuse([face, eeg], {})
    assert fused == pytest.approx(uniform(CANONICAL_LABELS), abs=1e-12)


def test_partial_encoder_shifts_mass_only_within_its_labels() -> None:
    # EEG sure of fear, extended to 7 labels: fear 3/7, happy = sad = 0, the other four 1/7 each.
    face = result("face", uniform(CANONICAL_LABELS))
    eeg = result("eeg", one_hot(EEG_LABELS, "fear"), "eeg")
    fused = WeightedMean().fuse([face, eeg], {})
    assert fused["fear"] == pytest.approx((1 / 7 + 3 / 7) / 2)
    assert fused["happy"] == fused["sad"] == pytest.approx(1 / 14)
    for label in ("angry", "disgust", "surprise", "neutral"):
        assert fused[label] == pytest.approx(1 / 7)


def test_label_only_one_encoder_has_does_not_count_double() -> None:
    # Face happy:1 (no boredom), speech boredom:1 (no surprise); union of 8 labels.
    # Face -> happy 7/8, boredom 1/8; speech -> boredom 7/8, surprise 1/8; mean of the two.
    face = result("face", one_hot(CANONICAL_LABELS, "happy"))
    speech = result("speech", one_hot(SPEECH_LABELS, "boredom"), "speech")
    fused = WeightedMean().fuse([face, speech], {})
    assert list(fused) == [*CANONICAL_LABELS, "boredom"]
    assert fused["boredom"] == pytest.approx(0.5)
    assert fused["happy"] == pytest.approx(7 / 16)
    assert fused["surprise"] == pytest.approx(1 / 16)
    assert sum(fused.values()) == pytest.approx(1.0)


def test_result_order_does_not_change_the_output() -> None:
    face = result("face", {**uniform(CANONICAL_LABELS)})
    speech = result("speech", one_hot(SPEECH_LABELS, "boredom"), "speech")
    eeg = result("eeg", {"happy": 0.2, "sad": 0.5, "fear": 0.3}, "eeg")
    for rule in (WeightedMean(), LogLinear()):
        forward = rule.fuse([face, speech, eeg], {})
        backward = rule.fuse([eeg, speech, face], {})
        assert list(forward) == list(backward) and forward == pytest.approx(backward, abs=1e-15)
    assert label_order({"boredom", "zzz", "sad", "angry"}) == ("angry", "sad", "boredom", "zzz")


def _default_bundle_results(rng: np.random.Generator) -> tuple[list[ModalityResult], dict[str, float]]:
    bundle = load_bundle(default_bundle_path(), verify_hashes=False)
    results = []
    for name, spec in bundle.manifest.encoders.items():
        labels = tuple(dict.fromkeys(spec.label_map[label] for label in spec.labels))
        p = rng.dirichlet(np.ones(len(labels)))
        results.append(ModalityResult(spec.modality, name, True, None, dict(zip(labels, p.tolist()))))
    return results, dict(bundle.manifest.fusion.weights)


@pytest.mark.parametrize("rule_name", sorted(n for n, c in RULES.items() if issubclass(c, CombiningRule)))
def test_default_bundle_label_sets(rule_name: str) -> None:
    rng = np.random.default_rng(3)
    results, weights = _default_bundle_results(rng)
    by_name = {r.encoder: r for r in results}
    assert set(by_name["face"].probs) == set(CANONICAL_LABELS) and "boredom" in by_name["speech"].probs
    assert set(by_name["eeg"].probs) == set(EEG_LABELS)
    rule = create_rule(rule_name)
    for _ in range(20):
        results, _ = _default_bundle_results(rng)
        fused = rule.fuse(results, weights)
        values = np.array(list(fused.values()))
        # The reliability rule leaves an uninformative speech out, its boredom label with it.
        speech_out = isinstance(rule, ReliabilityRule) and rule.last_weights["speech"] == 0.0
        assert list(fused) == [*CANONICAL_LABELS, *([] if speech_out else ["boredom"])]
        assert np.isfinite(values).all() and (values >= 0).all() and values.sum() == pytest.approx(1.0, abs=1e-12)
    if rule_name == "weighted_mean":
        # boredom: only speech has it; face and both EEG encoders each give it 1/8 (uniform share of 8 labels),
        # speech its own probability times the share of the 8 fused labels it covers
        by_name = {r.encoder: r for r in results}
        total = sum(weights.values())
        others = (weights["face"] + weights["eeg"] + weights["eeg_cyton"]) / total
        share = len(by_name["speech"].probs) / 8
        expected = weights["speech"] / total * share * by_name["speech"].probs["boredom"] + others / 8
        assert fused["boredom"] == pytest.approx(expected, abs=1e-12)


def test_default_bundle_with_speech_invalid_has_no_boredom() -> None:
    results, weights = _default_bundle_results(np.random.default_rng(5))
    results = [ModalityResult.invalid("speech", "speech", ReasonCode.SILENCE) if r.encoder == "speech" else r for r in results]
    fused = WeightedMean().fuse(results, weights)
    assert list(fused) == list(CANONICAL_LABELS)
    assert sum(fused.values()) == pytest.approx(1.0)


def test_create_rule() -> None:
    assert isinstance(create_rule("weighted_mean"), WeightedMean)
    assert create_rule("log_linear", eps=1e-4).eps == 1e-4
    with pytest.raises(ConfigError, match="unknown fusion rule 'median'"):
        create_rule("median")
    with pytest.raises(ConfigError, match="bundle"):
        create_rule("learned")
    with pytest.raises(ConfigError, match="weighted_mean"):
        create_rule("weighted_mean", eps=1e-3)
