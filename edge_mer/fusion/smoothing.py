"""Time-aware exponential smoothing of fused distributions.

Decisions arrive several times a second, not necessarily evenly spaced, so
the smoothing factor follows the time since the previous decision ``dt``
(seconds, from the decisions' own timestamps)::

    alpha = 1 - 2 ** (-dt / half_life)
    state(l) = (1 - alpha) * state(l) + alpha * new(l)

After one half-life of a constant new input, half of the old state is gone,
however many decisions arrived in between. A label missing from a new
decision counts as 0 there, so it decays; a new label grows from 0. Both
terms sum to 1, so the state stays a distribution (it is renormalised
against rounding, and labels below :data:`DROP_BELOW` are dropped).

Decisions:

* ``half_life_s == 0`` turns smoothing off: each decision passes through.
* The first decision, and the first one after a gap longer than
  ``reset_after`` half-lives (default 5, where the old state would keep
  2 ** -5 ≈ 3 % weight), replace the state: after an outage the estimate
  restarts from what is seen now instead of blending in stale history.
* ``None`` (no valid modality this tick) holds: it returns the last smoothed
  distribution unchanged and leaves the state and its timestamp alone, so a
  one-tick dropout (no face, silence) neither erases the history nor
  invents evidence, and the next real decision is weighed by the time since
  the last real one. Once more than ``reset_after`` half-lives have passed
  since that decision, ``None`` resets the state and returns None: the old
  estimate is too stale to report. With smoothing off, ``None`` returns None.
* Two decisions with the same timestamp: the second has ``dt = 0`` and so
  no effect. A timestamp earlier than the previous one (a restarted replay,
  a clock jump) resets the state with a warning.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from edge_mer.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: Smoothed labels whose mass falls below this are dropped, so long-gone labels do not linger.
DROP_BELOW = 1e-9


class EmaSmoother:
    """Exponential moving average over ``{label: p}`` with a half-life in seconds."""

    def __init__(self, half_life_s: float, reset_after: float = 5.0) -> None:
        if not (math.isfinite(half_life_s) and half_life_s >= 0):
            raise ConfigError(f"smoothing half_life_s must be >= 0, got {half_life_s}")
        if not (math.isfinite(reset_after) and reset_after > 0):
            raise ConfigError(f"smoothing reset_after must be > 0 half-lives, got {reset_after}")
        self.half_life_s = float(half_life_s)
        self.reset_after = float(reset_after)
        self._state: dict[str, float] | None = None
        self._t: float | None = None

    @property
    def state(self) -> dict[str, float] | None:
        """The current smoothed distribution (a copy), None before the first decision."""
        return dict(self._state) if self._state is not None else None

    def reset(self) -> None:
        """Forget the history; the next decision starts afresh."""
        self._state = None
        self._t = None

    def alpha(self, dt: float) -> float:
        """The weight of a new decision arriving ``dt`` seconds after the previous one."""
        if self.half_life_s == 0:
            return 1.0
        return 1.0 - 2.0 ** (-dt / self.half_life_s)

    def update(self, probs: Mapping[str, float] | None, t: float) -> dict[str, float] | None:
        """Fold the decision ``probs`` taken at time ``t`` (seconds) in; return the smoothed distribution.

        ``probs`` None (no valid modality) holds the last estimate, or returns None once it is stale.
        """
        if not math.isfinite(t):
            raise InputError(f"decision timestamp must be finite, got {t}")
        if probs is None:
            return self._hold(t)
        new = {label: float(p) for label, p in probs.items()}
        if self._state is None or self._t is None or self.half_life_s == 0:
            return self._restart(new, t)
        dt = t - self._t
        if dt < 0:
            log.warning("decision time went back %.3f s; smoothing restarts", -dt)
            return self._restart(new, t)
        if dt > self.reset_after * self.half_life_s:
            log.debug("%.3f s since the last decision (> %g half-lives); smoothing restarts", dt, self.reset_after)
            return self._restart(new, t)
        a = self.alpha(dt)
        labels = list(self._state) + [label for label in new if label not in self._state]
        mixed = {label: (1 - a) * self._state.get(label, 0.0) + a * new.get(label, 0.0) for label in labels}
        self._state = _normalised({label: p for label, p in mixed.items() if p >= DROP_BELOW})
        self._t = t
        return dict(self._state)

    def _hold(self, t: float) -> dict[str, float] | None:
        if self._state is None or self._t is None or self.half_life_s == 0:
            return None
        if t - self._t > self.reset_after * self.half_life_s:
            log.debug("no valid modality for %.3f s; the smoothed estimate is dropped", t - self._t)
            self.reset()
            return None
        return dict(self._state)

    def _restart(self, new: dict[str, float], t: float) -> dict[str, float]:
        self._state = _normalised(new)
        self._t = t
        return dict(self._state)


def _normalised(probs: dict[str, float]) -> dict[str, float]:
    total = sum(probs.values())
    if not (math.isfinite(total) and total > 0) or any(p < 0 for p in probs.values()):
        raise InputError(f"cannot smooth {probs}: expected non-negative probabilities with a positive sum")
    return {label: p / total for label, p in probs.items()}
