"""EEG board source: any BrainFlow board, polled into ``[n_eeg_channels, n]`` chunks.

BrainFlow keeps a ring buffer of ``buffer_s`` seconds inside its native
library; every ``poll_s`` the iteration takes all new samples with
``get_board_data()`` and yields the EEG rows (microvolts) with the board's own
timestamp and package counter in ``meta``. When a call fails
(``BrainFlowError``) or a live board stops delivering for
``max(STALL_S, 20 samples)``, the session is released and prepared again with
exponential backoff; ``max_failures`` consecutive failed reconnects raise
:class:`~edge_mer.errors.SensorError`. ``PLAYBACK_FILE_BOARD`` replays a file
recorded with ``DataFilter.write_file`` in real time (its channel layout and
rate are the ``master_board``'s) and ends the iteration at the end of the file.

BrainFlow is imported lazily, and its logger is set to warnings-only the first
time a board is opened.
"""
from __future__ import annotations

import difflib
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.config import require
from edge_mer.errors import InputError, SensorError
from edge_mer.preprocess.eeg import board_channel_names, board_eeg_rows
from edge_mer.sources.backoff import Backoff, ReconnectPolicy
from edge_mer.sources.base import Chunk, Source, StreamInfo

log = logging.getLogger(__name__)

STALL_S = 5.0  # a live board silent this long (and for 20 sample periods) is reconnected
PLAYBACK_STALL_S = 2.0  # a playback board silent this long has passed the end of its file
CLOSE_WAIT_S = 0.45  # close() waits this long for a BrainFlow call in progress

_log_level_lock = threading.Lock()
_log_level_set = False


@dataclass(frozen=True)
class BoardConfig:
    """A BrainFlow board: ``board`` is a BoardIds name (``SYNTHETIC_BOARD``, ``CYTON_BOARD``...) or its number.

    The connection fields are BrainFlowInputParams'; ``file`` and
    ``master_board`` are for PLAYBACK_FILE_BOARD.
    """

    board: str = "SYNTHETIC_BOARD"
    serial_port: str = ""
    mac_address: str = ""
    ip_address: str = ""
    ip_port: int = 0
    ip_protocol: int = 0
    serial_number: str = ""
    other_info: str = ""
    timeout: int = 0
    file: str = ""
    master_board: str = ""
    poll_s: float = 0.1
    buffer_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    max_failures: int = 0

    def __post_init__(self) -> None:
        require(self.board != "" and len(self.board) <= 64, "board must be a BrainFlow BoardIds name or number")
        require(0 <= self.ip_port <= 65535, f"ip_port must be in 0..65535, got {self.ip_port}")
        require(0 <= self.ip_protocol <= 16, f"ip_protocol must be a BrainFlow IpProtocolTypes value, got "
                                             f"{self.ip_protocol}")
        require(0 <= self.timeout <= 3600, f"timeout must be in 0..3600 s, got {self.timeout}")
        require(0.01 <= self.poll_s <= 1.0, f"poll_s must be in 0.01..1, got {self.poll_s}")
        require(5.0 <= self.buffer_s <= 600.0, f"buffer_s must be in 5..600 s, got {self.buffer_s}")
        require(self.reconnect_max_s <= 3600, f"reconnect_max_s must be at most 3600 s, got {self.reconnect_max_s}")
        require(0 < self.reconnect_min_s <= self.reconnect_max_s,
                f"need 0 < reconnect_min_s <= reconnect_max_s, got {self.reconnect_min_s} and {self.reconnect_max_s}")
        require(self.max_failures >= 0, f"max_failures must be >= 0, got {self.max_failures}")


def _board_shim() -> Any:
    """The ``brainflow.board_shim`` module, imported quietly (lazy: native library)."""
    with warnings.catch_warnings():
        # brainflow locates its native library through pkg_resources on Python 3.11.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from brainflow import board_shim
    return board_shim


def _quiet_brainflow_once() -> None:
    """BrainFlow's native logger prints info lines to stderr by default; keep warnings and errors only."""
    global _log_level_set
    with _log_level_lock:
        if not _log_level_set:
            bs = _board_shim()
            bs.BoardShim.set_log_level(int(bs.LogLevels.LEVEL_WARN))
            _log_level_set = True


