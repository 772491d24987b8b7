from __future__ import annotations

import math

import pytest

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.errors import BundleError, InputError
from edge_mer.fusion.affect import valence_arousal


@pytest.fixture(scope="module")
def affect():
    return load_bundle(default_bundle_path(), verify_hashes=False).manifest.affect


def test_expectation_of_coordinates(affect) -> None:
    # default bundle: happy (0.9907, 0.1357), sad (-0.887, -0.4617), neutral (0, 0)
    v, a = valence_arousal({"happy": 0.5, "sad": 0.25, "neutral": 0.25}, affect)
    assert v == pytest.approx(0.5 * 0.9907 - 0.25 * 0.887)
    assert a == pytest.approx(0.5 * 0.1357 - 0.25 * 0.4617)


def test_one_hot_and_extra_label(affect) -> None:
    assert valence_arousal({"boredom": 1.0}, affect) == pytest.approx((-0.4848, -0.8746))
    assert valence_arousal({"neutral": 1.0}, affect) == (0.0, 0.0)


def test_sum_is_normalised(affect) -> None:
    assert valence_arousal({"happy": 0.5000001, "sad": 0.5000001}, affect) == pytest.approx(
        ((0.9907 - 0.887) / 2, (0.1357 - 0.4617) / 2))


def test_label_without_coordinates_names_it(affect) -> None:
    with pytest.raises(BundleError, match="'contempt'"):
        valence_arousal({"happy": 0.5, "contempt": 0.5}, affect)


@pytest.mark.parametrize("probs", [{}, {"happy": 0.0}, {"happy": -0.5, "sad": 1.5}, {"happy": math.nan}])
def test_bad_probabilities(affect, probs) -> None:
    with pytest.raises(InputError):
        valence_arousal(probs, affect)
