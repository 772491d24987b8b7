"""Per-encoder adaptation, cross-validated within the session: before (as shipped) and after (adapted).

Each encoder is scored on the labelled windows whose label the adapted
encoder can output, over one label space (the shipped encoder's canonical
labels plus the adapted ones), so before and after count the same windows:

* ``temperature``: per fold, a temperature fitted on the training windows
  scores the tested ones; the final temperature is fitted on every window;
* ``linear_head`` (EEG): per fold, a logistic head trained on the training
  windows' features scores the tested ones; the final head is trained on
  every window (``resubstitution_accuracy`` is its accuracy on them, to show
  how optimistic a score on the training windows would be).

"Before" is the shipped encoder with its own calibration, if any. Folds are
:mod:`edge_mer.adapt.folds`' blocks with purging. Refusals are one-line
:class:`~edge_mer.errors.ConfigError`s.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge_mer.adapt.collect import Windows
from edge_mer.adapt.fit import LinearHead, WindowRows, fit_linear_head, fit_temperature, nll
from edge_mer.adapt.folds import Fold, make_blocks, make_folds
from edge_mer.errors import ConfigError
from edge_mer.numeric import expected_calibration_error
from edge_mer.sessions.format import Label

log = logging.getLogger(__name__)

#: Fewer labelled windows than this cannot say anything about an encoder.
MIN_WINDOWS = 10
Method = Literal["temperature", "linear_head"]


@dataclass(frozen=True)
class Scores:
    """Top-1 accuracy, expected calibration error (15 bins), mean top probability and NLL over ``n`` windows."""

    accuracy: float
    ece: float
    mean_confidence: float
    nll: float
    n: int

    @classmethod
    def of(cls, probs: np.ndarray, labels: np.ndarray) -> Scores:
        return cls(float(np.mean(probs.argmax(axis=1) == labels)), float(expected_calibration_error(probs, labels)),
                   float(probs.max(axis=1).mean()), nll(probs, labels), len(labels))

    def to_json(self) -> dict[str, float]:
        return {"accuracy": round(self.accuracy, 4), "ece": round(self.ece, 4),
                "mean_confidence": round(self.mean_confidence, 4), "nll": round(self.nll, 4), "n": self.n}


@dataclass(frozen=True)
class FoldResult:
    """One fold: its held-out blocks, how many windows it trained and tested on, and the hits before/after."""

    fold: Fold
    correct_before: int
    correct_after: int
    temperature: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fold": self.fold.index, "held_out": [b.to_json() for b in self.fold.blocks],
                               "n_train": len(self.fold.train), "n_test": len(self.fold.test),
                               "purged": self.fold.purged, "correct_before": self.correct_before,
                               "correct_after": self.correct_after}
        if self.temperature is not None:
            out["temperature"] = round(self.temperature, 4)
        return out


@dataclass(frozen=True)
class EncoderResult:
    """An encoder's adaptation: cross-validated scores, per-fold details and the final fit."""

    windows: Windows
    method: Method
    labels: tuple[str, ...]
    before: Scores
    after: Scores
    folds: tuple[FoldResult, ...]
    temperature: float | None = None
    head: LinearHead | None = None
    resubstitution_accuracy: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        w = self.windows
        out: dict[str, Any] = {"modality": w.modality, "method": self.method, "labels": list(self.labels),
                               "n": self.before.n, "window_s": w.window_s, "skipped_windows": dict(w.skipped),
                               "before": self.before.to_json(), "after": self.after.to_json(),
                               "folds": [f.to_json() for f in self.folds]}
        if self.temperature is not None:
            out["temperature"] = round(self.temperature, 4)
        if self.head is not None:
            out["classes"] = list(self.head.classes)
            out["resubstitution_accuracy"] = round(float(self.resubstitution_accuracy or 0.0), 4)
        return {**out, **self.notes}


@dataclass(frozen=True)
class _Space:
    """The windows an encoder is scored on, their labels as indices, and the base encoder's rows mapped there."""

    labels: tuple[str, ...]
    keep: np.ndarray
    y: np.ndarray
    rows: WindowRows
    base_temperature: float | None


