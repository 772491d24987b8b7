"""Reconnect policy of the live sources: exponential backoff, consecutive-failure limit, interruptible waits.

A source that loses its device (a camera stream that stops, a microphone
that falls silent, a BrainFlow session that vanishes) makes a :class:`Backoff` from its configuration's
``reconnect_min_s``/``reconnect_max_s``/``max_failures`` and the stop Event
that ``close()`` sets, then loops::

    while not stop.is_set():
        if backoff.exhausted:
            raise SensorError(...)       # the source's own message, naming backoff.failures
        if not backoff.wait():           # closed while waiting
            break
        if reconnect():                  # the source's own attempt
            ...                          # backoff.reset() once data flows again

The n-th consecutive attempt (n = 1, 2, ...) waits
``min(max_s, min_s * 2 ** (n - 1))``; :meth:`Backoff.reset` starts the count
again. Only the source knows what counts as success (a camera needs a frame,
not just an open capture), so it calls :meth:`Backoff.reset` itself.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from edge_mer.errors import ConfigError


@dataclass(frozen=True)
class ReconnectPolicy:
    """Delays from ``min_s`` doubling up to ``max_s``; ``max_failures`` consecutive failures (0 = never) end it."""

    min_s: float
    max_s: float
    max_failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ConfigError(f"reconnect: need 0 < min_s <= max_s, got {self.min_s} and {self.max_s}")
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ConfigError(f"reconnect: max_failures must be an integer >= 0, got {self.max_failures!r}")

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next attempt after ``failures`` consecutive failed ones."""
        return min(self.max_s, self.min_s * 2 ** failures)

    def exhausted(self, failures: int) -> bool:
        """Whether ``failures`` consecutive failed attempts mean giving up."""
        return self.max_failures > 0 and failures >= self.max_failures


class Backoff:
    """A :class:`ReconnectPolicy` in use: counts consecutive attempts, waits on the source's stop Event.

    ``name`` and ``logger`` are the source's, so the ``reconnect attempt N in
    D s`` warnings read (and are filtered) like the source's other lines.
    Used by one thread at a time (the source's supervisor or iterating thread).
    """

    def __init__(self, policy: ReconnectPolicy, stop: threading.Event, name: str,
                 logger: logging.Logger | None = None) -> None:
        self.policy = policy
        self.failures = 0  # attempts since the last reset(), i.e. those that have not (yet) succeeded
        self._stop = stop
        self._name = name
        self._log = logger if logger is not None else logging.getLogger(__name__)

    @property
    def exhausted(self) -> bool:
        """Whether the policy's ``max_failures`` consecutive attempts have failed."""
        return self.policy.exhausted(self.failures)

    def next_delay(self) -> float:
        """Seconds the next :meth:`wait` will take."""
        return self.policy.delay(self.failures)

    def wait(self) -> bool:
        """Count one more attempt, log it, and wait its delay; False when the stop Event was set meanwhile."""
        delay = self.next_delay()
        self.failures += 1
        self._log.warning("%s: reconnect attempt %d in %.2f s", self._name, self.failures, delay)
        return not self._stop.wait(delay)

    def reset(self) -> None:
        """The device delivers again: the next failure starts from ``min_s``."""
        self.failures = 0
