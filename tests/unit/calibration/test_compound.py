"""compound_pairings (label sets derived by cross-person pairing) and first_members (the metrics: test_multilabel_metrics).

The pools are real :class:`Pools` over the default bundle's manifest and
hand-made held-out outputs: each row peaks at its own label, so a drawn row
says which label it was drawn for (temperature scaling keeps the argmax).
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.errors import InputError
from edge_mer_calibration.compound import DU_PAIRS, all_pairs, compound_pairings, first_members
from edge_mer_calibration.pairing import ENCODERS, Pools

FUSED = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "boredom")


@pytest.fixture(scope="module")
def manifest():
    return parse_manifest(json.loads((default_bundle_path() / MANIFEST).read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def pools(manifest) -> Pools:
    outputs = {}
    for name in ENCODERS:
        labels = manifest.encoders[name].labels
        k = len(labels)
        rows = [(i, split) for i in range(k) for split in ("A", "A", "A", "B")]
        probs = np.full((len(rows), k), 0.3 / (k - 1), dtype=np.float32)
        probs[np.arange(len(rows)), [i for i, _ in rows]] = 0.7
        outputs[name] = {"probs": probs, "labels": np.array([labels[i] for i, _ in rows]),
                         "groups": np.array([f"p{j}" for j in range(len(rows))]),
                         "splits": np.array([split for _, split in rows])}
    return Pools(manifest, outputs, "A")


def _drawn(manifest, feeds: dict[str, np.ndarray], name: str, i: int) -> str:  # noqa: ANN001
    return manifest.encoders[name].labels[int(np.argmax(feeds[name][i]))]


def test_feeds_are_the_stacked_heads_inputs_and_sets_are_multi_hot(pools) -> None:
    feeds, sets = compound_pairings(pools, FUSED, 400, np.random.default_rng(0))
    assert set(feeds) == {*ENCODERS, "mask"}
    for name in ENCODERS:
        assert feeds[name].dtype == np.float32 and feeds[name].shape == (400, pools.rows[name].shape[1])
    assert feeds["mask"].shape == (400, 4) and sets.dtype == np.float32 and sets.shape == (400, 8)
    assert set(np.unique(sets)) == {0.0, 1.0} and set(sets.sum(1)) == {1.0, 2.0}
    mask = feeds["mask"]
    assert (mask.sum(1) >= 1).all() and not (mask[:, 2] * mask[:, 3]).any()  # one EEG montage at most
    for k, name in enumerate(ENCODERS):
        absent = mask[:, k] == 0
        assert not feeds[name][absent].any() and np.allclose(feeds[name][~absent].sum(1), 1.0, atol=1e-5)
    pairs = {frozenset(np.array(FUSED)[row > 0]) for row in sets if row.sum() == 2}
    assert pairs <= {frozenset(p) for p in DU_PAIRS} and len(pairs) == len(DU_PAIRS)
    share = float((sets.sum(1) == 1).mean())
    assert 0.4 < share < 0.6  # SINGLE_SHARE 0.5


def test_each_modality_draws_a_member_of_the_set_picked_on_its_own(manifest, pools) -> None:
    feeds, sets = compound_pairings(pools, FUSED, 600, np.random.default_rng(1), pairs=(("happy", "sad"),),
                                    single_share=0.0)
    assert (sets[:, FUSED.index("happy")] == 1).all() and (sets[:, FUSED.index("sad")] == 1).all()
    picks = {name: [] for name in ENCODERS}
    for i in range(600):
        for k, name in enumerate(ENCODERS):
            if feeds["mask"][i, k]:
                picks[name].append(_drawn(manifest, feeds, name, i))
    for name, drawn in picks.items():
        counts = Counter(drawn)
        assert set(counts) == {"happy", "sad"}, (name, counts)
        assert min(counts.values()) > 0.35 * len(drawn), (name, counts)
    both = [i for i in range(600) if feeds["mask"][i, 0] and feeds["mask"][i, 1]]
    assert any(_drawn(manifest, feeds, "face", i) != _drawn(manifest, feeds, "speech", i) for i in both)


def test_a_modality_without_the_label_gives_a_random_label_row(manifest, pools) -> None:
    feeds, _ = compound_pairings(pools, FUSED, 300, np.random.default_rng(2), pairs=(("angry", "disgust"),),
                                 single_share=0.0)
    eeg = [_drawn(manifest, feeds, "eeg", i) for i in np.flatnonzero(feeds["mask"][:, 2])]
    assert set(eeg) == {"happy", "sad", "fear"}  # the EEG data has neither label: any of its own
    face = {_drawn(manifest, feeds, "face", i) for i in np.flatnonzero(feeds["mask"][:, 0])}
    assert face == {"angry", "disgust"}


def test_singles_share_and_seed(pools) -> None:
    feeds, sets = compound_pairings(pools, FUSED, 200, np.random.default_rng(3), single_share=1.0,
                                    singles=("fear", "sad"))
    assert (sets.sum(1) == 1).all() and set(np.flatnonzero(sets.sum(0))) == {2, 4}
    again, sets_again = compound_pairings(pools, FUSED, 200, np.random.default_rng(3), single_share=1.0,
                                          singles=("fear", "sad"))
    assert np.array_equal(sets, sets_again) and all(np.array_equal(feeds[k], again[k]) for k in feeds)
    _, other = compound_pairings(pools, FUSED, 200, np.random.default_rng(4), single_share=1.0,
                                 singles=("fear", "sad"))
    assert not np.array_equal(sets, other)
    assert compound_pairings(pools, FUSED, 0, np.random.default_rng(0))[1].shape == (0, 8)


def test_du_pairs_are_the_twelve_attested_compounds() -> None:
    assert len(DU_PAIRS) == 12 and len({frozenset(p) for p in DU_PAIRS}) == 12
    basic = {"angry", "disgust", "fear", "happy", "sad", "surprise"}
    assert {x for p in DU_PAIRS for x in p} == basic
    excluded = {frozenset(p) for p in all_pairs(tuple(sorted(basic)))} - {frozenset(p) for p in DU_PAIRS}
    assert excluded == {frozenset(("happy", x)) for x in ("sad", "fear", "angry")}
    assert len(all_pairs(FUSED)) == 28


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pairs": (("happy", "calm"),)}, r"pair \['happy', 'calm'\] must be two distinct labels"),
    ({"pairs": (("sad", "sad"),)}, r"pair \['sad', 'sad'\] must be two distinct"),
    ({"single_share": 1.5}, r"single_share must be a number in \[0, 1\], got 1.5"),
    ({"pairs": (), "single_share": 0.5}, r"single_share 0.5 < 1 needs at least one pair"),
    ({"singles": ("calm",)}, r"single label 'calm' is not one of labels"),
    ({"n": -1}, r"n must be an integer >= 0, got -1"),
])
def test_bad_arguments_are_one_line_errors(pools, kwargs: dict, message: str) -> None:
    args = {"n": 10} | kwargs
    with pytest.raises(InputError, match=message):
        compound_pairings(pools, FUSED, rng=np.random.default_rng(0), **args)


def test_first_members_follow_label_order() -> None:
    sets = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    assert first_members(sets, ("a", "b", "c")).tolist() == ["b", "a", "c"]
    with pytest.raises(InputError, match="at least one label"):
        first_members(np.zeros((1, 3)), ("a", "b", "c"))
    with pytest.raises(InputError, match=r"label sets row 1 column 2 is 0.5; expected 0 or 1"):
        first_members(np.array([[0, 1, 0], [1, 0, 0.5]]), ("a", "b", "c"))
