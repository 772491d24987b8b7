"""Multi-label fusion-head data: label sets *derived by cross-person pairing*, not annotated compound expressions.

No dataset here has multi-label emotion annotations: every face, clip and EEG
window carries exactly one label. A "compound" example is therefore made the
way :mod:`edge_mer_calibration.pairing` makes a single-label one, across
people and corpora: draw a label set ``S`` of one or two canonical labels,
then for each present modality a held-out output (:meth:`Pools.draw`) of a
window whose label is one member of ``S``, picked at random per modality. A
modality whose data has no such label gives a random-label row, as in
:func:`~edge_mer_calibration.pairing.pairings`; modality dropout is the same.
So a pair row says "the face shows one of these, the voice one of these"
(the face of one person who looked happy and the voice of another who
sounded surprised), never that any one person showed both at once.

The allowed pairs default to :data:`DU_PAIRS`, the twelve two-emotion
compounds of basic emotions that Du, Tao and Martinez (2014, "Compound facial
expressions of emotion", PNAS 111(15)) found people produce and recognise
(happily surprised, sadly angry, ...); pairs of opposite valence with
happiness (happy with sad, fear or anger) are not among them, nor is any pair
with neutral or boredom. :func:`all_pairs` gives every pair instead.

The numpy metrics the multi-label head is chosen and measured with
(per-label F1, thresholds, average precision, exact-set accuracy) are in
:mod:`edge_mer_calibration.multilabel_metrics`, shared with the export's
multilabel gate. :func:`first_members` gives the single ``labels`` truth of
such rows, which makes the class gate's accuracy a relative figure only
(see there).
"""
from __future__ import annotations

import itertools
from typing import Protocol

import numpy as np

from edge_mer.errors import InputError
from edge_mer_calibration.multilabel_metrics import label_sets as label_sets_of
from edge_mer_calibration.pairing import DROPOUT, ENCODERS, SLOTS

#: Du et al. (2014)'s two-emotion compounds, in the canonical label names.
DU_PAIRS: tuple[tuple[str, str], ...] = (
    ("happy", "surprise"), ("happy", "disgust"),
    ("sad", "fear"), ("sad", "angry"), ("sad", "surprise"), ("sad", "disgust"),
    ("fear", "angry"), ("fear", "surprise"), ("fear", "disgust"),
    ("angry", "surprise"), ("angry", "disgust"), ("disgust", "surprise"),
)
#: Share of rows whose label set is one label (the rest are pairs).
SINGLE_SHARE = 0.5


class DrawsRows(Protocol):
    """What :func:`compound_pairings` needs of :class:`~edge_mer_calibration.pairing.Pools`."""

    rows: dict[str, np.ndarray]

    def draw(self, name: str, label: str, rng: np.random.Generator) -> np.ndarray: ...


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def all_pairs(labels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Every unordered pair of distinct ``labels``, in label order."""
    return tuple(itertools.combinations(labels, 2))


def _label_sets(labels: tuple[str, ...], singles: tuple[str, ...], pairs: tuple[tuple[str, str], ...],
                single_share: float) -> list[tuple[str, ...]]:
    _check(len(labels) == len(set(labels)) and len(labels) > 0, f"labels {list(labels)} must be distinct and not empty")
    _check(isinstance(single_share, (int, float)) and 0.0 <= single_share <= 1.0,
           f"single_share must be a number in [0, 1], got {single_share!r}")
    for label in singles:
        _check(label in labels, f"single label {label!r} is not one of labels {list(labels)}")
    for pair in pairs:
        _check(len(pair) == 2 and len(set(pair)) == 2 and all(x in labels for x in pair),
               f"pair {list(pair)} must be two distinct labels of {list(labels)}")
    _check(single_share == 0.0 or len(singles) > 0, f"single_share {single_share} needs at least one single label")
    _check(single_share == 1.0 or len(pairs) > 0, f"single_share {single_share} < 1 needs at least one pair")
    return [(x,) for x in singles] + [tuple(p) for p in pairs]


def _present(rng: np.random.Generator) -> list[str]:
    # The same modality dropout as pairing.pairings: each slot kept with 1 - DROPOUT, at least one,
    # and the EEG slot is the synthetic-board or the Cyton montage at random.
    keep = rng.random(len(SLOTS)) >= DROPOUT
    if not keep.any():
        keep[rng.integers(len(SLOTS))] = True
    chosen = [s for s, k in zip(SLOTS, keep) if k]
    return [("eeg_cyton" if rng.random() < 0.5 else "eeg") if s == "eeg" else s for s in chosen]


def compound_pairings(pools: DrawsRows, labels: tuple[str, ...], n: int, rng: np.random.Generator,
                      pairs: tuple[tuple[str, str], ...] = DU_PAIRS, single_share: float = SINGLE_SHARE,
                      singles: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` rows of cross-person label-set pairings: the head's feeds and the multi-hot label sets.

    ``labels`` orders the label-set columns (the fused labels). With
    probability ``single_share`` a row's set is one label of ``singles``
    (default: all of ``labels``), otherwise one of ``pairs``, uniformly; each
    present modality then draws a row of one member of the set, picked at
    random per modality. Returns ``(feeds, label_sets)``: feeds as
    :func:`~edge_mer_calibration.pairing.pairings` gives them (per encoder
    float32 ``[n, K]``, zeros where absent, and ``mask`` ``[n, 4]``), and
    ``label_sets`` float32 ``[n, len(labels)]`` of 0/1. These sets are derived
    by pairing single-label data across people, not annotated compound expressions.
    """
    _check(isinstance(n, (int, np.integer)) and n >= 0, f"n must be an integer >= 0, got {n!r}")
    singles = tuple(labels) if singles is None else tuple(singles)
    sets = _label_sets(tuple(labels), singles, tuple(pairs), single_share)
    n_single = len(singles)
    column = {label: j for j, label in enumerate(labels)}
    feeds = {name: np.zeros((n, pools.rows[name].shape[1]), dtype=np.float32) for name in ENCODERS}
    mask = np.zeros((n, len(ENCODERS)), dtype=np.float32)
    label_sets = np.zeros((n, len(labels)), dtype=np.float32)
    for i in range(n):
        if rng.random() < single_share:
            members = sets[rng.integers(n_single)]
        else:
            members = sets[n_single + rng.integers(len(sets) - n_single)]
        label_sets[i, [column[x] for x in members]] = 1.0
        for name in _present(rng):
            feeds[name][i] = pools.draw(name, members[rng.integers(len(members))], rng)
            mask[i, ENCODERS.index(name)] = 1.0
    feeds["mask"] = mask
    return feeds, label_sets


def first_members(label_sets: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """For each row, the first label of its set in ``labels`` order (unicode), the ``labels`` key of head data.

    This is the truth the export's class gate scores the compound head's
    ``probs`` output against: a pair row's set has two members, and the
    distribution may rightly favour either, so the head's accuracy on these
    rows (``accuracy``, ``accuracy_fp32``) is not a recognition rate.  It is
    meaningful only as the drop of a candidate precision relative to FP32 on
    the same rows (``accuracy_drop_pt``); the multilabel output is judged on
    the full ``label_sets`` (mAP, per-label F1).
    """
    sets = label_sets_of(label_sets, len(labels))
    _check(bool(sets.any(axis=1).all()), "every label set needs at least one label")
    return np.array([labels[i] for i in sets.argmax(axis=1)])
