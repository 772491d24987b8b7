"""EEG readers: the GU Emotiv set's ``.mat`` layout, windowed through the runtime's EegPreprocessor."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_mer.errors import InputError
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import EegParams, EegPreprocessor
from edge_mer_calibration.samples import Sample

log = logging.getLogger(__name__)

#: Channel order of ``normalizedMatrix`` in the GU set (its Coordinates.locs).
GU_CHANNELS: tuple[str, ...] = (
    "Cz", "Fz", "Fp1", "F7", "F3", "FC1", "C3", "FC5", "FT9", "T7", "CP5", "CP1", "P3", "P7", "PO9", "O1",
    "Pz", "Oz", "O2", "PO10", "P8", "P4", "CP2", "CP6", "T8", "FT10", "FC6", "C4", "FC2", "F4", "F8", "Fp2")
GU_RATE = 128
GU_LABELS = {"H": "happy", "S": "sad", "F": "fear"}
_GU_NAME = re.compile(r"^sub(?P<subject>\d+)t(?P<trial>\d+)(?P<emotion>[HSF])\.mat$")


def gu_windows(path: Path, params: EegParams, hop_s: float) -> Iterator[np.ndarray]:
    """Consecutive ``params.window_s`` windows (every ``hop_s`` seconds) of one GU file, as [channels, samples]."""
    from scipy.io import loadmat  # lazy: only the GU reader needs it

    try:
        matrix = loadmat(str(path))["normalizedMatrix"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path} is not a GU .mat file with normalizedMatrix ({exc})") from None
    if matrix.ndim != 2 or matrix.shape[1] != len(GU_CHANNELS):
        raise InputError(f"{path}: normalizedMatrix is {list(matrix.shape)}, expected [samples, {len(GU_CHANNELS)}]")
    data = np.ascontiguousarray(matrix.T, dtype=np.float64)
    size, step = int(round(params.window_s * GU_RATE)), int(round(hop_s * GU_RATE))
    for start in range(0, data.shape[1] - size + 1, step):
        yield data[:, start:start + size]


def read_gu_folder(root: str | Path, params: EegParams, hop_s: float = 2.0) -> Iterator[Sample]:
    """Labelled feature windows from every ``sub<S>t<T><E>.mat`` under ``root``, in sorted order.

    ``group`` is ``sub<S>``; ``source`` is ``<file>@<start seconds>``. Windows the
    quality check refuses are skipped and logged, never silently relabelled.
    """
    root = Path(root)
    if hop_s <= 0:
        raise InputError(f"hop_s must be > 0 seconds, got {hop_s}")
    files = sorted(p for p in root.glob("*.mat") if _GU_NAME.match(p.name))
    if not files:
        raise InputError(f"no GU files (sub<S>t<T><E>.mat) in {root}")
    pre = EegPreprocessor(params)
    for path in files:
        match = _GU_NAME.match(path.name)
        for i, window in enumerate(gu_windows(path, params, hop_s)):
            features = pre.process(window, GU_CHANNELS, GU_RATE)
            if isinstance(features, Invalid):
                log.warning("%s window %d skipped: %s", path.name, i, features.reason)
                continue
            yield Sample(features, GU_LABELS[match["emotion"]], f"{path.name}@{i * hop_s:g}",
                         f"sub{match['subject']}")
