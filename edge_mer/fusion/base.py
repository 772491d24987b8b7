"""What every fusion rule is: one tick's modality results and per-encoder weights in, one distribution out.

A rule takes one tick's :class:`~edge_mer.results.ModalityResult` list and
the per-encoder weights and returns ``{label: p}`` summing to 1, or None when
no valid result has a positive weight. The weight policy is
:meth:`FusionRule.resolve_weights`; :mod:`edge_mer.fusion.rules` has the
arithmetic rules and their coverage rule, :mod:`edge_mer.fusion.learned` the
learned head, and :mod:`edge_mer.fusion.registry` names them.

Weights
    Keyed by *encoder name* (``face``, ``speech``, ``eeg_cyton``...), each
    >= 0. An empty mapping means every encoder weighs 1.0. A non-empty
    mapping is taken as complete: an encoder it does not name weighs 0 (left
    out), and the rule logs one warning per such encoder name. Invalid
    results and results of weight 0 are left out.
"""
from __future__ import annotations

import abc
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from edge_mer.errors import ConfigError, InputError
from edge_mer.results import ModalityResult, Uncertainty

if TYPE_CHECKING:
    from edge_mer.backends.options import BackendOptions
    from edge_mer.bundle.loader import Bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionContext:
    """What a rule may need to build itself for a run: the bundle, the requested precision, the backend.

    ``precision`` may be ``auto``; a rule that runs a model resolves it with
    :func:`edge_mer.bundle.precision.resolve_precision`, as encoders do.
    """

    bundle: Bundle | None = None
    precision: str = "auto"
    backend_options: BackendOptions | None = None
    #: The shipped head a head-running rule uses (``fusion.head``); None: the bundle's default head.
    head: str | None = None


@runtime_checkable
class ReportsUncertainty(Protocol):
    """A probabilistic rule: how sure its last fused tick was (the decision's ``uncertainty``)."""

    @property
    def last_uncertainty(self) -> Uncertainty | None:
        """The last tick's uncertainty; None when it fused nothing."""


@runtime_checkable
class ReportsLabelSet(Protocol):
    """A rule whose head has a ``multilabel`` output: the labels active in its last tick (``labels_active``)."""

    @property
    def last_labels_active(self) -> dict[str, float] | None:
        """``{label: score}`` of the labels at or above their thresholds; None for a head without one."""


#: A valid result's probabilities may miss 1 by this much (float32 encoders); they are renormalised.
SUM_TOLERANCE = 1e-3


def checked_probs(result: ModalityResult) -> dict[str, float]:
    """A valid result's probabilities, renormalised to sum to exactly 1.

    Raises :class:`InputError` when they are empty, negative, not finite or
    do not sum to 1 within :data:`SUM_TOLERANCE` (logits passed as probabilities).
    """
    values = np.array(list(result.probs.values()), dtype=np.float64)
    if values.size == 0:
        raise InputError(f"encoder {result.encoder!r}: a valid result needs probabilities, got none")
    if not np.isfinite(values).all() or (values < 0).any():
        raise InputError(f"encoder {result.encoder!r}: probabilities must be finite and >= 0, got {result.probs}")
    total = float(values.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise InputError(f"encoder {result.encoder!r}: probabilities sum to {total:.6g}, expected 1")
    return {label: float(p) / total for label, p in result.probs.items()}


class FusionRule(abc.ABC):
    """Combines one tick's modality results into one distribution over labels."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._warned: set[str] = set()

    @classmethod
    def build(cls, context: FusionContext, **options: Any) -> FusionRule:
        """The rule for a run, with its own ``options``; rules that need no model ignore ``context``."""
        try:
            return cls(**options)
        except TypeError as exc:  # an option this rule does not have
            raise ConfigError(f"fusion rule {cls.name!r}: {exc}") from None

    @classmethod
    def checked_options(cls, options_type: type[Any], options: Mapping[str, Any]) -> Any:
        """``options_type(**options)``, or a one-line ConfigError naming this rule (an unknown or bad option)."""
        try:
            return options_type(**options)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"fusion rule {cls.name!r}: {exc}") from None

    @abc.abstractmethod
    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        """``{label: p}`` summing to 1, or None when no valid result has a positive weight."""

    def close(self) -> None:
        """Release what the rule holds (an inference session for the learned head)."""

    def resolve_weights(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> list[float]:
        """Each result's raw weight by the policy in the module docstring (before renormalising)."""
        for name, w in weights.items():
            if not isinstance(w, numbers.Real) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"fusion weight for encoder {name!r} must be a finite number >= 0, got {w!r}")
        if not weights:
            return [1.0] * len(results)
        out = []
        for result in results:
            if result.valid and result.encoder not in weights and result.encoder not in self._warned:
                self._warned.add(result.encoder)
                log.warning("fusion weights do not name encoder %r; it weighs 0 and is left out", result.encoder)
            out.append(float(weights.get(result.encoder, 0.0)))
        return out

    def contributions(self, results: Sequence[ModalityResult],
                      weights: Mapping[str, float]) -> list[tuple[ModalityResult, float, dict[str, float]]]:
        """The valid results with positive weight, as (result, raw weight, checked probabilities)."""
        raw = self.resolve_weights(results, weights)
        return [(r, w, checked_probs(r)) for r, w in zip(results, raw) if r.valid and w > 0]