def _space(w: Windows, adapted: Sequence[str]) -> _Space:
    spec = w.spec
    base = tuple(dict.fromkeys(spec.label_map[label] for label in spec.labels))
    labels = (*base, *(a for a in adapted if a not in base))
    keep = np.flatnonzero([label in adapted for label in w.labels])
    if len(keep) < MIN_WINDOWS:
        raise ConfigError(f"encoder {w.encoder}: {len(keep)} labelled windows with labels it can output "
                          f"({', '.join(adapted)}), expected at least {MIN_WINDOWS}; record longer labelled segments")
    mapping = np.zeros((len(spec.labels), len(labels)))
    for i, label in enumerate(spec.labels):
        mapping[i, labels.index(spec.label_map[label])] = 1.0
    rows = [w.rows[i] for i in keep]
    owner = np.concatenate([np.full(len(r), j) for j, r in enumerate(rows)])
    window_rows = WindowRows(np.concatenate(rows), owner, len(keep), mapping)
    y = np.array([labels.index(w.labels[i]) for i in keep])
    calibration = spec.calibration
    return _Space(labels, keep, y, window_rows, None if calibration is None else calibration.temperature)


def _folds(w: Windows, space: _Space, segments: Sequence[Label], k: int) -> list[Fold]:
    ends = np.asarray(w.ends)[space.keep]
    return [f for f in make_folds(ends, w.window_s, make_blocks(segments, k), k) if len(f.test)]


def adapt_temperature(w: Windows, segments: Sequence[Label], k: int) -> EncoderResult:
    """Cross-validated temperature scaling of one encoder, and the temperature fitted on every window."""
    space = _space(w, tuple(dict.fromkeys(w.spec.label_map[label] for label in w.spec.labels)))
    before = space.rows.probs(space.base_temperature)
    after = np.zeros_like(before)
    results = []
    for fold in _folds(w, space, segments, k):
        if len(fold.train) == 0:
            raise ConfigError(f"encoder {w.encoder}: fold {fold.index + 1} of {k} leaves no training window; "
                              "use fewer --folds or longer labelled segments")
        t = fit_temperature(space.rows.subset(fold.train), space.y[fold.train])
        after[fold.test] = space.rows.subset(fold.test).probs(t)
        results.append(_fold_result(fold, before, after, space.y, t))
    final = fit_temperature(space.rows, space.y)
    return EncoderResult(w, "temperature", space.labels, Scores.of(before, space.y), Scores.of(after, space.y),
                         tuple(results), temperature=final)


def _fold_result(fold: Fold, before: np.ndarray, after: np.ndarray, y: np.ndarray,
                 temperature: float | None = None) -> FoldResult:
    hits = [int(np.sum(p[fold.test].argmax(axis=1) == y[fold.test])) for p in (before, after)]
    return FoldResult(fold, hits[0], hits[1], temperature)


def adapt_head(w: Windows, segments: Sequence[Label], k: int, l2: float, order: Sequence[str]) -> EncoderResult:
    """A cross-validated per-user linear head on the EEG features, and the head trained on every window.

    ``order`` is the order of labels in the head (canonical first).
    """
    classes = tuple(label for label in order if label in set(w.labels))
    if len(classes) < 2:
        raise ConfigError(f"encoder {w.encoder}: the session's labelled {w.modality} windows all have label "
                          f"{classes[0] if classes else 'none'!r}; a per-user head needs at least two labels")
    space = _space(w, classes)
    x = np.stack(w.features)[space.keep]
    yh = np.array([classes.index(w.labels[i]) for i in space.keep])
    columns = [space.labels.index(c) for c in classes]
    before = space.rows.probs(space.base_temperature)
    after = np.zeros_like(before)
    results = []
    for fold in _folds(w, space, segments, k):
        missing = [c for i, c in enumerate(classes) if not np.any(yh[fold.train] == i)]
        if missing:
            raise ConfigError(f"encoder {w.encoder}: fold {fold.index + 1} of {k} leaves no training window of "
                              f"{missing[0]!r} (windows of {w.window_s:g} s that overlap a held-out one are left "
                              "out); use fewer --folds or longer labelled segments")
        head = fit_linear_head(x[fold.train], yh[fold.train], classes, l2)
        after[np.ix_(fold.test, columns)] = head.predict_proba(x[fold.test])
        results.append(_fold_result(fold, before, after, space.y))
    final = fit_linear_head(x, yh, classes, l2)
    resub = float(np.mean(final.predict_proba(x).argmax(axis=1) == yh))
    return EncoderResult(w, "linear_head", space.labels, Scores.of(before, space.y), Scores.of(after, space.y),
                         tuple(results), head=final, resubstitution_accuracy=resub, notes={"head_l2": l2})
