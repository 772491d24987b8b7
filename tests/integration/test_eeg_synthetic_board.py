"""EEG preprocessing on data streamed by BrainFlow's SYNTHETIC_BOARD (no hardware needed)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("brainflow")

from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams  # noqa: E402
from brainflow.data_filter import DataFilter  # noqa: E402

from edge_mer.errors import InputError  # noqa: E402
from edge_mer.preprocess.eeg import (  # noqa: E402
    EegParams,
    EegPreprocessor,
    board_channel_names,
    board_eeg,
    board_eeg_rows,
)

BOARD = int(BoardIds.SYNTHETIC_BOARD)
MONTAGE = ("Fz", "C3", "Cz", "C4", "Pz", "Oz", "F7", "F3", "F4", "F8")
WINDOW_S = 2.0


@pytest.fixture(scope="module")
def board_data() -> np.ndarray:
    """A bit more than one window of data from a real (synthetic) BrainFlow session."""
    BoardShim.disable_board_logger()
    board = BoardShim(BOARD, BrainFlowInputParams())
    needed = int((WINDOW_S + 0.5) * BoardShim.get_sampling_rate(BOARD))
    try:
        board.prepare_session()
        board.start_stream()
        deadline = time.monotonic() + 15
        while board.get_board_data_count() < needed and time.monotonic() < deadline:
            time.sleep(0.1)
        data = board.get_board_data()
        board.stop_stream()
    finally:
        if board.is_prepared():
            board.release_session()
    assert data.shape[1] >= needed, f"the synthetic board gave {data.shape[1]} samples, wanted {needed}"
    return data


def test_board_metadata_matches_brainflow() -> None:
    names = board_channel_names(BOARD)
    assert names == tuple(BoardShim.get_eeg_names(BOARD))
    assert board_eeg_rows(BOARD) == tuple(BoardShim.get_eeg_channels(BOARD))
    assert set(MONTAGE) <= set(names)
    assert board_channel_names(int(BoardIds.CYTON_BOARD)) == ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")


def test_unknown_board_is_an_input_error() -> None:
    with pytest.raises(InputError, match="BrainFlow board 123456"):
        board_channel_names(123456)


def test_synthetic_board_window_gives_model_features(board_data: np.ndarray) -> None:
    eeg, names, rate = board_eeg(board_data, BOARD)
    assert rate == 250 and eeg.shape == (16, board_data.shape[1])
    # the synthetic board's signals are in microvolts, up to about a millivolt
    pre = EegPreprocessor(EegParams(channels=MONTAGE, window_s=WINDOW_S, max_abs=5000.0))
    out = pre.process(eeg, names, rate)
    assert isinstance(out, np.ndarray), out
    assert out.shape == (10, 5) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.array_equal(out, pre.process(eeg, names, rate))
    # a different montage of the same data: C3 and C4 features are those of the same rows
    both = EegPreprocessor(EegParams(channels=("C4", "C3"), window_s=WINDOW_S)).process(eeg, names, rate)
    assert np.array_equal(both, out[[3, 1]])


def test_brainflow_file_round_trip_gives_the_same_features(board_data: np.ndarray, tmp_path: Path) -> None:
    """The calibration reader's path (a BrainFlow CSV file) and the daemon's agree."""
    path = tmp_path / "session.csv"
    DataFilter.write_file(board_data, str(path), "w")
    restored = DataFilter.read_file(str(path))
    assert restored.shape == board_data.shape
    pre = EegPreprocessor(EegParams(channels=MONTAGE, window_s=WINDOW_S))
    live = pre.process(*board_eeg(board_data, BOARD))
    replayed = pre.process(*board_eeg(restored, BOARD))
    assert np.allclose(live, replayed, atol=1e-3)


def test_missing_channels_of_a_board_are_all_named(board_data: np.ndarray) -> None:
    eeg, names, rate = board_eeg(board_data, BOARD)
    pre = EegPreprocessor(EegParams(channels=("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")))
    with pytest.raises(InputError) as info:
        pre.process(eeg, names, rate)
    lacking = str(info.value).split("(source has")[0]
    assert all(name in lacking for name in ("Fp1", "Fp2", "P7", "P8", "O1", "O2"))
