"""Which sizes the runtime feeds each dynamic axis of a model, from the axis roles in the manifest.

A manifest tensor names its dynamic axes (``["N", 1, 64, "T"]``) and, with
``layout``, what each axis is (``"NCFT"``).  The runtime decides two kinds
of size: the batch (axis 0, or layout letter ``N``: faces per frame,
detector regions, one window) and, for a time axis (layout letter ``T``),
the frames of the audio windows a configuration allows.  Backends that
compile for fixed ranges (TensorRT) get these as ``ModelRef.dim_ranges``,
so a shipped model needs no hand-written profile.
"""
from __future__ import annotations

from collections.abc import Sequence

from edge_mer.bundle.schema import DetectorSpec, FusionHead, TensorInfo
from edge_mer.errors import BundleError
from edge_mer.preprocess.face_params import MAX_FACES

Range = tuple[int, int, int]

#: Layout letters of the axes whose sizes the runtime decides.
BATCH_LETTER, TIME_LETTER = "N", "T"


def _role(tensor: TensorInfo, axis: int) -> str | None:
    if tensor.layout is not None:
        letter = tensor.layout[axis]
        return letter if letter in (BATCH_LETTER, TIME_LETTER) else None
    return BATCH_LETTER if axis == 0 else None


def feed_ranges(inputs: Sequence[TensorInfo], *, batch: Range, frames: Range | None = None) -> dict[str, Range]:
    """``{axis name: (min, opt, max)}`` for the batch and time axes of ``inputs``.

    Axes of other roles are left out (a backend that needs them asks its own
    options).  One name used for two roles, or a time axis when ``frames`` is
    None, is a :class:`BundleError`: the manifest and the runtime disagree.
    """
    ranges: dict[str, Range] = {}
    roles: dict[str, str] = {}
    for tensor in inputs:
        for axis, dim in enumerate(tensor.shape):
            role = _role(tensor, axis) if isinstance(dim, str) else None
            if role is None:
                continue
            if roles.setdefault(dim, role) != role:
                raise BundleError(f"input {tensor.name!r}: axis name {dim!r} is used as both a batch and a time "
                                  "axis; expected one name per role")
            if role == TIME_LETTER and frames is None:
                raise BundleError(f"input {tensor.name!r} axis {axis} ({dim!r}) is a time axis, which only a "
                                  "speech encoder's audio windows size")
            ranges[dim] = batch if role == BATCH_LETTER else frames  # type: ignore[assignment]
    return ranges


def detector_ranges(spec: DetectorSpec) -> dict[str, Range]:
    """A detector is fed up to MAX_FACES images per call: the six search tiles, or one region per followed face."""
    return feed_ranges(spec.inputs, batch=(1, 1, MAX_FACES))


def head_ranges(head: FusionHead) -> dict[str, Range]:
    """A fusion head is fed one decision at a time."""
    return feed_ranges(head.inputs, batch=(1, 1, 1))
