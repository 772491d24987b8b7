"""Batch and time axes of manifest tensors, and the ranges the runtime feeds them."""
from __future__ import annotations

import pytest

from edge_mer.bundle.feeds import feed_ranges
from edge_mer.bundle.schema import TensorInfo
from edge_mer.errors import BundleError

MEL = TensorInfo("logmel", ("N", 1, 64, "T"), layout="NCFT")


def test_batch_and_time_axes_by_layout() -> None:
    assert feed_ranges([MEL], batch=(1, 1, 1), frames=(101, 201, 3002)) == {"N": (1, 1, 1), "T": (101, 201, 3002)}


def test_without_layout_axis_0_is_the_batch_and_other_names_are_left_out() -> None:
    head = [TensorInfo("face", ("B", 7)), TensorInfo("mask", ("B", 4)), TensorInfo("x", (1, "K"))]
    assert feed_ranges(head, batch=(1, 1, 1)) == {"B": (1, 1, 1)}


def test_fixed_shapes_give_no_ranges() -> None:
    assert feed_ranges([TensorInfo("de", (1, 8, 5), layout="NCF")], batch=(1, 1, 4)) == {}


def test_time_axis_without_frames_is_refused() -> None:
    with pytest.raises(BundleError, match=r"input 'logmel' axis 3 \('T'\) is a time axis"):
        feed_ranges([MEL], batch=(1, 1, 1))


def test_one_name_for_two_roles_is_refused() -> None:
    odd = TensorInfo("odd", ("T", 64, "T"), layout="NFT")
    with pytest.raises(BundleError, match="used as both a batch and a time axis"):
        feed_ranges([odd], batch=(1, 1, 1), frames=(1, 2, 3))
