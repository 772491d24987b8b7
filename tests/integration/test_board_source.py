"""BoardSource on BrainFlow's real SYNTHETIC_BOARD and PLAYBACK_FILE_BOARD (no hardware needed)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("brainflow")

from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams  # noqa: E402
from brainflow.data_filter import DataFilter  # noqa: E402

from edge_mer.errors import SensorError  # noqa: E402
from edge_mer.sources.eeg_board import BoardConfig, BoardSource, resolve_board_id  # noqa: E402

SYNTH = int(BoardIds.SYNTHETIC_BOARD)
RATE = BoardShim.get_sampling_rate(SYNTH)
NAMES = tuple(BoardShim.get_eeg_names(SYNTH))
FAST = {"poll_s": 0.05, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


def _collect(source: BoardSource, seconds: float) -> list:
    chunks, start = [], time.monotonic()
    for chunk in source:
        chunks.append(chunk)
        if time.monotonic() - start >= seconds:
            break
    return chunks


def test_synthetic_board_streams_eeg_in_real_time() -> None:
    with BoardSource(BoardConfig(board="SYNTHETIC_BOARD", poll_s=0.1)) as board:
        info = board.info
        start = time.monotonic()
        chunks = _collect(board, 2.0)
        elapsed = time.monotonic() - start
    assert info.modality == "eeg" and info.rate == RATE and info.channel_names == NAMES
    total = sum(c.data.shape[1] for c in chunks)
    assert total == pytest.approx(elapsed * RATE, rel=0.15)
    assert len(chunks) >= 15  # one every poll_s
    for chunk in chunks:
        assert chunk.data.dtype == np.float64 and chunk.data.shape[0] == len(NAMES)
        assert chunk.meta["n"] == chunk.data.shape[1]
        assert abs(chunk.meta["board_ts"] - time.time()) < 10  # the board's Unix clock
    stamps = [c.t_ns for c in chunks]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    board_ts = [c.meta["board_ts"] for c in chunks]
    assert all(b > a for a, b in zip(board_ts, board_ts[1:]))


def test_close_releases_the_session_for_the_next_source() -> None:
    first = BoardSource(BoardConfig(board=str(SYNTH), **FAST))
    first.open()
    with pytest.raises(SensorError, match="cannot start streaming"):
        BoardSource(BoardConfig(board="SYNTHETIC_BOARD")).open()  # BrainFlow allows one session per board
    got = []
    threading.Timer(0.3, first.close).start()
    start = time.monotonic()
    for chunk in first:
        got.append(chunk)
    assert time.monotonic() - start < 0.5 + 0.3 and got
    with BoardSource(BoardConfig(board="synthetic_board", **FAST)) as second:
        assert next(iter(second)).data.shape[0] == len(NAMES)


def test_playback_replays_a_recorded_file_and_ends(tmp_path: Path) -> None:
    shim = BoardShim(SYNTH, BrainFlowInputParams())
    shim.prepare_session()
    try:
        shim.start_stream()
        time.sleep(1.0)
        recorded = shim.get_board_data()
    finally:
        shim.release_session()
    path = tmp_path / "synthetic.csv"
    DataFilter.write_file(recorded, str(path), "w")
    config = BoardConfig(board="PLAYBACK_FILE_BOARD", file=str(path), master_board="SYNTHETIC_BOARD", **FAST)
    start = time.monotonic()
    with BoardSource(config) as board:
        info = board.info
        chunks = list(board)  # ends by itself at the end of the file
    elapsed = time.monotonic() - start
    assert info.rate == RATE and info.channel_names == NAMES
    replayed = np.concatenate([c.data for c in chunks], axis=1)
    expected = recorded[BoardShim.get_eeg_channels(SYNTH)]
    assert replayed.shape == expected.shape
    np.testing.assert_allclose(replayed, expected, atol=1e-5)
    assert 0.7 * recorded.shape[1] / RATE < elapsed < recorded.shape[1] / RATE + 1.0  # replayed in real time


def test_reconnects_after_the_session_is_lost() -> None:
    with BoardSource(BoardConfig(board="SYNTHETIC_BOARD", **FAST)) as board:
        chunks = iter(board)
        assert next(chunks).meta["reconnects"] == 0
        BoardShim.release_all_sessions()  # the session vanishes under the source, as when a dongle is pulled
        chunk = next(chunks)
        while chunk.meta["reconnects"] == 0:
            chunk = next(chunks)
        assert chunk.data.shape == (len(NAMES), chunk.meta["n"])


def test_gives_up_after_max_failures(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    data = np.zeros((BoardShim.get_num_rows(SYNTH), 500))
    data[BoardShim.get_timestamp_channel(SYNTH)] = 1.0 + np.arange(500) / RATE  # playback paces by these
    DataFilter.write_file(data, str(path), "w")
    config = BoardConfig(board="PLAYBACK_FILE_BOARD", file=str(path), master_board="SYNTHETIC_BOARD",
                         max_failures=2, **FAST)
    with BoardSource(config) as board:
        chunks = iter(board)
        next(chunks)
        path.unlink()  # re-preparing the playback board now fails
        BoardShim.release_all_sessions()
        with pytest.raises(SensorError, match="gave up after 2 failed reconnects"):
            for _ in chunks:
                pass


def test_unknown_boards_fail_clearly() -> None:
    with pytest.raises(SensorError, match=r"'SYNTHETIC_BORD'.*did you mean SYNTHETIC_BOARD.*valid names include"):
        BoardSource(BoardConfig(board="SYNTHETIC_BORD")).open()
    with pytest.raises(SensorError, match="'123456': not a BrainFlow BoardIds name or number"):
        resolve_board_id("123456")
    with pytest.raises(SensorError, match="needs master_board"):
        BoardSource(BoardConfig(board="PLAYBACK_FILE_BOARD", file="x.csv")).open()
    with pytest.raises(SensorError, match="no such playback file"):
        BoardSource(BoardConfig(board="PLAYBACK_FILE_BOARD", file="/nonexistent.csv", master_board="-1")).open()
    assert resolve_board_id("-1") == SYNTH and resolve_board_id("cyton_board") == int(BoardIds.CYTON_BOARD)
