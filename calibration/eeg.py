"""EEG readers: GU ``.mat`` files, session ``eeg.csv`` and BrainFlow files, windowed through EegPreprocessor.

Every array is :meth:`edge_mer.preprocess.eeg.EegPreprocessor.process` of one
window of exactly ``params.window_s`` seconds at the source's rate, the
window the daemon's ring buffer hands over. Session CSVs are decoded by the
daemon's :class:`~edge_mer.sessions.replay.EegReplaySource`; BrainFlow files
by ``DataFilter.read_file`` with rows and names from ``BoardShim`` for the
board id (:func:`~edge_mer.preprocess.eeg.board_eeg`), as the daemon's
board source selects them. The daemon may override ``max_abs`` and
``notch_hz`` from its run configuration (``eeg.max_abs_uv``, ``eeg.notch_hz``);
pass ``dataclasses.replace(params, ...)`` to reproduce such a run exactly.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_mer.errors import InputError, SensorError
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import EegParams, EegPreprocessor, board_eeg
from edge_mer.sessions.format import Session
from edge_mer.sessions.replay import EegReplaySource
from edge_mer_calibration.samples import Sample, session_with

log = logging.getLogger(__name__)

#: Channel order of ``normalizedMatrix`` in the GU set (its Coordinates.locs).
GU_CHANNELS: tuple[str, ...] = (
    "Cz", "Fz", "Fp1", "F7", "F3", "FC1", "C3", "FC5", "FT9", "T7", "CP5", "CP1", "P3", "P7", "PO9", "O1",
    "Pz", "Oz", "O2", "PO10", "P8", "P4", "CP2", "CP6", "T8", "FT10", "FC6", "C4", "FC2", "F4", "F8", "Fp2")
GU_RATE = 128
GU_LABELS = {"H": "happy", "S": "sad", "F": "fear"}
_GU_NAME = re.compile(r"^sub(?P<subject>\d+)t(?P<trial>\d+)(?P<emotion>[HSF])\.mat$")


def is_gu_file(name: str) -> bool:
    """Whether ``name`` follows the GU set's ``sub<S>t<T><E>.mat`` naming."""
    return _GU_NAME.match(name) is not None


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


def _check_hop(hop_s: float) -> None:
    if isinstance(hop_s, bool) or not isinstance(hop_s, (int, float)) or not hop_s > 0:
        raise InputError(f"hop_s must be > 0 seconds, got {hop_s!r}")


def window_spans(n: int, rate: float, window_s: float, hop_s: float) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges of ``window_s`` windows every ``hop_s`` over ``n`` samples at ``rate``.

    The window length is ``round(window_s * rate)``, the number of samples
    the daemon's buffer and :meth:`EegPreprocessor.process` take.
    """
    size, step = int(round(window_s * rate)), int(round(hop_s * rate))
    if size < 1 or step < 1:
        raise InputError(f"window_s={window_s} / hop_s={hop_s} give no samples at {rate:g} Hz")
    return [(start, start + size) for start in range(0, n - size + 1, step)]


def _session_eeg(session: Session) -> tuple[np.ndarray, tuple[str, ...], float, np.ndarray]:
    """(data [channels, n], channel names, rate, time of every row) as the daemon's replay source reads them."""
    source = EegReplaySource(session, pace=False)
    try:
        with source:
            chunks = [chunk.data for chunk in source]
    except SensorError as exc:
        raise InputError(f"session {session.root}: {exc}") from None
    if not chunks:
        raise InputError(f"session {session.root}: {session.eeg} holds no EEG rows")
    data = np.concatenate(chunks, axis=1)
    if source.ts_col is None:
        times = np.arange(data.shape[1]) / source.rate
    else:  # the replay source stamps chunks with this column; read it for every row
        times = np.loadtxt(session.path("eeg"), delimiter=",", skiprows=1, usecols=[source.ts_col], ndmin=1)
        if times.shape[0] != data.shape[1]:
            raise InputError(f"session {session.root}: {times.shape[0]} timestamps for {data.shape[1]} EEG rows")
    return data, tuple(source.channels), float(source.rate), times


def read_session_eeg(session_dir: str | Path, params: EegParams, hop_s: float = 2.0) -> Iterator[Sample]:
    """Labelled feature windows of a session's ``eeg.csv``: ``params.window_s`` every ``hop_s`` seconds.

    Each window is labelled by :meth:`Session.label_at` at its newest row's
    time (the daemon's time stamp for it); windows there without a label are
    skipped, as are windows the quality check refuses (both counted in the
    log). ``group`` is the session directory name; ``source`` is
    ``<eeg path>@<start seconds>``.
    """
    _check_hop(hop_s)
    root = Path(session_dir)
    session = session_with(root, "eeg")
    data, names, rate, times = _session_eeg(session)
    pre = EegPreprocessor(params)
    skipped: Counter[str] = Counter()
    for start, end in window_spans(data.shape[1], rate, params.window_s, hop_s):
        label = session.label_at(float(times[end - 1]))
        if label is None:
            skipped["no label"] += 1
            continue
        features = pre.process(data[:, start:end], names, rate)
        if isinstance(features, Invalid):
            skipped[features.reason] += 1
            continue
        yield Sample(features, label, f"{session.path('eeg')}@{times[start]:g}", root.name)
    log.info("%s: EEG windows skipped: %s", root, dict(skipped) or "none")


def read_brainflow_file(path: str | Path, board_id: int | str, params: EegParams, hop_s: float = 2.0,
                        label: str | None = None) -> Iterator[Sample]:
    """Feature windows of a file written by ``DataFilter.write_file`` for board ``board_id``.

    ``board_id`` is a BrainFlow ``BoardIds`` number or name (``"CYTON_BOARD"``);
    its EEG rows, channel names and rate come from ``BoardShim``. Every
    window gets ``label`` (None: unlabelled, for calibration). Windows the
    quality check refuses are skipped and logged. ``source`` is
    ``<path>@<start seconds>``; ``group`` is None.
    """
    from brainflow.data_filter import DataFilter  # lazy: native library
    from brainflow.exit_codes import BrainFlowError

    _check_hop(hop_s)
    path = Path(path)
    board = resolve_board(board_id)
    if not path.is_file():
        raise InputError(f"BrainFlow file {path} does not exist")
    try:
        raw = DataFilter.read_file(str(path))
    except BrainFlowError as exc:
        raise InputError(f"cannot read {path} as a BrainFlow file ({exc}); expected DataFilter.write_file output") \
            from None
    if raw is None or raw.ndim != 2 or raw.size == 0:
        raise InputError(f"BrainFlow file {path} holds no samples")
    data, names, rate = board_eeg(raw, board)
    pre = EegPreprocessor(params)
    skipped: Counter[str] = Counter()
    for start, end in window_spans(data.shape[1], rate, params.window_s, hop_s):
        features = pre.process(data[:, start:end], names, rate)
        if isinstance(features, Invalid):
            skipped[features.reason] += 1
            continue
        yield Sample(features, label, f"{path}@{start / rate:g}")
    log.info("%s: EEG windows skipped: %s", path, dict(skipped) or "none")


def resolve_board(board: int | str) -> int:
    """A BrainFlow board id from its number or ``BoardIds`` name; InputError naming it when unknown."""
    from edge_mer.sources.eeg_board import resolve_board_id

    if isinstance(board, bool) or not isinstance(board, (int, str)):
        raise InputError(f"board must be a BrainFlow BoardIds name or number, got {board!r}")
    try:
        return resolve_board_id(str(board))
    except SensorError as exc:
        raise InputError(str(exc)) from None
