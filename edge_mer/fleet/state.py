"""What ``edge-mer fleet watch`` knows about each device, built from its MQTT messages (no I/O here).

Devices publish under ``<prefix>/<device_id>/``: ``decision`` (the decision
JSON plus ``device_id`` and ``seq``, +1 per decision), retained ``status``
(``"state": "online" | "offline"``, ``bundle``, ``precision``, ``modalities``)
and retained ``health`` (the ``/healthz`` object, with ``status``).

Sequence numbers continue across a device's restarts (its MQTT output keeps
them on disk). A decision whose ``seq`` was already counted is a duplicate
(QoS 1 redelivers what was in flight when a link broke) and is dropped; a jump
over numbers counts them as missing (``gaps``) until they arrive late. A jump
back by more than :data:`RENUMBER_BELOW` is a device whose numbering started
again (its queue file was lost): counted in ``renumbered``, and tracked afresh.
``reconnects`` counts a status going ``online`` again after ``offline``.
A decision with a ``wall_time`` (Unix seconds) gives the lag from when it was
made; without one the lag is the time since its last decision arrived.
"""
from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("decision", "status", "health")
#: Missing sequence numbers remembered per device (to recognise late arrivals); older ones stay counted.
MAX_REMEMBERED_MISSING = 10_000
#: A seq this far below the highest seen is a new numbering, not a redelivery (only a few are ever in flight).
RENUMBER_BELOW = 1_000


@dataclass
class DeviceState:
    """One device's latest state and its counters; mutated by :class:`Fleet` only."""

    device_id: str
    first_seen: float
    state: str = "unknown"
    status: dict[str, Any] = field(default_factory=dict)
    health: str | None = None
    label: str | None = None
    valence: float | None = None
    arousal: float | None = None
    decisions: int = 0
    duplicates: int = 0
    gaps: int = 0
    reconnects: int = 0
    renumbered: int = 0
    bad_messages: int = 0
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    first_decision_at: float | None = None
    last_decision_at: float | None = None
    last_wall_time: float | None = None
    max_seq: int | None = None
    missing: set[int] = field(default_factory=set)
    recent: collections.deque[float] = field(default_factory=collections.deque)

    def rate(self, now: float, window_s: float) -> float:
        """Decisions per second over the last ``window_s`` (or since its first decision, when that is shorter)."""
        while self.recent and self.recent[0] < now - window_s:
            self.recent.popleft()
        if self.first_decision_at is None:
            return 0.0
        span = min(window_s, now - self.first_decision_at)
        return len(self.recent) / span if span > 0 else 0.0

    def lag(self, now: float, wall_now: float) -> float | None:
        """Seconds behind: from the last decision's ``wall_time``, else since that decision arrived."""
        if self.last_wall_time is not None:
            return max(0.0, wall_now - self.last_wall_time)
        return None if self.last_decision_at is None else max(0.0, now - self.last_decision_at)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


class Fleet:
    """Every device seen so far, keyed by id. ``now`` arguments are monotonic seconds."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.devices: dict[str, DeviceState] = {}
        self.messages = 0

    def device(self, device_id: str, now: float) -> DeviceState:
        """The device ``device_id``, created on its first message."""
        if device_id not in self.devices:
            self.devices[device_id] = DeviceState(device_id, first_seen=now)
        return self.devices[device_id]

    def observe(self, device_id: str, kind: str, payload: Any, now: float) -> bool:
        """Apply one message; False when it was dropped (a duplicate, or not a JSON object)."""
        self.messages += 1
        dev = self.device(device_id, now)
        if kind in dev.messages:
            dev.messages[kind] += 1
        if not isinstance(payload, dict):
            dev.bad_messages += 1
            return False
        if kind == "decision":
            return self._decision(dev, payload, now)
        if kind == "status":
            self._status(dev, payload)
        elif kind == "health":
            status = payload.get("status")
            dev.health = status if isinstance(status, str) else None
        return True

    def _status(self, dev: DeviceState, payload: dict[str, Any]) -> None:
        state = payload.get("state")
        state = state if state in ("online", "offline") else "unknown"
        if state == "online" and dev.state == "offline":
            dev.reconnects += 1
        dev.state = state
        dev.status = payload

    def _sequence(self, dev: DeviceState, seq: int) -> bool:
        """Track ``seq``; False for a duplicate."""
        if dev.max_seq is None:
            dev.max_seq = seq
        elif seq > dev.max_seq:
            skipped = seq - dev.max_seq - 1
            dev.gaps += skipped
            if skipped and len(dev.missing) + skipped <= MAX_REMEMBERED_MISSING:
                dev.missing.update(range(dev.max_seq + 1, seq))
            dev.max_seq = seq
        elif seq in dev.missing:  # late, not lost
            dev.missing.discard(seq)
            dev.gaps -= 1
        elif seq < dev.max_seq - RENUMBER_BELOW:
            log.info("device %s numbers its decisions afresh (seq %d after %d)", dev.device_id, seq, dev.max_seq)
            dev.renumbered += 1
            dev.max_seq = seq
            dev.missing.clear()
        else:
            dev.duplicates += 1
            return False
        return True

    def _decision(self, dev: DeviceState, payload: dict[str, Any], now: float) -> bool:
        seq = payload.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and not self._sequence(dev, seq):
            return False
        dev.decisions += 1
        dev.recent.append(now)
        if dev.first_decision_at is None:
            dev.first_decision_at = now
        dev.last_decision_at = now
        dev.last_wall_time = _number(payload.get("wall_time"))
        label = payload.get("label")
        dev.label = label if isinstance(label, str) else None
        dev.valence = _number(payload.get("valence"))
        dev.arousal = _number(payload.get("arousal"))
        if dev.state == "unknown":
            dev.state = "online"  # deciding, even before its status arrived
        return True

    def rows(self, now: float, wall_now: float) -> list[dict[str, Any]]:
        """One JSON-ready row per device, sorted by id: what the table, summary and metrics show."""
        return [{"device": d.device_id, "state": d.state, "health": d.health, "label": d.label,
                 "valence": d.valence, "arousal": d.arousal, "rate": d.rate(now, self.window_s),
                 "lag_s": d.lag(now, wall_now), "decisions": d.decisions, "gaps": d.gaps,
                 "duplicates": d.duplicates, "reconnects": d.reconnects,
                 "renumbered": d.renumbered, "bad_messages": d.bad_messages,
                 "bundle": d.status.get("bundle"), "precision": d.status.get("precision"),
                 "messages": dict(d.messages)}
                for d in sorted(self.devices.values(), key=lambda d: d.device_id)]
