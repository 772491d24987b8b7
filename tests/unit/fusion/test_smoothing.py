from __future__ import annotations

import math

import pytest

from edge_mer.errors import ConfigError, InputError
from edge_mer.fusion.smoothing import EmaSmoother

CALM = {"neutral": 1.0}
JOY = {"happy": 1.0}


def test_first_decision_passes_through() -> None:
    s = EmaSmoother(1.0)
    assert s.state is None
    assert s.update({"happy": 0.25, "sad": 0.75}, 10.0) == pytest.approx({"happy": 0.25, "sad": 0.75})


@pytest.mark.parametrize("half_life", [0.5, 1.0, 3.0])
def test_step_reaches_half_after_one_half_life(half_life: float) -> None:
    s = EmaSmoother(half_life)
    s.update(CALM, 0.0)
    out = s.update(JOY, half_life)
    assert out == pytest.approx({"neutral": 0.5, "happy": 0.5}, abs=1e-12)


def test_half_life_does_not_depend_on_the_decision_rate() -> None:
    # 2 Hz or 10 Hz: after one half-life the step input has 50 %, after two 75 %.
    for rate in (2, 10, 7):
        s = EmaSmoother(1.0)
        s.update(CALM, 0.0)
        for k in range(1, 2 * rate + 1):
            out = s.update(JOY, k / rate)
            if k == rate:
                assert out["happy"] == pytest.approx(0.5, abs=1e-12)
        assert out["happy"] == pytest.approx(0.75, abs=1e-12)


def test_absent_label_decays_and_output_stays_a_distribution() -> None:
    s = EmaSmoother(1.0)
    s.update({"happy": 0.6, "boredom": 0.4}, 0.0)
    out = s.update({"happy": 0.5, "sad": 0.5}, 1.0)
    # alpha = 0.5: boredom .4 -> .2, happy .55, sad .25
    assert out == pytest.approx({"happy": 0.55, "boredom": 0.2, "sad": 0.25}, abs=1e-12)
    for k in range(2, 5):
        out = s.update({"happy": 0.5, "sad": 0.5}, float(k))
        assert sum(out.values()) == pytest.approx(1.0, abs=1e-12)
    assert out["boredom"] == pytest.approx(0.4 * 2 ** -4, abs=1e-12)


def test_long_gap_resets() -> None:
    s = EmaSmoother(1.0, reset_after=5.0)
    s.update(CALM, 0.0)
    assert s.update(JOY, 5.0)["happy"] == pytest.approx(1 - 2 ** -5)  # 5 half-lives: still blended
    s = EmaSmoother(1.0, reset_after=5.0)
    s.update(CALM, 0.0)
    assert s.update(JOY, 5.01) == pytest.approx(JOY)  # more than 5 half-lives: restarts, calm forgotten


def test_zero_half_life_is_no_smoothing() -> None:
    s = EmaSmoother(0.0)
    s.update(CALM, 0.0)
    assert s.update(JOY, 0.1) == JOY
    assert s.update(None, 0.2) is None


def test_none_holds_then_expires() -> None:
    s = EmaSmoother(1.0)
    assert s.update(None, 0.0) is None  # never valid: nothing to hold
    s.update(CALM, 0.0)
    assert s.update(None, 0.5) == CALM  # one dropout tick: the estimate is held, not decayed
    # the next real decision is weighed by the time since the last real one (1 s), not since the None
    assert s.update(JOY, 1.0) == pytest.approx({"neutral": 0.5, "happy": 0.5})
    assert s.update(None, 6.5) is None  # more than 5 half-lives without evidence: stale, dropped
    assert s.state is None
    assert s.update(JOY, 6.6) == JOY


def test_same_timestamp_has_no_effect_and_time_going_back_restarts() -> None:
    s = EmaSmoother(1.0)
    s.update(CALM, 3.0)
    assert s.update(JOY, 3.0) == CALM
    assert s.update(JOY, 2.0) == JOY


def test_bad_arguments() -> None:
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="half_life_s"):
            EmaSmoother(bad)
    with pytest.raises(ConfigError, match="reset_after"):
        EmaSmoother(1.0, reset_after=0.0)
    with pytest.raises(InputError, match="timestamp"):
        EmaSmoother(1.0).update(CALM, math.nan)
    with pytest.raises(InputError, match="smooth"):
        EmaSmoother(1.0).update({"happy": -1.0}, 0.0)
