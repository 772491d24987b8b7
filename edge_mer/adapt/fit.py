"""The two fits of per-user adaptation: a temperature per encoder and a linear EEG head.

Both minimise a negative log-likelihood with SciPy's optimisers (already a
dependency of the EEG preprocessing), so nothing new is installed on a device:

* :func:`fit_temperature`: the ``T`` of :func:`edge_mer.numeric.temperature_scale`
  that minimises the NLL of the labelled windows, the way the runtime
  applies it (each frame row scaled, then the window's rows averaged, then
  mapped onto the evaluation labels). A coarse grid over ``log T`` finds the
  basin, bounded Brent refines it: averaging frames makes the NLL lose the
  convexity a single softmax has, and the grid keeps a local minimum from
  being taken for the answer.
* :func:`fit_linear_head`: multinomial logistic regression on standardised
  features, ``mean cross-entropy + l2 / 2 * ||W||^2`` (the bias is not
  penalised), by L-BFGS with the analytic gradient. It is scikit-learn's
  ``LogisticRegression(C=1 / (l2 * n))`` objective (the unit tests compare
  against it where scikit-learn is installed).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

from edge_mer.bundle.schema import MAX_TEMPERATURE, MIN_TEMPERATURE
from edge_mer.errors import InputError
from edge_mer.numeric import PROB_FLOOR, softmax, temperature_scale

log = logging.getLogger(__name__)

#: Grid points over log T before the bounded refinement.
_GRID = 49
#: Standard deviations below this count as a constant feature (scaled by 1, not blown up).
MIN_FEATURE_STD = 1e-8


@dataclass(frozen=True)
class WindowRows:
    """Encoder probabilities of ``n`` windows: ``rows[m, classes]``, row ``i`` belonging to window ``owner[i]``.

    A face window holds one row per processed frame, speech and EEG windows one;
    ``mapping[classes, labels]`` sums model classes onto the evaluation labels
    (the bundle's ``label_map``).
    """

    rows: np.ndarray
    owner: np.ndarray
    n: int
    mapping: np.ndarray

    def __post_init__(self) -> None:
        if self.rows.ndim != 2 or self.owner.shape != (self.rows.shape[0],):
            raise InputError(f"rows {self.rows.shape} and owner {self.owner.shape} do not match")
        if self.mapping.shape[0] != self.rows.shape[1]:
            raise InputError(f"mapping has {self.mapping.shape[0]} rows for {self.rows.shape[1]} classes")
        if self.n < 1 or np.bincount(self.owner, minlength=self.n).min() < 1:
            raise InputError("every window needs at least one row")

    def subset(self, windows: np.ndarray) -> WindowRows:
        """The windows with the given indices, renumbered ``0..len(windows)-1``."""
        new = np.full(self.n, -1)
        new[windows] = np.arange(len(windows))
        keep = new[self.owner] >= 0
        return WindowRows(self.rows[keep], new[self.owner[keep]], len(windows), self.mapping)

    def probs(self, temperature: float | None) -> np.ndarray:
        """``[n, labels]``: each window's rows scaled by ``temperature`` (None: as they are), averaged, mapped."""
        rows = self.rows if temperature is None else temperature_scale(self.rows, temperature)
        sums = np.zeros((self.n, rows.shape[1]))
        np.add.at(sums, self.owner, rows)
        mean = sums / sums.sum(axis=1, keepdims=True)  # the runner's mean / mean.sum()
        return mean @ self.mapping


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of class indices ``labels`` under ``probs[n, labels]``."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, PROB_FLOOR))))


def fit_temperature(windows: WindowRows, labels: np.ndarray) -> float:
    """The temperature in ``MIN_TEMPERATURE..MAX_TEMPERATURE`` minimising the NLL of ``labels`` (indices)."""
    if len(labels) != windows.n or len(labels) == 0:
        raise InputError(f"{len(labels)} labels for {windows.n} windows")
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    grid = np.linspace(low, high, _GRID)
    losses = [nll(windows.probs(math.exp(u)), labels) for u in grid]
    best = int(np.argmin(losses))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, _GRID - 1)]
    found = minimize_scalar(lambda u: nll(windows.probs(math.exp(u)), labels), bounds=(a, b), method="bounded",
                            options={"xatol": 1e-4})
    u = float(found.x) if found.fun <= losses[best] else float(grid[best])
    return float(min(max(math.exp(u), MIN_TEMPERATURE), MAX_TEMPERATURE))


@dataclass(frozen=True)
class LinearHead:
    """``softmax(((flatten(x) - mean) / scale) @ weights + bias)`` over ``classes``."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        d, k = self.weights.shape
        if self.mean.shape != (d,) or self.scale.shape != (d,) or self.bias.shape != (k,) or len(self.classes) != k:
            raise InputError(f"linear head shapes disagree: weights {self.weights.shape}, mean {self.mean.shape}, "
                             f"scale {self.scale.shape}, bias {self.bias.shape}, {len(self.classes)} classes")

    def logits(self, x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return ((flat - self.mean) / self.scale) @ self.weights + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``[n, classes]`` probabilities for features ``x[n, ...]`` (flattened as the ONNX head does)."""
        return softmax(self.logits(x))


def _objective(theta: np.ndarray, z: np.ndarray, onehot: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean cross-entropy plus ``l2 / 2 * ||W||^2`` and its gradient, for ``theta = [W.ravel(), b]``."""
    n, d = z.shape
    k = onehot.shape[1]
    weights, bias = theta[:d * k].reshape(d, k), theta[d * k:]
    logp = log_softmax(z @ weights + bias, axis=1)
    loss = -float(np.sum(onehot * logp)) / n + 0.5 * l2 * float(np.sum(weights * weights))
    residual = (np.exp(logp) - onehot) / n
    grad = np.concatenate([(z.T @ residual + l2 * weights).ravel(), residual.sum(axis=0)])
    return loss, grad


def fit_linear_head(x: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], l2: float) -> LinearHead:
    """Multinomial logistic regression of class indices ``labels`` on features ``x[n, ...]``.

    Features are standardised with their mean and standard deviation over
    ``x`` (stored in the head, so the ONNX graph does the same); ``l2`` > 0
    keeps the fit unique and finite even when the windows are separable.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    k = len(classes)
    if k < 2 or len(flat) != len(labels) or len(flat) < 2:
        raise InputError(f"a linear head needs >= 2 classes and >= 2 windows, got {k} classes, {len(flat)} windows")
    if not np.isfinite(flat).all():
        raise InputError("head features hold NaN or Inf")
    if not l2 > 0:
        raise InputError(f"l2 must be > 0, got {l2}")
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    scale = np.where(std < MIN_FEATURE_STD, 1.0, std)
    z = (flat - mean) / scale
    onehot = np.eye(k)[labels]
    theta0 = np.zeros(z.shape[1] * k + k)
    found = minimize(_objective, theta0, args=(z, onehot, l2), jac=True, method="L-BFGS-B",
                     options={"maxiter": 2000, "gtol": 1e-8})
    if not found.success:
        log.debug("linear head: L-BFGS stopped after %d iterations: %s", found.nit, found.message)
    d = z.shape[1]
    return LinearHead(mean, scale, found.x[:d * k].reshape(d, k), found.x[d * k:], tuple(classes))
