"""The Monte-Carlo rule: determinism by seed, its uncertainty, the coverage rule, its options and the decision JSON."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.config import from_dict
from edge_mer.errors import ConfigError
from edge_mer.fusion.base import ReportsUncertainty
from edge_mer.fusion.monte_carlo import MonteCarloOptions, MonteCarloRule, log_dirichlet
from edge_mer.fusion.options import RULE_TABLES, FusionConfig
from edge_mer.fusion.registry import RULES, create_rule
from edge_mer.fusion.rules import LogLinear, label_order
from edge_mer.fusion.smoothing import EmaSmoother
from edge_mer.names import NO_EVIDENCE, ReasonCode
from edge_mer.pipeline.scheduler import Scheduler
from edge_mer.results import Decision, ModalityResult, Uncertainty

FACE_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPEECH_LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EEG_LABELS = ("happy", "sad", "fear")
SKILLS = {"face": 0.63, "speech": 0.24, "eeg": 0.026}


def peaked(labels: tuple[str, ...], top: str, p: float) -> dict[str, float]:
    rest = (1.0 - p) / (len(labels) - 1)
    return {label: p if label == top else rest for label in labels}


def valid(encoder: str, probs: dict[str, float]) -> ModalityResult:
    return ModalityResult(encoder, encoder, True, None, probs)


FACE_HAPPY = valid("face", peaked(FACE_LABELS, "happy", 0.8))
SPEECH_HAPPY = valid("speech", peaked(SPEECH_LABELS, "happy", 0.8))
SPEECH_ANGRY = valid("speech", peaked(SPEECH_LABELS, "angry", 0.8))
EEG_FEAR = valid("eeg", peaked(EEG_LABELS, "fear", 0.6))
TICK = [FACE_HAPPY, SPEECH_ANGRY, EEG_FEAR]


def fused_run(rule: MonteCarloRule, ticks: int = 5) -> list[tuple[dict[str, float], Uncertainty]]:
    out = []
    for _ in range(ticks):
        fused = rule.fuse(TICK, SKILLS)
        out.append((fused, rule.last_uncertainty))
    return out


def test_the_rule_is_registered_reports_uncertainty_and_has_a_table() -> None:
    assert RULES["monte_carlo"] is MonteCarloRule
    assert RULE_TABLES["monte_carlo"] == "monte_carlo"
    rule = create_rule("monte_carlo", samples=500, seed=7)
    assert isinstance(rule, MonteCarloRule) and isinstance(rule, ReportsUncertainty)
    assert rule.options == MonteCarloOptions(samples=500, seed=7)
    assert not isinstance(LogLinear(), ReportsUncertainty)
    assert MonteCarloOptions() == MonteCarloOptions(samples=200, concentration=100.0, seed=0, level=0.9)


def test_same_seed_replays_identically_and_ticks_differ() -> None:
    first = fused_run(MonteCarloRule(MonteCarloOptions(seed=3)))
    second = fused_run(MonteCarloRule(MonteCarloOptions(seed=3)))
    assert first == second  # bit for bit: same seed, same tick indices
    # Each tick draws from its own stream (seed, tick index): the same input gives a slightly different fusion.
    assert first[0][0] != first[1][0]
    assert max(abs(first[0][0][k] - first[1][0][k]) for k in first[0][0]) < 0.05


def test_tick_index_counts_every_call_even_ones_that_fuse_nothing() -> None:
    rule = MonteCarloRule()
    assert rule.fuse([ModalityResult.invalid("face", "face", ReasonCode.NO_FACE, "no face")], SKILLS) is None
    assert rule.last_uncertainty is None and rule.ticks == 1
    second_tick = rule.fuse(TICK, SKILLS)
    fresh = MonteCarloRule()
    assert fresh.fuse(TICK, SKILLS) != second_tick  # tick 0's draws, not tick 1's
    assert fresh.fuse(TICK, SKILLS) == second_tick


def test_different_seeds_differ_slightly() -> None:
    a = MonteCarloRule(MonteCarloOptions(seed=1)).fuse(TICK, SKILLS)
    b = MonteCarloRule(MonteCarloOptions(seed=2)).fuse(TICK, SKILLS)
    assert a != b and set(a) == set(b)
    assert max(abs(a[k] - b[k]) for k in a) < 0.05
    assert max(a, key=a.get) == max(b, key=b.get) == "happy"


def test_a_confident_lone_modality_agrees_with_itself() -> None:
    rule = MonteCarloRule()
    face = valid("face", peaked(FACE_LABELS, "happy", 0.95))
    fused = rule.fuse([face], SKILLS)
    u = rule.last_uncertainty
    assert fused == pytest.approx(face.probs, abs=0.01)  # the mean of draws around it
    assert u.agreement == 1.0
    lo, hi = u.interval
    assert lo < 0.95 < hi and hi - lo < 0.1
    assert u.level == 0.9 and u.samples == 200
    entropy = -sum(p * math.log(p) for p in fused.values())
    assert u.entropy == pytest.approx(entropy, rel=1e-12)


def test_conflicting_modalities_agree_less_and_carry_more_entropy() -> None:
    agreeing, conflicting = MonteCarloRule(), MonteCarloRule()
    weights = {"face": 1.0, "speech": 1.0}
    agreeing.fuse([FACE_HAPPY, SPEECH_HAPPY], weights)
    conflicting.fuse([FACE_HAPPY, SPEECH_ANGRY], weights)
    a, c = agreeing.last_uncertainty, conflicting.last_uncertainty
    assert a.agreement == 1.0 and c.agreement < 0.9
    assert c.entropy > a.entropy + 0.5
    assert (c.interval[1] - c.interval[0]) > (a.interval[1] - a.interval[0])


def test_a_higher_level_gives_a_wider_interval_from_the_same_draws() -> None:
    narrow = MonteCarloRule(MonteCarloOptions(level=0.5))
    wide = MonteCarloRule(MonteCarloOptions(level=0.99))
    assert narrow.fuse(TICK, SKILLS) == wide.fuse(TICK, SKILLS)  # the level changes no draw
    (n_lo, n_hi), (w_lo, w_hi) = narrow.last_uncertainty.interval, wide.last_uncertainty.interval
    assert w_lo < n_lo < n_hi < w_hi


def test_large_concentration_tends_to_log_linear() -> None:
    rule = MonteCarloRule(MonteCarloOptions(concentration=1e6, samples=50))
    fused = rule.fuse(TICK, SKILLS)
    assert fused == pytest.approx(LogLinear().fuse(TICK, SKILLS), abs=2e-3)
    assert rule.last_uncertainty.agreement == 1.0


def test_weights_are_exponents_a_zero_weight_is_left_out() -> None:
    rule = MonteCarloRule()
    fused = rule.fuse([FACE_HAPPY, SPEECH_ANGRY], {"face": 1.0, "speech": 0.0})
    assert set(fused) == set(FACE_LABELS)  # speech (and boredom) left out
    assert fused == pytest.approx(FACE_HAPPY.probs, abs=0.02)
    skewed = MonteCarloRule().fuse([FACE_HAPPY, SPEECH_ANGRY], {"face": 0.9, "speech": 0.1})
    assert skewed["happy"] > 0.6 > skewed["angry"]


def test_nothing_to_fuse_is_none() -> None:
    rule = MonteCarloRule()
    rule.fuse(TICK, SKILLS)
    assert rule.last_uncertainty is not None
    assert rule.fuse([], SKILLS) is None and rule.last_uncertainty is None
    invalid = ModalityResult.invalid("speech", "speech", ReasonCode.SILENCE, "silence")
    assert rule.fuse([invalid], SKILLS) is None and rule.last_uncertainty is None


def test_label_sets_follow_the_coverage_rule() -> None:
    rule = MonteCarloRule()
    assert tuple(rule.fuse([FACE_HAPPY, EEG_FEAR], SKILLS)) == FACE_LABELS
    both = rule.fuse([FACE_HAPPY, SPEECH_ANGRY], SKILLS)
    assert tuple(both) == label_order(set(FACE_LABELS) | set(SPEECH_LABELS))
    assert "boredom" in both
    assert tuple(rule.fuse([EEG_FEAR], SKILLS)) == label_order(set(EEG_LABELS)) == ("fear", "happy", "sad")
    # An uninformative partial encoder does not favour its labels: a uniform face with a uniform EEG stays
    # uniform (up to the draws' noise), where dropping EEG on the labels it lacks would favour happy/sad/fear.
    face = valid("face", {label: 1 / 7 for label in FACE_LABELS})
    eeg = valid("eeg", {label: 1 / 3 for label in EEG_LABELS})
    fused = MonteCarloRule(MonteCarloOptions(samples=2000)).fuse([face, eeg], {"face": 1.0, "eeg": 1.0})
    assert fused == pytest.approx({label: 1 / 7 for label in FACE_LABELS}, abs=0.01)


def test_default_bundle_label_sets_and_order_independence() -> None:
    bundle = load_bundle(default_bundle_path())
    weights = bundle.manifest.fusion.weights
    rng = np.random.default_rng(0)
    results = [valid(name, dict(zip(spec.label_map.values(), rng.dirichlet(np.ones(len(spec.label_map))))))
               for name, spec in bundle.manifest.encoders.items() if name in ("face", "speech", "eeg")]
    fused = MonteCarloRule().fuse(results, weights)
    assert tuple(fused) == label_order({label for r in results for label in r.probs})
    assert math.isclose(sum(fused.values()), 1.0, abs_tol=1e-12) and min(fused.values()) > 0
    assert MonteCarloRule().fuse(results[::-1], weights) == pytest.approx(fused, abs=1e-12)


def test_log_dirichlet_is_finite_for_tiny_parameters_and_has_the_right_mean() -> None:
    alpha = np.array([[1e-3, 1e-3, 50.0], [2.0, 3.0, 5.0]])
    logs = log_dirichlet(alpha, 20000, np.random.default_rng(0))
    assert logs.shape == (20000, 2, 3) and np.isfinite(logs).all()
    draws = np.exp(logs)
    assert np.allclose(draws.sum(axis=-1), 1.0)
    assert np.allclose(draws.mean(axis=0), alpha / alpha.sum(axis=1, keepdims=True), atol=0.01)


@pytest.mark.parametrize("options, message", [
    ({"samples": 5}, "samples must be an integer in 10..10000, got 5"),
    ({"samples": 20000}, "samples must be an integer in 10..10000, got 20000"),
    ({"samples": True}, "samples must be an integer in 10..10000, got True"),
    ({"concentration": 0.0}, "concentration must be a number in (0, 1000000], got 0.0"),
    ({"concentration": float("nan")}, "concentration must be a number in (0, 1000000], got nan"),
    ({"seed": -1}, "seed must be an integer in 0..2**63-1, got -1"),
    ({"level": 1.0}, "level must be a number in (0, 1), got 1.0"),
    ({"level": 0}, "level must be a number in (0, 1), got 0"),
])
def test_bad_options_are_one_line_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_rule("monte_carlo", **options)
    assert str(caught.value) == f"fusion rule 'monte_carlo': {message}"
    assert "\n" not in str(caught.value)


def test_unknown_option_and_the_config_table() -> None:
    with pytest.raises(ConfigError, match="^fusion rule 'monte_carlo': .*'draws'"):
        create_rule("monte_carlo", draws=10)
    with pytest.raises(ConfigError, match=r"^monte_carlo: samples must be an integer in 10\.\.10000, got 5$"):
        from_dict(FusionConfig, {"monte_carlo": {"samples": 5}})
    config = from_dict(FusionConfig, {"rule": "monte_carlo", "monte_carlo": {"samples": 50, "seed": 4}})
    assert config.rule_options("monte_carlo") == {"samples": 50, "concentration": 100.0, "seed": 4, "level": 0.9}
    rule = create_rule("monte_carlo", **config.rule_options("monte_carlo"))
    rule.fuse(TICK, SKILLS)
    assert rule.last_uncertainty.samples == 50


def test_decision_json_carries_the_uncertainty() -> None:
    rule = MonteCarloRule()
    fused = rule.fuse(TICK, SKILLS)
    decision = Decision(1.5, max(fused, key=fused.get), fused, 0.1, 0.2, tuple(TICK), 1.0,
                        uncertainty=rule.last_uncertainty)
    data = json.loads(json.dumps(decision.to_json()))
    u = data["uncertainty"]
    assert set(u) == {"label", "entropy", "agreement", "interval", "level", "samples"}
    assert 0 < u["entropy"] <= math.log(len(fused)) and 0 < u["agreement"] <= 1
    assert u["label"] == decision.label and 0 <= u["interval"][0] <= fused[decision.label] <= u["interval"][1] <= 1
    assert u["level"] == 0.9 and u["samples"] == 200
    assert Decision.from_json(data).uncertainty == Uncertainty.from_json(u)


def test_scheduler_reports_no_uncertainty_when_nothing_fused() -> None:
    bundle = load_bundle(default_bundle_path())
    scheduler = Scheduler([], MonteCarloRule(), SKILLS, EmaSmoother(0.0), bundle.manifest.affect,
                          failures={"face": "camera gone"})
    decision = scheduler.tick(0, 0.5)
    assert decision.label == NO_EVIDENCE and decision.uncertainty is None
    assert "uncertainty" not in decision.to_json()