def resolve_board_id(name: str, what: str = "board") -> int:
    """A BrainFlow ``BoardIds`` name (case-insensitive) or number as the board id; SensorError if unknown."""
    board_ids = _board_shim().BoardIds
    known = {b.name: int(b.value) for b in board_ids}
    text = name.strip()
    if text.lstrip("-").isdigit():
        if int(text) in known.values():
            return int(text)
    elif text.upper() in known:
        return known[text.upper()]
    close = difflib.get_close_matches(text.upper(), list(known), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    examples = ", ".join(["SYNTHETIC_BOARD", "CYTON_BOARD", "CYTON_DAISY_BOARD", "GANGLION_BOARD",
                          "MUSE_2_BOARD", "PLAYBACK_FILE_BOARD"])
    raise SensorError(f"EEG {what} {name!r}: not a BrainFlow BoardIds name or number ({hint}valid names include "
                      f"{examples}; {len(known)} in all)")


class BoardSource(Source):
    """EEG from a BrainFlow board as float64 ``[n_eeg_channels, n]`` chunks (see the module docstring).

    ``meta``: ``board_ts`` (the board's timestamp of the newest sample, Unix
    seconds), ``package_num`` (its package counter), ``n`` (samples) and
    ``reconnects`` (since open).
    """

    kind = "EEG board"

    def __init__(self, config: BoardConfig) -> None:
        super().__init__()
        self.config = config
        self._name = f"EEG board {config.board}"
        self._shim: Any = None
        self._lock = threading.Lock()  # serialises BrainFlow calls on this board between iteration and close()
        self._stop = threading.Event()
        self._board_id = 0
        self._layout_id = 0  # the board whose rows and rate the data follow (the master for playback)
        self._rows: list[int] = []
        self._ts_row = 0
        self._pkg_row = 0
        self._buffer_n = 0
        self._playback_lines: int | None = None
        self._received = 0
        self._reconnects = 0

    @property
    def is_playback(self) -> bool:
        """Whether this source replays a file (``PLAYBACK_FILE_BOARD``)."""
        return self._board_id == int(_board_shim().BoardIds.PLAYBACK_FILE_BOARD)

    def open(self) -> None:
        """Prepare the session and start streaming; SensorError naming the board if that fails."""
        if self._shim is not None:
            return
        bs = _board_shim()
        _quiet_brainflow_once()
        cfg = self.config
        self._board_id = resolve_board_id(cfg.board)
        master = resolve_board_id(cfg.master_board, "master_board") if cfg.master_board else None
        needs_master = self._board_id in (int(bs.BoardIds.PLAYBACK_FILE_BOARD), int(bs.BoardIds.STREAMING_BOARD))
        if needs_master and master is None:
            raise SensorError(f"{self._name}: needs master_board, the board that recorded or streams the data "
                              "(e.g. SYNTHETIC_BOARD)")
        self._layout_id = master if needs_master and master is not None else self._board_id
        if self.is_playback:
            self._playback_lines = self._count_lines(cfg.file)
        names, rate = self._describe_layout()
        self._buffer_n = max(1, int(round(cfg.buffer_s * rate)))
        self._shim = bs.BoardShim(self._board_id, self._input_params(master))
        try:
            with self._lock:
                self._start_session()
        except bs.BrainFlowError as exc:
            self._release_quietly()
            self._shim = None
            raise SensorError(f"{self._name}: cannot start streaming ({exc}); check the connection fields "
                              "(serial_port, mac_address, ip_address...) and that no other program holds the board")
        self._info = StreamInfo(modality="eeg", rate=float(rate), channel_names=names,
                                description=f"{self._name} ({bs.BoardIds(self._layout_id).name} layout), "
                                            f"{len(names)} EEG channels @ {rate} Hz")
        log.info("opened %s", self._info.description)

    def _describe_layout(self) -> tuple[tuple[str, ...], int]:
        """(EEG channel names, sampling rate) of the data layout; also records the rows to keep."""
        bs = _board_shim()
        try:
            self._rows = list(board_eeg_rows(self._layout_id))
            try:
                names = board_channel_names(self._layout_id)
            except InputError:  # some boards have EEG rows but no electrode names
                names = tuple(f"EEG{i + 1}" for i in range(len(self._rows)))
            rate = int(bs.BoardShim.get_sampling_rate(self._layout_id))
            self._ts_row = int(bs.BoardShim.get_timestamp_channel(self._layout_id))
            self._pkg_row = int(bs.BoardShim.get_package_num_channel(self._layout_id))
        except (InputError, bs.BrainFlowError) as exc:
            raise SensorError(f"{self._name}: board {self._layout_id} has no EEG channels ({exc})") from None
        if len(names) != len(self._rows):
            raise SensorError(f"{self._name}: {len(self._rows)} EEG rows but {len(names)} EEG names")
        return names, rate

    def _count_lines(self, file: str) -> int:
        if not file or not Path(file).is_file():
            raise SensorError(f"{self._name}: no such playback file {file!r} (expected a file written by "
                              "DataFilter.write_file)")
        with open(file, "rb") as fh:
            return sum(1 for line in fh if line.strip())

    def _input_params(self, master: int | None) -> Any:
        cfg = self.config
        params = _board_shim().BrainFlowInputParams()
        for field in ("serial_port", "mac_address", "ip_address", "ip_port", "ip_protocol", "serial_number",
                      "other_info", "timeout", "file"):
            setattr(params, field, getattr(cfg, field))
        if master is not None:
            params.master_board = master
        return params

    def _start_session(self) -> None:
        """prepare_session + start_stream (caller holds the lock); raises BrainFlowError."""
        if not self._shim.is_prepared():
            self._shim.prepare_session()
        self._shim.start_stream(self._buffer_n)

    def _release_quietly(self) -> None:
        """Stop and release whatever is left of the session; errors only logged (the board may be gone)."""
        bs = _board_shim()
        if self._shim is None:
            return
        for step in ("stop_stream", "release_session"):
            try:
                if self._shim.is_prepared():
                    getattr(self._shim, step)()
            except bs.BrainFlowError as exc:
                log.debug("%s: %s failed (%s)", self._name, step, exc)

    def close(self) -> None:
        """Stop the stream and release the session (within ~0.5 s); ends an iteration in progress; idempotent."""
        self._stop.set()
        if self._lock.acquire(timeout=CLOSE_WAIT_S):
            try:
                self._release_quietly()
            finally:
                self._lock.release()
        else:
            # A reconnect is inside prepare_session (e.g. a serial timeout); the iterating
            # thread releases the session as soon as that call returns.
            log.warning("%s: a BrainFlow call is still running; the session is released when it returns",
                        self._name)

    def __iter__(self) -> Iterator[Chunk]:
        info = self.info
        try:
            yield from self._stream(info)
        finally:
            if self._stop.is_set():
                # close() may have given up waiting while a reconnect was inside prepare_session.
                with self._lock:
                    self._release_quietly()

    def _stream(self, info: StreamInfo) -> Iterator[Chunk]:
        """The poll loop behind :meth:`__iter__`."""
        bs = _board_shim()
        stall_s = PLAYBACK_STALL_S if self.is_playback else max(STALL_S, 20.0 / info.rate)
        cfg = self.config
        # Consecutive failed reconnects, counted across stalls until data flows again.
        backoff = Backoff(ReconnectPolicy(cfg.reconnect_min_s, cfg.reconnect_max_s, cfg.max_failures),
                          self._stop, self._name, log)
        last_data = next_poll = time.monotonic()
        while not self._stop.is_set():
            next_poll += cfg.poll_s
            now = time.monotonic()
            next_poll = max(next_poll, now)  # after a slow consumer, poll at once rather than in a burst
            if self._stop.wait(next_poll - now):
                return
            try:
                data = self._poll()
            except bs.BrainFlowError as exc:
                self._recover(f"get_board_data failed ({exc})", backoff)
                last_data = time.monotonic()
                continue
            if data is None:
                return
            if data.shape[1] == 0:
                if time.monotonic() - last_data > stall_s:
                    if self.is_playback:
                        log.info("%s: no data for %.1f s; the playback file has ended", self._name, stall_s)
                        return
                    self._recover(f"no data for {stall_s:g} s", backoff)
                    last_data = time.monotonic()
                continue
            backoff.reset()
            last_data = time.monotonic()
            self._received += data.shape[1]
            yield self._chunk(data)
            if self._playback_lines is not None and self._received >= self._playback_lines:
                log.info("%s: end of the playback file (%d samples)", self._name, self._received)
                return

    def _poll(self) -> np.ndarray | None:
        """All samples BrainFlow collected since the last poll, or None once closed."""
        with self._lock:
            if self._stop.is_set():
                return None
            return np.asarray(self._shim.get_board_data())

    def _chunk(self, data: np.ndarray) -> Chunk:
        return Chunk(t_ns=time.monotonic_ns(), data=np.ascontiguousarray(data[self._rows], dtype=np.float64),
                     meta={"board_ts": float(data[self._ts_row, -1]), "package_num": int(data[self._pkg_row, -1]),
                           "n": int(data.shape[1]), "reconnects": self._reconnects})

    def _recover(self, reason: str, backoff: Backoff) -> None:
        """Release and re-prepare the session, waiting ``backoff`` before each attempt.

        Raises SensorError once ``max_failures`` consecutive reconnects failed.
        Returns early (without a session) when the source is closed meanwhile.
        """
        bs = _board_shim()
        log.warning("%s: %s; reconnecting", self._name, reason)
        with self._lock:
            self._release_quietly()
        while not self._stop.is_set():
            if backoff.exhausted:
                raise SensorError(f"{self._name}: gave up after {backoff.failures} failed reconnects "
                                  f"(max_failures={self.config.max_failures}; last problem: {reason})")
            if not backoff.wait():
                return
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._start_session()
                except bs.BrainFlowError as exc:
                    reason = f"prepare/start failed ({exc})"
                    log.warning("%s: %s", self._name, reason)
                    self._release_quietly()
                    continue
            self._reconnects += 1
            log.info("%s: streaming again", self._name)
            return
