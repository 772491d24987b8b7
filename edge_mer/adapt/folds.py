"""Cross-validation folds over contiguous stretches of a session, never over single windows.

Neighbouring analysis windows share most of their samples (4 s EEG windows
every 0.5 s share 3.5 s), so folds of random windows would test on what
was trained on. Here the unit of a fold is a *block*, a contiguous part of
one label segment:

* segment ``i`` (in time order) of each label is block ``i`` of that label;
  a label with fewer than ``k`` segments has each segment cut into
  ``ceil(k / segments)`` equal contiguous blocks, so every label has at least
  ``k`` blocks and every fold tests every label;
* block ``j`` of a label goes to fold ``j mod k``; a window belongs to the
  block holding its centre, and is tested in that block's fold;
* a fold trains on the windows of the other folds **except** those whose time
  span overlaps any window it tests (purging), so no training window shares
  a sample with a tested one.

Every labelled window is tested exactly once, so an accuracy over all
folds' tested windows has the same ``n`` as one over the whole session.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_mer.errors import InputError
from edge_mer.sessions.format import Label

MIN_FOLDS, MAX_FOLDS = 2, 10


@dataclass(frozen=True)
class Block:
    """``[start, end)`` seconds of one label segment, tested in ``fold``."""

    start: float
    end: float
    label: str
    fold: int

    def to_json(self) -> list[object]:
        return [round(self.start, 6), round(self.end, 6), self.label]


@dataclass(frozen=True)
class Fold:
    """Window indices a fold trains and tests on; ``purged`` windows of other folds overlapped a tested one."""

    index: int
    train: np.ndarray
    test: np.ndarray
    purged: int
    blocks: tuple[Block, ...]


def make_blocks(segments: Sequence[Label], k: int) -> list[Block]:
    """The blocks of ``segments`` for ``k`` folds (see the module doc), in time order."""
    if not MIN_FOLDS <= k <= MAX_FOLDS:
        raise InputError(f"folds must be in {MIN_FOLDS}..{MAX_FOLDS}, got {k}")
    by_label: dict[str, list[Label]] = {}
    for segment in sorted(segments, key=lambda s: s.start):
        by_label.setdefault(segment.label, []).append(segment)
    blocks = []
    for label, own in by_label.items():
        pieces = math.ceil(k / len(own))
        j = 0
        for segment in own:
            edges = np.linspace(segment.start, segment.end, pieces + 1)
            for a, b in itertools.pairwise(edges):
                blocks.append(Block(float(a), float(b), label, j % k))
                j += 1
    return sorted(blocks, key=lambda b: b.start)


def _overlaps(starts: np.ndarray, ends: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
    """Whether each half-open ``[starts[i], ends[i])`` overlaps any of the (merged, sorted) ``spans``."""
    if not spans:
        return np.zeros(len(starts), dtype=bool)
    lo = np.array([a for a, _ in spans])
    hi = np.array([b for _, b in spans])
    # The last span starting before the window's end is the only one that can reach into the window.
    i = np.searchsorted(lo, ends, side="left") - 1
    return (i >= 0) & (hi[np.maximum(i, 0)] > starts)


def _merged(starts: np.ndarray, ends: np.ndarray) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    for a, b in sorted(zip(starts.tolist(), ends.tolist())):
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        else:
            spans.append((a, b))
    return spans


def make_folds(ends: np.ndarray, window_s: float, blocks: Sequence[Block], k: int) -> list[Fold]:
    """The ``k`` folds of windows ending at ``ends`` (seconds, each ``window_s`` long) over ``blocks``.

    A window whose centre lies in no block (it should not happen for
    windows inside label segments) is refused as an :class:`InputError`.
    """
    ends = np.asarray(ends, dtype=np.float64)
    starts = ends - window_s
    centres = ends - window_s / 2
    block_starts = np.array([b.start for b in blocks])
    which = np.searchsorted(block_starts, centres, side="right") - 1
    inside = (which >= 0) & (centres < np.array([b.end for b in blocks])[np.maximum(which, 0)])
    if not inside.all():
        bad = float(ends[~inside][0])
        raise InputError(f"the window ending at {bad:g} s lies in no label segment")
    fold_of = np.array([blocks[i].fold for i in which], dtype=int)
    folds = []
    for f in range(k):
        test = np.flatnonzero(fold_of == f)
        others = np.flatnonzero(fold_of != f)
        clash = _overlaps(starts[others], ends[others], _merged(starts[test], ends[test]))
        folds.append(Fold(f, others[~clash], test, int(clash.sum()), tuple(b for b in blocks if b.fold == f)))
    return folds
