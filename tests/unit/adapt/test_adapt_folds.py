"""Folds over contiguous label blocks: every window tested once, no training window overlapping a tested one."""
from __future__ import annotations

import numpy as np
import pytest

from edge_mer.adapt.folds import make_blocks, make_folds
from edge_mer.errors import InputError
from edge_mer.sessions.format import Label


def _windows(segments: list[Label], window_s: float, step_s: float) -> np.ndarray:
    """End times of the windows lying wholly inside one segment, every ``step_s``, as adapt collects them."""
    ends = np.arange(step_s, segments[-1].end + 1e-9, step_s)
    return np.array([t for t in ends if any(s.start <= t - window_s + 1e-9 and t <= s.end + 1e-9
                                            for s in segments)])


def _segments(labels: list[str], seconds: float) -> list[Label]:
    return [Label(i * seconds, (i + 1) * seconds, label) for i, label in enumerate(labels)]


def test_whole_segments_are_folds_when_each_label_has_enough() -> None:
    segments = _segments(["happy", "sad"] * 3, 10.0)
    blocks = make_blocks(segments, 3)
    assert [(b.start, b.end) for b in blocks] == [(s.start, s.end) for s in segments]
    assert [b.fold for b in blocks] == [0, 0, 1, 1, 2, 2]


def test_a_label_with_fewer_segments_than_folds_is_cut_into_blocks() -> None:
    blocks = make_blocks(_segments(["happy", "sad", "fear"], 15.0), 3)
    assert len(blocks) == 9
    assert [(b.start, b.end, b.fold) for b in blocks[:3]] == [(0.0, 5.0, 0), (5.0, 10.0, 1), (10.0, 15.0, 2)]
    for fold in range(3):  # every fold tests every label
        assert {b.label for b in blocks if b.fold == fold} == {"happy", "sad", "fear"}


@pytest.mark.parametrize("window_s, k, seconds", [(4.0, 2, 15.0), (0.5, 3, 8.0), (2.0, 5, 30.0), (4.0, 3, 60.0)])
def test_no_training_window_overlaps_a_tested_one(window_s: float, k: int, seconds: float) -> None:
    segments = _segments(["happy", "sad", "fear", "happy"], seconds)
    ends = _windows(segments, window_s, 0.5)
    folds = make_folds(ends, window_s, make_blocks(segments, k), k)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(ends)))  # every window tested exactly once
    for fold in folds:
        assert len(fold.train) + len(fold.test) + fold.purged == len(ends)
        train_start, train_end = ends[fold.train] - window_s, ends[fold.train]
        test_start, test_end = ends[fold.test] - window_s, ends[fold.test]
        overlap = (train_start[:, None] < test_end[None, :]) & (test_start[None, :] < train_end[:, None])
        assert not overlap.any()
        # Purging removes only what overlaps: each purged window does overlap a tested one.
        others = np.setdiff1d(np.arange(len(ends)), np.concatenate([fold.train, fold.test]))
        assert all(((ends[o] - window_s < test_end) & (test_start < ends[o])).any() for o in others)


def test_long_windows_in_short_segments_leave_folds_without_training_data() -> None:
    segments = _segments(["happy", "sad", "fear"], 15.0)
    ends = _windows(segments, 4.0, 0.5)
    folds = make_folds(ends, 4.0, make_blocks(segments, 3), 3)
    middle = folds[1]  # the middle block of each segment: 4 s windows overlap everything around it
    assert len(middle.train) == 0 and len(middle.test) > 0


def test_fold_counts_and_windows_outside_segments_are_refused() -> None:
    with pytest.raises(InputError, match=r"folds must be in 2\.\.10"):
        make_blocks(_segments(["happy"], 5.0), 1)
    blocks = make_blocks(_segments(["happy", "sad"], 5.0), 2)
    with pytest.raises(InputError, match="lies in no label segment"):
        make_folds(np.array([30.0]), 1.0, blocks, 2)
