"""The reliability rule: the worked examples of its module docstring, its invariants, its options."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_mer.config import from_dict
from edge_mer.errors import ConfigError
from edge_mer.fusion.options import FusionConfig
from edge_mer.fusion.registry import RULES, create_rule
from edge_mer.fusion.reliability import (CONFIDENCE_MEASURES, ReliabilityOptions, ReliabilityRule, ReportsWeights,
                                         confidence, js_divergence_bits)
from edge_mer.fusion.rules import WeightedMean, extend_to_labels, label_order
from edge_mer.names import ReasonCode
from edge_mer.results import Decision, ModalityResult

FACE_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPEECH_LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "neutral")
EEG_LABELS = ("happy", "sad", "fear")
#: The docstring's skills: face 0.63, a weaker speech encoder 0.35, the default bundle's EEG 0.0261.
SKILLS = {"face": 0.63, "speech": 0.35, "eeg": 0.0261}


def peaked(labels: tuple[str, ...], top: str, p: float) -> dict[str, float]:
    rest = (1.0 - p) / (len(labels) - 1)
    return {label: p if label == top else rest for label in labels}


def valid(encoder: str, probs: dict[str, float]) -> ModalityResult:
    return ModalityResult(encoder, encoder, True, None, probs)


FACE_HAPPY = valid("face", peaked(FACE_LABELS, "happy", 0.8))
SPEECH_UNIFORM = valid("speech", {label: 1 / 7 for label in SPEECH_LABELS})
SPEECH_ANGRY = valid("speech", peaked(SPEECH_LABELS, "angry", 0.9))
EEG_CHANCE = valid("eeg", {"happy": 0.36, "sad": 0.33, "fear": 0.31})


def test_the_rule_is_registered_and_reports_weights() -> None:
    assert RULES["reliability"] is ReliabilityRule
    rule = create_rule("reliability", min_confidence=0.2, confidence="entropy")
    assert isinstance(rule, ReliabilityRule) and isinstance(rule, ReportsWeights)
    assert rule.options == ReliabilityOptions(confidence="entropy", min_confidence=0.2)
    assert not isinstance(WeightedMean(), ReportsWeights)


# --- the worked examples of the module docstring -------------------------------------------------------------


def test_example_1_uninformative_speech_is_left_out() -> None:
    rule = ReliabilityRule()
    assert confidence(list(FACE_HAPPY.probs.values())) == pytest.approx(0.7667, abs=5e-5)
    assert 0.63 * 0.7667 == pytest.approx(0.4830, abs=1e-4)
    fused = rule.fuse([FACE_HAPPY, SPEECH_UNIFORM], SKILLS)
    assert fused == pytest.approx(FACE_HAPPY.probs, abs=1e-12) and "boredom" not in fused
    checks = {c.encoder: c for c in rule.last_report.checks}
    assert checks["speech"].confidence == 0.0 and checks["speech"].verdict == "uninformative"
    assert rule.last_weights == {"face": 1.0, "speech": 0.0}
    mean = WeightedMean().fuse([FACE_HAPPY, SPEECH_UNIFORM], SKILLS)
    assert 0.35 / (0.63 + 0.35) == pytest.approx(0.357, abs=5e-4)
    assert mean["happy"] == pytest.approx(0.4946, abs=5e-5) and mean["boredom"] == pytest.approx(0.125, abs=1e-12)


def test_example_2_contradicting_speech_is_cut() -> None:
    rule = ReliabilityRule()
    fused = rule.fuse([FACE_HAPPY, SPEECH_ANGRY], SKILLS)
    assert confidence(list(SPEECH_ANGRY.probs.values())) == pytest.approx(0.8833, abs=5e-5)
    labels = label_order(set(FACE_LABELS) | set(SPEECH_LABELS))
    face, speech = (extend_to_labels(r.probs, labels) for r in (FACE_HAPPY, SPEECH_ANGRY))
    index = labels.index
    assert (face[index("happy")], face[index("boredom")]) == pytest.approx((0.7, 0.125), abs=1e-12)
    assert (speech[index("angry")], speech[index("surprise")]) == pytest.approx((0.7875, 0.125), abs=1e-12)
    checks = {c.encoder: c for c in rule.last_report.checks}
    assert checks["speech"].divergence == pytest.approx(0.690, abs=5e-4)
    assert checks["speech"].verdict == "contradicts" and checks["face"].verdict == "kept"
    w_face, w_speech = 0.63 * 0.7666667, 0.35 * 0.8833333 * 0.25
    assert w_speech == pytest.approx(0.0773, abs=5e-5)
    assert rule.last_weights["face"] == pytest.approx(w_face / (w_face + w_speech), abs=1e-6)
    assert (rule.last_weights["face"], rule.last_weights["speech"]) == pytest.approx((0.862, 0.138), abs=5e-4)
    assert (fused["happy"], fused["angry"], fused["boredom"]) == pytest.approx((0.6054, 0.1338, 0.1098), abs=5e-5)
    unchecked = ReliabilityRule(ReliabilityOptions(max_disagreement=1.0))
    plain = unchecked.fuse([FACE_HAPPY, SPEECH_ANGRY], SKILLS)
    assert (unchecked.last_weights["face"], unchecked.last_weights["speech"]) == pytest.approx((0.610, 0.390), abs=5e-4)
    assert (plain["happy"], plain["angry"]) == pytest.approx((0.4325, 0.3251), abs=5e-5)


def test_example_3_a_mild_disagreement_is_not_cut() -> None:
    face = valid("face", peaked(FACE_LABELS, "happy", 0.6))
    speech = valid("speech", peaked(SPEECH_LABELS, "angry", 0.6))
    rule = ReliabilityRule()
    fused = rule.fuse([face, speech], SKILLS)
    assert all(c.verdict == "kept" for c in rule.last_report.checks)
    assert rule.last_report.checks[0].divergence == pytest.approx(0.328, abs=5e-4)
    assert rule.last_report.checks[0].confidence == pytest.approx(0.5333, abs=5e-5)
    assert rule.last_weights == pytest.approx({"face": 0.643, "speech": 0.357}, abs=5e-4)
    assert fused == pytest.approx(WeightedMean().fuse([face, speech], SKILLS), abs=1e-12)


def test_example_4_eeg_at_chance_contributes_nothing() -> None:
    assert confidence(list(EEG_CHANCE.probs.values())) == pytest.approx(0.04, abs=1e-12)
    rule = ReliabilityRule()
    assert rule.fuse([FACE_HAPPY, EEG_CHANCE], SKILLS) == pytest.approx(FACE_HAPPY.probs, abs=1e-12)
    assert rule.last_weights["eeg"] == 0.0
    off = ReliabilityRule(ReliabilityOptions(uninformative_factor=1.0))
    off.fuse([FACE_HAPPY, EEG_CHANCE], SKILLS)
    assert 0.0261 * 0.04 == pytest.approx(0.00104, abs=5e-6)
    assert off.last_weights["eeg"] == pytest.approx(0.0022, abs=5e-5)
    assert 0.0261 / (0.63 + 0.0261) == pytest.approx(0.0398, abs=5e-5)  # weighted_mean's share


# --- the pieces -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", CONFIDENCE_MEASURES)
@pytest.mark.parametrize("k", [2, 3, 7, 8])
def test_confidence_is_0_for_uniform_and_1_for_one_hot_whatever_k(measure: str, k: int) -> None:
    assert confidence([1.0 / k] * k, measure) == 0.0
    assert confidence([1.0] + [0.0] * (k - 1), measure) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < confidence([0.6] + [0.4 / (k - 1)] * (k - 1), measure) < 1.0
    assert confidence([1.0], measure) == 0.0  # one label: the coverage rule makes it uniform


def test_entropy_confidence_sees_the_second_label() -> None:
    two_peaks, one_peak = [0.5, 0.5, 0.0], [0.5, 0.25, 0.25]
    assert confidence(two_peaks, "top") == confidence(one_peak, "top")
    assert confidence(two_peaks, "entropy") != confidence(one_peak, "entropy")


def test_js_divergence_is_bounded_symmetric_and_zero_on_equal() -> None:
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert js_divergence_bits(p, q) == pytest.approx(1.0) and js_divergence_bits(p, p) == 0.0
    r = np.array([0.2, 0.8])
    assert js_divergence_bits(p, r) == pytest.approx(js_divergence_bits(r, p), abs=1e-15)


# --- invariants -------------------------------------------------------------------------------------------------


def test_one_modality_yields_its_own_distribution_even_uniform() -> None:
    rule = ReliabilityRule()
    assert rule.fuse([EEG_CHANCE], SKILLS) == pytest.approx(EEG_CHANCE.probs, abs=1e-12)
    assert rule.fuse([SPEECH_UNIFORM], SKILLS) == pytest.approx(SPEECH_UNIFORM.probs, abs=1e-12)
    assert rule.last_weights == {"speech": 1.0}


def test_every_modality_uninformative_falls_back_to_the_skills() -> None:
    face = valid("face", {label: 1 / 7 for label in FACE_LABELS})
    rule = ReliabilityRule()
    fused = rule.fuse([face, EEG_CHANCE], SKILLS)
    assert fused == pytest.approx(WeightedMean().fuse([face, EEG_CHANCE], SKILLS), abs=1e-12)
    assert rule.last_report.fallback and rule.last_weights["face"] == pytest.approx(0.63 / (0.63 + 0.0261))


def test_invalid_and_unweighted_results_are_reported_as_zero() -> None:
    dead = ModalityResult.invalid("eeg", "eeg", ReasonCode.BAD_CHANNELS)
    rule = ReliabilityRule()
    fused = rule.fuse([FACE_HAPPY, SPEECH_ANGRY, dead], {"face": 0.63, "speech": 0.0, "eeg": 0.5})
    assert fused == pytest.approx(FACE_HAPPY.probs, abs=1e-12)
    assert rule.last_weights == {"face": 1.0, "speech": 0.0, "eeg": 0.0}
    assert rule.fuse([dead], SKILLS) is None and rule.last_weights == {}


def test_a_strong_contradiction_with_a_more_reliable_modality_cuts_only_the_weaker() -> None:
    rule = ReliabilityRule(ReliabilityOptions(contradiction_factor=0.0))
    assert rule.fuse([FACE_HAPPY, SPEECH_ANGRY], SKILLS) == pytest.approx(FACE_HAPPY.probs, abs=1e-12)
    # Equal weights: neither is outweighed by the other, so neither is cut.
    speech = valid("speech", peaked(SPEECH_LABELS, "angry", 0.8))
    rule.fuse([FACE_HAPPY, speech], {"face": 1.0, "speech": 1.0})
    assert [c.verdict for c in rule.last_report.checks] == ["kept", "kept"]


def test_the_odd_one_out_of_three_is_cut() -> None:
    eeg = valid("eeg", peaked(EEG_LABELS, "happy", 0.95))
    speech = valid("speech", peaked(SPEECH_LABELS, "happy", 0.8))
    rule = ReliabilityRule()
    rule.fuse([FACE_HAPPY, speech, valid("eeg", peaked(EEG_LABELS, "sad", 0.99))], {"face": 1, "speech": 1, "eeg": 1})
    verdicts = {c.encoder: c.verdict for c in rule.last_report.checks}
    assert verdicts == {"face": "kept", "speech": "kept", "eeg": "contradicts"}
    rule.fuse([FACE_HAPPY, speech, eeg], {"face": 1, "speech": 1, "eeg": 1})
    assert all(c.verdict == "kept" for c in rule.last_report.checks)


# --- properties -------------------------------------------------------------------------------------------------

LABEL_SETS = {"face": FACE_LABELS, "speech": SPEECH_LABELS, "eeg": EEG_LABELS}
PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


@st.composite
def ticks(draw: st.DrawFn) -> tuple[list[ModalityResult], dict[str, float]]:
    encoders = draw(st.lists(st.sampled_from(sorted(LABEL_SETS)), min_size=1, max_size=3, unique=True))
    results, skills = [], {}
    for name in encoders:
        labels = LABEL_SETS[name]
        raw = draw(st.lists(st.floats(0.0, 1.0), min_size=len(labels), max_size=len(labels)))
        if sum(raw) <= 1e-6:
            raw = [1.0] * len(labels)
        results.append(valid(name, {label: v / sum(raw) for label, v in zip(labels, raw)}))
        skills[name] = draw(st.floats(0.001, 1.0))
    return results, skills


options = st.builds(ReliabilityOptions, st.sampled_from(CONFIDENCE_MEASURES), st.floats(0, 1), st.floats(0, 1),
                    st.floats(0, 1), st.floats(0, 1))


@PROPERTIES
@given(ticks(), options)
def test_output_is_a_distribution_and_weights_are_shares(tick, opts: ReliabilityOptions) -> None:
    results, skills = tick
    rule = ReliabilityRule(opts)
    fused = rule.fuse(results, skills)
    assert fused is not None and all(p >= 0 for p in fused.values())
    assert math.fsum(fused.values()) == pytest.approx(1.0, abs=1e-9)
    assert math.fsum(rule.last_weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert set(rule.last_weights) == {r.encoder for r in results}


@PROPERTIES
@given(ticks(), options, st.randoms(use_true_random=False))
def test_results_and_weights_do_not_depend_on_order(tick, opts: ReliabilityOptions, rnd) -> None:
    results, skills = tick
    shuffled = list(results)
    rnd.shuffle(shuffled)
    rule = ReliabilityRule(opts)
    first, first_weights = rule.fuse(results, skills), rule.last_weights
    assert rule.fuse(shuffled, skills) == pytest.approx(first, abs=1e-12)
    assert rule.last_weights == pytest.approx(first_weights, abs=1e-12)


@PROPERTIES
@given(ticks(), options, st.sampled_from(sorted(LABEL_SETS)), st.floats(0.001, 1.0))
def test_a_uniform_modality_never_changes_the_result(tick, opts: ReliabilityOptions, name: str, skill: float) -> None:
    results, skills = tick
    results = [r for r in results if r.encoder != name]
    if not results:
        return
    rule = ReliabilityRule(opts)
    alone = rule.fuse(results, skills)
    uniform = valid(name, {label: 1.0 / len(LABEL_SETS[name]) for label in LABEL_SETS[name]})
    with_uniform = rule.fuse([*results, uniform], {**skills, name: skill})
    if rule.last_report.fallback:  # every other modality uninformative as well: the skills decide
        return
    assert with_uniform == pytest.approx(alone, abs=1e-12) and rule.last_weights[name] == 0.0


@PROPERTIES
@given(ticks(), st.sampled_from(CONFIDENCE_MEASURES))
def test_the_check_switched_off_is_the_weighted_mean_of_skill_times_confidence(tick, measure: str) -> None:
    results, skills = tick
    off = ReliabilityOptions(measure, min_confidence=0.0, max_disagreement=1.0)
    fused = ReliabilityRule(off).fuse(results, skills)
    weights = {r.encoder: skills[r.encoder] * confidence(list(r.probs.values()), measure) for r in results}
    if len(results) == 1 or not any(weights.values()):
        weights = skills
    assert fused == pytest.approx(WeightedMean().fuse(results, weights), abs=1e-9)


# --- options ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"min_confidence": 1.5}, "min_confidence must be a number in 0..1, got 1.5"),
    ({"uninformative_factor": -0.1}, "uninformative_factor must be a number in 0..1, got -0.1"),
    ({"max_disagreement": math.nan}, "max_disagreement must be a number in 0..1, got nan"),
    ({"contradiction_factor": True}, "contradiction_factor must be a number in 0..1, got True"),
    ({"confidence": "median"}, "confidence must be one of top, entropy, got 'median'"),
])
def test_options_are_validated_with_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ReliabilityOptions(**kwargs)
    assert str(info.value) == message
    with pytest.raises(ConfigError, match=f"^fusion rule 'reliability': {message}"):
        create_rule("reliability", **kwargs)


def test_an_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="^fusion rule 'reliability': .*'eps'"):
        create_rule("reliability", eps=0.1)


def test_the_fusion_reliability_table_maps_one_to_one(caplog: pytest.LogCaptureFixture) -> None:
    config = from_dict(FusionConfig, {"rule": "reliability", "reliability": {"max_disagreement": 0.3,
                                                                            "confidence": "entropy"}})
    assert config.reliability == ReliabilityOptions(confidence="entropy", max_disagreement=0.3)
    assert create_rule("reliability", **config.rule_options("reliability")).options == config.reliability
    assert FusionConfig().rule_options("weighted_mean") == {} and not caplog.records
    assert config.rule_options("log_linear") == {}
    assert "fusion.reliability is set but the fusion rule is 'log_linear'" in caplog.text
    with pytest.raises(ConfigError, match="^reliability: min_confidence must be a number in 0..1, got 2.0$"):
        from_dict(FusionConfig, {"reliability": {"min_confidence": 2}})
    with pytest.raises(ConfigError, match="^unknown key reliability.eps"):
        from_dict(FusionConfig, {"reliability": {"eps": 0.1}})


def test_decisions_carry_fusion_weights_only_when_a_rule_reports_them() -> None:
    decision = Decision(1.0, "happy", {"happy": 1.0}, 0.8, 0.1, (FACE_HAPPY,), 1.0, (), {"face": 0.8623456789})
    data = decision.to_json()
    assert list(data)[-1] == "fusion_weights" and data["fusion_weights"] == {"face": 0.862346}
    assert Decision.from_json(json.loads(decision.json_text)).fusion_weights == {"face": 0.862346}
    assert "fusion_weights" not in Decision(1.0, "happy", {"happy": 1.0}, 0.8, 0.1, (FACE_HAPPY,), 1.0).to_json()
