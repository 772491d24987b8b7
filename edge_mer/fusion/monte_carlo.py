"""Monte-Carlo fusion: the log-linear pool over draws around each encoder's distribution, with its spread.

The rule ``monte_carlo`` follows decision-level fusion of face and EEG by
Monte-Carlo sampling of the classifiers' outputs (the issue's seed paper): a
calibrated distribution is a point estimate, so instead of fusing it once the
rule fuses many plausible versions of it and reports both the average and how
much the fused answer moves from draw to draw. Per tick:

1.  Coverage. The contributing results (valid, weight > 0) are extended to
    the union ``L`` of their label sets by the coverage rule of
    :mod:`edge_mer.fusion.rules` (:func:`~edge_mer.fusion.rules.extend_to_labels`,
    :func:`~edge_mer.fusion.rules.label_order`), exactly as ``weighted_mean``
    and ``log_linear`` do, so an encoder abstains on labels it lacks.
2.  Draws. For encoder ``m`` with extended distribution ``p~_m``,
    ``samples`` distributions are drawn from ``Dirichlet(alpha_m)`` with
    ``alpha_m = concentration * p~_m + ALPHA_FLOOR``: their mean is ``p~_m``
    (up to the floor, which only keeps a zero probability a valid parameter)
    and each probability ``p`` varies by ``sqrt(p (1 - p) / (concentration + 1))``.
3.  Pooling. Each draw is combined across encoders by the weighted product of
    ``log_linear`` (log opinion pool, weights renormalised to sum 1, each
    probability floored at ``EPS`` as ``log_linear``'s default ``eps``) and
    renormalised. The fused distribution is the mean of the pooled draws.

Uncertainty (:class:`~edge_mer.results.Uncertainty`, the decision's ``uncertainty``)
    ``entropy`` (nats) of the fused distribution; ``agreement``, the share of
    pooled draws whose top label is the fused top label; ``interval``, the
    central ``level`` interval of the fused label's pooled probability over
    the draws; ``level`` and ``samples``. A confident lone encoder gives
    agreement near 1 and a narrow interval; encoders that contradict each
    other give a lower agreement and a higher entropy.

Weights: log-linear exponents, not concentrations
    The fusion weight (the encoder's measured skill in the bundle) is the
    exponent of the encoder in the product, as in ``log_linear``; the
    concentration is the same for every encoder. So the rule is ``log_linear``
    plus noise: as ``concentration`` grows its fused distribution tends to
    ``log_linear``'s (a test checks it), and skill weighs each vote exactly
    once. Scaling each encoder's concentration by its weight instead would
    leave every encoder an equal vote in the product and only make the
    weakest one noisier; in a product a noisy, near one-hot draw is a strong
    random veto, so the least skilled encoder (the bundle's EEG, skill 0.026)
    would move the fused label most. Doing both would count skill twice.

The concentration (default 100)
    It is the Dirichlet's precision: how many observations' worth of
    evidence a calibrated distribution is taken to carry. At 100 the largest
    spread of any probability (at ``p = 0.5``) is ``0.5 / sqrt(101) = 0.050``,
    the size of the default bundle's calibration error after temperature
    scaling (expected calibration error 0.037 to 0.058 on held-out data), so
    the draws move each probability by about as much as the calibrated
    encoders are known to be off. Lower it for more spread, raise it for less.

Determinism
    Tick ``i`` (the ``i``-th call of :meth:`MonteCarloRule.fuse`, from 0)
    draws from ``numpy.random.default_rng([seed, i])``: a replay of the same
    session with the same seed gives identical decisions, and no tick's draws
    depend on how many the ticks before it used. Draws go to the encoders in
    name order, so the order of the results does not matter either. Sampling is vectorised over
    draws and encoders (no Python loop over samples) and done in log space
    (``Gamma(a) = Gamma(a + 1) * U ** (1 / a)``), so a tiny ``alpha`` never
    underflows to a zero draw and ``log 0``.

Cost: ``edge-mer bench`` (section "fusion rules") times every rule's
``fuse()``; with face, speech and EEG and 200 draws this rule takes about
0.6 ms a tick on one shared x86 core, ten times ``log_linear``, mostly the
gamma draws, so it scales with ``samples``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_mer.config import require
from edge_mer.fusion.base import FusionContext
from edge_mer.fusion.rules import CombiningRule
from edge_mer.results import ModalityResult, Uncertainty

log = logging.getLogger(__name__)

#: Added to every Dirichlet parameter: a probability of exactly 0 must still be a valid (tiny) parameter.
ALPHA_FLOOR = 1e-3
#: A drawn probability below this counts as this in the product (``log_linear``'s default ``eps``: the rules agree
#: in the limit of a large concentration).
EPS = 1e-6
MIN_SAMPLES, MAX_SAMPLES = 10, 10_000
MAX_CONCENTRATION = 1_000_000


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class MonteCarloOptions:
    """The ``[fusion.monte_carlo]`` options: draws per tick, the Dirichlet precision, the seed, the interval level.

    ``samples`` in 10..10000; ``concentration`` in (0, 1000000] (see the module
    docstring for the default); ``seed`` an integer >= 0; ``level`` in (0, 1).
    """

    samples: int = 200
    concentration: float = 100.0
    seed: int = 0
    level: float = 0.9

    def __post_init__(self) -> None:
        ok = isinstance(self.samples, int) and not isinstance(self.samples, bool)
        require(ok and MIN_SAMPLES <= self.samples <= MAX_SAMPLES,
                f"samples must be an integer in {MIN_SAMPLES}..{MAX_SAMPLES}, got {self.samples!r}")
        require(_number(self.concentration) and 0 < self.concentration <= MAX_CONCENTRATION,
                f"concentration must be a number in (0, {MAX_CONCENTRATION}], got {self.concentration!r}")
        ok = isinstance(self.seed, int) and not isinstance(self.seed, bool)
        require(ok and 0 <= self.seed < 2**63, f"seed must be an integer in 0..2**63-1, got {self.seed!r}")
        require(_number(self.level) and 0 < self.level < 1, f"level must be a number in (0, 1), got {self.level!r}")


def log_dirichlet(alpha: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` log-draws of ``Dirichlet(alpha[m])`` for every row ``m``: shape [samples, *alpha.shape].

    Drawn as ``log Gamma(a + 1) + log(U) / a`` then normalised in log space,
    so parameters far below 1 give very negative logs instead of zeros.
    """
    size = (samples, *alpha.shape)
    gamma = rng.standard_gamma(alpha + 1.0, size=size)
    uniform = 1.0 - rng.random(size)  # in (0, 1]: log never sees 0
    log_gamma = np.log(gamma) + np.log(uniform) / alpha
    top = log_gamma.max(axis=-1, keepdims=True)
    return log_gamma - (top + np.log(np.exp(log_gamma - top).sum(axis=-1, keepdims=True)))


