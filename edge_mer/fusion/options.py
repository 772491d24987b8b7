"""The ``[fusion]`` options of a run: overrides of the bundle's fusion section."""
from __future__ import annotations

from dataclasses import dataclass, field

from edge_mer.config import require
from edge_mer.fusion.registry import RULE_NAMES


@dataclass(frozen=True)
class FusionConfig:
    """Overrides of the bundle's fusion section (unset: the bundle's).

    ``rule`` is a name of :data:`edge_mer.fusion.registry.RULES`; ``weights``
    are per encoder, each >= 0.
    """

    rule: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float | None = None

    def __post_init__(self) -> None:
        require(self.rule is None or self.rule in RULE_NAMES,
                f"rule must be one of {', '.join(RULE_NAMES)}, got {self.rule!r}")
        for name, w in self.weights.items():
            require(w >= 0, f"weights.{name} must be >= 0, got {w}")
        require(self.half_life_s is None or self.half_life_s >= 0, f"half_life_s must be >= 0, got {self.half_life_s}")
