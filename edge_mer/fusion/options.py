"""The ``[fusion]`` options of a run: overrides of the bundle's fusion section."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_mer.config import key_text, require
from edge_mer.fusion.registry import RULE_NAMES


@dataclass(frozen=True)
class FusionConfig:
    """Overrides of the bundle's fusion section (unset: the bundle's).

    ``rule`` is a name of :data:`edge_mer.fusion.registry.RULES`; ``weights``
    are per encoder, each in 0..1e6 (relative; at least one encoder of a run must weigh more than 0).
    """

    rule: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float | None = None

    def __post_init__(self) -> None:
        require(self.rule is None or self.rule in RULE_NAMES,
                f"rule must be one of {', '.join(RULE_NAMES)}, got {self.rule!r}")
        require(len(self.weights) <= 64, f"weights names {len(self.weights)} encoders; expected at most 64")
        for name, w in self.weights.items():
            require(math.isfinite(w) and 0 <= w <= 1e6, f"weights.{key_text(name)} must be in 0..1e6, got {w}")
        require(self.half_life_s is None or (math.isfinite(self.half_life_s) and 0 <= self.half_life_s <= 3600),
                f"half_life_s must be in 0..3600 s, got {self.half_life_s}")
