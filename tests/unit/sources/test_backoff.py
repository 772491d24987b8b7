"""ReconnectPolicy and Backoff: delays, failure counting, interruptible waits, log lines (real time, tiny delays)."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from edge_mer.errors import ConfigError
from edge_mer.sources.backoff import Backoff, ReconnectPolicy


def test_delays_double_from_min_up_to_max() -> None:
    policy = ReconnectPolicy(min_s=0.5, max_s=10.0)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert ReconnectPolicy(min_s=1.0, max_s=1.0).delay(5) == 1.0


def test_max_failures_zero_never_gives_up() -> None:
    assert not ReconnectPolicy(0.1, 1.0).exhausted(10**6)
    policy = ReconnectPolicy(0.1, 1.0, max_failures=3)
    assert [policy.exhausted(n) for n in range(5)] == [False, False, False, True, True]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_s": 0.0, "max_s": 1.0}, "0 < min_s <= max_s"),
    ({"min_s": 2.0, "max_s": 1.0}, "0 < min_s <= max_s"),
    ({"min_s": 0.1, "max_s": 1.0, "max_failures": -1}, "max_failures must be an integer >= 0"),
    ({"min_s": 0.1, "max_s": 1.0, "max_failures": 1.5}, "max_failures must be an integer >= 0"),
])
def test_bad_policies_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ReconnectPolicy(**kwargs)


def test_waits_count_attempts_log_them_and_take_the_delays(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("edge_mer.sources.fake")
    backoff = Backoff(ReconnectPolicy(0.01, 0.04, max_failures=4), threading.Event(), "fake 'x'", logger)
    took = []
    with caplog.at_level(logging.WARNING, logger="edge_mer.sources.fake"):
        while not backoff.exhausted:
            started = time.monotonic()
            assert backoff.wait()
            took.append(time.monotonic() - started)
    assert backoff.failures == 4
    assert [t >= d for t, d in zip(took, [0.01, 0.02, 0.04, 0.04])] == [True] * 4
    assert sum(took) < 0.5
    assert [r.getMessage() for r in caplog.records] == [
        "fake 'x': reconnect attempt 1 in 0.01 s", "fake 'x': reconnect attempt 2 in 0.02 s",
        "fake 'x': reconnect attempt 3 in 0.04 s", "fake 'x': reconnect attempt 4 in 0.04 s"]
    assert {r.name for r in caplog.records} == {"edge_mer.sources.fake"}  # the source's own logger


def test_reset_starts_again_from_min() -> None:
    backoff = Backoff(ReconnectPolicy(0.001, 1.0, max_failures=2), threading.Event(), "fake")
    assert backoff.wait() and backoff.wait() and backoff.exhausted
    assert backoff.next_delay() == 0.004
    backoff.reset()
    assert backoff.failures == 0 and not backoff.exhausted and backoff.next_delay() == 0.001


def test_setting_the_stop_event_ends_a_wait_promptly() -> None:
    stop = threading.Event()
    backoff = Backoff(ReconnectPolicy(5.0, 5.0), stop, "fake")
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert backoff.wait() is False
    assert time.monotonic() - started < 1.0 and backoff.failures == 1
    started = time.monotonic()
    assert backoff.wait() is False  # already stopped: no wait at all
    assert time.monotonic() - started < 0.05