def monte_carlo_pool(probs: np.ndarray, weights: np.ndarray, options: MonteCarloOptions,
                     rng: np.random.Generator) -> tuple[np.ndarray, Uncertainty]:
    """The fused distribution and its :class:`Uncertainty` for ``probs`` [encoders, labels] and ``weights`` (sum 1).

    Rows of ``probs`` sum to 1 and cover the same labels (coverage-extended).
    """
    alpha = options.concentration * probs + ALPHA_FLOOR
    draws = log_dirichlet(alpha, options.samples, rng)  # [samples, encoders, labels]
    scores = np.einsum("m,sml->sl", weights, np.maximum(draws, math.log(EPS)))
    pooled = np.exp(scores - scores.max(axis=1, keepdims=True))
    pooled /= pooled.sum(axis=1, keepdims=True)  # [samples, labels], each row a distribution
    fused = pooled.mean(axis=0)
    fused /= fused.sum()
    top = int(np.argmax(fused))
    nz = fused[fused > 0]
    tail = (1.0 - options.level) / 2.0
    lo, hi = np.quantile(pooled[:, top], [tail, 1.0 - tail])
    uncertainty = Uncertainty(entropy=float(-(nz * np.log(nz)).sum()),
                              agreement=float(np.mean(np.argmax(pooled, axis=1) == top)),
                              interval=(float(lo), float(hi)), level=options.level, samples=options.samples)
    return fused, uncertainty


class MonteCarloRule(CombiningRule):
    """The log-linear pool averaged over Dirichlet draws around each encoder's distribution (module docstring).

    Reports :attr:`last_uncertainty` (protocol
    :class:`~edge_mer.fusion.base.ReportsUncertainty`), which the scheduler
    puts in each decision's ``uncertainty``.
    """

    name = "monte_carlo"

    def __init__(self, options: MonteCarloOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else MonteCarloOptions()
        #: Calls of fuse() so far; during a call, this tick's index in its random stream is ``ticks - 1``.
        self.ticks = 0
        self._last: Uncertainty | None = None

    @classmethod
    def build(cls, context: FusionContext, **options: Any) -> MonteCarloRule:
        """The rule with ``options`` as the fields of :class:`MonteCarloOptions` (``samples=500``...)."""
        return cls(cls.checked_options(MonteCarloOptions, options))

    @property
    def last_uncertainty(self) -> Uncertainty | None:
        """The last tick's uncertainty; None when it fused nothing (or before the first tick)."""
        return self._last

    def fuse(self, results: Sequence[ModalityResult], weights: Mapping[str, float]) -> dict[str, float] | None:
        self._last = None  # a tick that fails or fuses nothing reports nothing
        # Every call takes the next index, fused or not, so tick i's draws depend only on (seed, i).
        self.ticks += 1
        # The draws go to encoders in name order, so the fusion does not depend on the order of the results.
        fused = super().fuse(sorted(results, key=lambda r: r.encoder), weights)
        if fused is not None and self._last is not None:
            # The pool's top index is the fused distribution's argmax: name it, so a reader need not
            # confuse it with the decision's (smoothed) label.
            self._last = dataclasses.replace(self._last, label=max(fused, key=fused.get))
        return fused

    def combine(self, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.options.seed, self.ticks - 1])
        fused, self._last = monte_carlo_pool(probs, weights, self.options, rng)
        return fused
