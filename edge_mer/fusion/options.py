"""The ``[fusion]`` options of a run: overrides of the bundle's fusion section, and rules' own options."""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from edge_mer.config import key_text, require
from edge_mer.fusion.learned import LearnedHead, LearnedOptions
from edge_mer.fusion.monte_carlo import MonteCarloOptions, MonteCarloRule
from edge_mer.fusion.registry import RULE_NAMES
from edge_mer.fusion.reliability import ReliabilityOptions, ReliabilityRule

log = logging.getLogger(__name__)

#: Rules whose options are a sub-table of ``[fusion]``: rule name -> the :class:`FusionConfig` field holding them.
RULE_TABLES: dict[str, str] = {ReliabilityRule.name: "reliability", LearnedHead.name: "learned",
                               MonteCarloRule.name: "monte_carlo"}


@dataclass(frozen=True)
class FusionConfig:
    """Overrides of the bundle's fusion section (unset: the bundle's).

    ``rule`` is a name of :data:`edge_mer.fusion.registry.RULES`; ``weights``
    are per encoder, each in 0..1e6 (relative; at least one encoder of a run must weigh more than 0).
    ``reliability`` (``[fusion.reliability]``), ``learned``
    (``[fusion.learned]``) and ``monte_carlo`` (``[fusion.monte_carlo]``) are
    those rules' options, used when that is the run's rule.
    ``head`` names one of the bundle's shipped heads (``stacked``, ``attention``,
    ``transformer``...) for the ``learned`` rule; unset: the bundle's default head.
    """

    rule: str | None = None
    head: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float | None = None
    reliability: ReliabilityOptions = field(default_factory=ReliabilityOptions)
    learned: LearnedOptions = field(default_factory=LearnedOptions)
    monte_carlo: MonteCarloOptions = field(default_factory=MonteCarloOptions)

    def __post_init__(self) -> None:
        require(self.rule is None or self.rule in RULE_NAMES,
                f"rule must be one of {', '.join(RULE_NAMES)}, got {self.rule!r}")
        require(self.head is None or (0 < len(self.head) <= 64 and self.head.isprintable()),
                f"head must name a shipped fusion head (1..64 characters), got {self.head!r}")
        require(len(self.weights) <= 64, f"weights names {len(self.weights)} encoders; expected at most 64")
        for name, w in self.weights.items():
            require(math.isfinite(w) and 0 <= w <= 1e6, f"weights.{key_text(name)} must be in 0..1e6, got {w}")
        require(self.half_life_s is None or (math.isfinite(self.half_life_s) and 0 <= self.half_life_s <= 3600),
                f"half_life_s must be in 0..3600 s, got {self.half_life_s}")

    def rule_options(self, rule: str) -> dict[str, Any]:
        """The options :func:`~edge_mer.fusion.registry.create_rule` passes to ``rule``: its sub-table's fields.

        A sub-table of another rule that differs from its defaults is ignored, with a warning.
        """
        for other, table in RULE_TABLES.items():
            value = getattr(self, table)
            if other != rule and value != type(value)():
                log.warning("fusion.%s is set but the fusion rule is %r; it is ignored", table, rule)
        table = RULE_TABLES.get(rule)
        return {} if table is None else dataclasses.asdict(getattr(self, table))
