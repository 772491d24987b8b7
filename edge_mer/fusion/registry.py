"""The fusion rules by name: the names ``fusion.rule`` (run config and bundle manifest) accepts.

A new rule is one :class:`~edge_mer.fusion.base.FusionRule` subclass in its
own module plus one line here; its ``name`` is the key.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_mer.errors import ConfigError
from edge_mer.fusion.base import FusionContext, FusionRule
from edge_mer.fusion.learned import LearnedHead
from edge_mer.fusion.monte_carlo import MonteCarloRule
from edge_mer.fusion.reliability import ReliabilityRule
from edge_mer.fusion.rules import LogLinear, WeightedMean
from edge_mer.names import AUTO

if TYPE_CHECKING:
    from edge_mer.backends.options import BackendOptions
    from edge_mer.bundle.loader import Bundle

#: Rule name -> class. Rules are built with :meth:`FusionRule.build` from a :class:`FusionContext`.
RULES: dict[str, type[FusionRule]] = {
    WeightedMean.name: WeightedMean,
    LogLinear.name: LogLinear,
    LearnedHead.name: LearnedHead,
    ReliabilityRule.name: ReliabilityRule,
    MonteCarloRule.name: MonteCarloRule,
}
RULE_NAMES: tuple[str, ...] = tuple(RULES)


def rule_class(name: str) -> type[FusionRule]:
    """The class registered as ``name``, or a one-line :class:`ConfigError` listing the known rules."""
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"unknown fusion rule {name!r} (expected one of: {', '.join(RULE_NAMES)})") from None


def create_rule(name: str, *, bundle: Bundle | None = None, precision: str = AUTO,
                backend_options: BackendOptions | None = None, head: str | None = None, **options: Any) -> FusionRule:
    """The rule registered as ``name``, built for a run on ``bundle`` (``precision`` may be ``auto``).

    ``head`` names one of the bundle's shipped heads for ``learned`` (None: the bundle's default head).

    ``options`` go to the rule itself (``eps`` for ``log_linear``); the
    arithmetic rules ignore the bundle arguments.
    """
    return rule_class(name).build(FusionContext(bundle, precision, backend_options, head), **options)
