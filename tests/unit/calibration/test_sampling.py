"""stratified_sample and split_by_group: label proportions, determinism, groups held out."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer_calibration.datasets import stratified_sample, split_by_group
from edge_mer_calibration.samples import Sample


def _samples(counts: dict[str | None, int]) -> list[Sample]:
    """Samples whose array holds their index, labelled by ``counts``, interleaved, groups g0..g4."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    order = np.random.default_rng(7).permutation(len(labels))
    return [Sample(np.array([i], dtype=np.float32), labels[j], f"s{i}", f"g{i % 5}") for i, j in enumerate(order)]


def test_proportions_are_kept_and_the_result_keeps_input_order() -> None:
    samples = _samples({"happy": 500, "sad": 300, "fear": 200})
    chosen = stratified_sample(samples, 100, seed=1)
    assert len(chosen) == 100
    assert Counter(s.label for s in chosen) == {"happy": 50, "sad": 30, "fear": 20}
    positions = [int(s.array[0]) for s in chosen]
    assert positions == sorted(positions) and len(set(positions)) == 100


def test_same_seed_same_samples_other_seed_other_samples() -> None:
    samples = _samples({"happy": 120, "sad": 80, None: 40})
    first = [s.source for s in stratified_sample(samples, 30, seed=3)]
    assert first == [s.source for s in stratified_sample(list(samples), 30, seed=3)]
    assert first != [s.source for s in stratified_sample(samples, 30, seed=4)]


def test_every_label_is_represented_when_size_allows() -> None:
    samples = _samples({"happy": 970, "sad": 20, "fear": 6, "disgust": 3, "surprise": 1})
    chosen = stratified_sample(samples, 10, seed=0)
    counts = Counter(s.label for s in chosen)
    assert len(chosen) == 10 and set(counts) == {"happy", "sad", "fear", "disgust", "surprise"}
    assert counts["happy"] == 6  # the rare labels' minimum of one comes out of the largest label
    # fewer slots than labels: the largest quotas win
    assert Counter(s.label for s in stratified_sample(samples, 2, seed=0)) == {"happy": 2}


def test_unlabelled_samples_are_one_stratum() -> None:
    chosen = stratified_sample(_samples({None: 30, "sad": 10}), 8, seed=0)
    assert Counter(s.label for s in chosen) == {None: 6, "sad": 2}


def test_size_zero_or_beyond_the_data_returns_everything() -> None:
    samples = _samples({"happy": 5, "sad": 3})
    assert stratified_sample(samples, 0, seed=0) == samples
    assert stratified_sample(iter(samples), 50, seed=0) == samples
    with pytest.raises(InputError, match="size must be an integer >= 0"):
        stratified_sample(samples, -1)


def test_split_by_group_holds_whole_groups_out() -> None:
    samples = _samples({"happy": 10, "sad": 10})
    held, rest = split_by_group(samples, ["g1", "g3"])
    assert {s.group for s in held} == {"g1", "g3"} and len(held) == 8
    assert not {s.group for s in rest} & {"g1", "g3"} and len(held) + len(rest) == 20
    assert [s.source for s in held] == [s.source for s in samples if s.group in ("g1", "g3")]
    with pytest.raises(InputError, match="group\\(s\\) g9 not in the samples; present: g0, g1, g2, g3, g4"):
        split_by_group(samples, ["g1", "g9"])
    with pytest.raises(InputError, match="groups is empty"):
        split_by_group(samples, [])
