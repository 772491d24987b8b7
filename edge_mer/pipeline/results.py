"""What one modality contributes to a decision, and the decision itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModalityResult:
    """One encoder's output for one decision tick, on canonical labels.

    ``probs`` maps canonical labels (plus labels kept under their own name,
    such as ``boredom``) to probabilities summing to 1; it is empty when the
    modality is invalid, and ``reason`` then says why (``"no face"``,
    ``"silence"``, ``"stale"``, ``"bad channels ..."``, ``"sensor failed: ..."``).
    """

    modality: str
    encoder: str
    valid: bool
    reason: str | None = None
    probs: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    #: Daemon-clock time of the newest sample this result examined, valid or not ("silence" and "no face"
    #: examined their window); None when it examined none (no data, stale, failed). Not part of the JSON.
    newest_t_ns: int | None = None

    @property
    def label(self) -> str | None:
        return max(self.probs, key=self.probs.get) if self.valid and self.probs else None

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "reason": self.reason, "label": self.label,
                "probs": {k: round(v, 6) for k, v in self.probs.items()}, "latency_ms": round(self.latency_ms, 3)}

    @classmethod
    def invalid(cls, modality: str, encoder: str, reason: str, latency_ms: float = 0.0,
                newest_t_ns: int | None = None) -> ModalityResult:
        return cls(modality, encoder, False, reason, {}, latency_ms, newest_t_ns)
