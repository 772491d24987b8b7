"""Replay a recorded session as :class:`~edge_mer.sources.base.Source` objects, one per modality.

Each source turns a session time ``t`` (seconds from the session start) into
``chunk.t_ns = clock_offset_ns + int(t * 1e9)`` and puts ``t`` in
``chunk.meta["session_t"]``:

* :class:`VideoReplaySource` (``"face"``): one BGR uint8 frame per chunk,
  ``t = index / fps`` (fps from the container, in 0..1000; a file without one
  is refused). Undecodable frames are skipped and keep their index
  (:class:`~edge_mer.sources.video_file.FileFrames`), so the frames after a
  corrupt stretch keep their time; a file without a frame count (a recording
  that was killed) plays to its last decodable frame.
* :class:`AudioReplaySource` (``"speech"``): float32 mono chunks of ``chunk_ms``
  (20 ms) at the file's own rate, read and mixed down by
  :class:`~edge_mer.sources.wav.SoundFileReader` (as the live WAV source
  reads them; :func:`~edge_mer.preprocess.audio.to_mono`); ``t`` is the time of the
  chunk's newest sample, ``(index of that sample) / rate``; the last chunk may
  be shorter.
* :class:`EegReplaySource` (``"eeg"``): float64 ``[channels, n]`` chunks of
  about 0.1 s, channels named by the CSV header; ``t`` is the ``timestamp`` of
  the newest row when the column exists, else its index / rate. The rate is
  ``eeg_sampling_rate`` or, without it, ``1 / median interval`` of the first
  2,048 timestamps (rounded to 1e-6 Hz) and must be in 1..100000 Hz. A
  timestamp beyond +-1e6 s is refused (an epoch time, not seconds from the
  session start), as is a line of more than 64 Ki characters.

``pace=False`` (fast replay) never sleeps; every stream yields chunks in
non-decreasing ``t_ns``, so ``heapq.merge(*sources, key=lambda c: c.t_ns)``
interleaves them in session order. ``pace=True`` sleeps until
``time.monotonic_ns() >= chunk.t_ns`` before yielding each chunk, which is
real time when ``clock_offset_ns`` is the ``monotonic_ns()`` of the replay
start (the default when pacing). :meth:`close` (from any thread) ends a
running iteration at the next chunk, or at once while it is sleeping; the file
is released by the iterating thread.

Errors opening or decoding a file raise :class:`~edge_mer.errors.SensorError`
naming the file (and line and column for CSV), never quoting its content. Each
source checks again at ``open`` that its file is a regular file inside the
session directory.
"""
from __future__ import annotations

import csv
import logging
import math
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_mer.errors import ConfigError, SensorError
from edge_mer.names import Modality
from edge_mer.numeric import is_number_text
from edge_mer.sessions.eeg_csv import MAX_HEADER_CHARS, read_eeg_header
from edge_mer.sessions.format import EEG_RATE_HZ, MAX_SESSION_S, Session, load_session
from edge_mer.sources.base import Chunk, Source, StreamInfo
from edge_mer.sources.wav import SoundFileReader, chunk_samples

log = logging.getLogger(__name__)

EEG_CHUNK_S = 0.1
MAX_FPS = 1000.0
_RATE_PREFIX_ROWS = 2048
_MAX_LINE_CHARS = MAX_HEADER_CHARS  # an EEG CSV data line


class _ReplaySource(Source):
    """Shared pacing, stop flag and timestamping of the replay sources."""

    key: ClassVar[str]

    def __init__(self, session: Session | str | Path, *, clock_offset_ns: int | None = None,
                 pace: bool = False) -> None:
        super().__init__()
        if not isinstance(pace, bool):
            raise ConfigError(f"pace={pace!r}: expected true or false")
        if clock_offset_ns is not None and (not isinstance(clock_offset_ns, int) or isinstance(clock_offset_ns, bool)):
            raise ConfigError(f"clock_offset_ns={clock_offset_ns!r}: expected an integer (nanoseconds) or None")
        self.session = session if isinstance(session, Session) else load_session(session)
        if self.session.path(self.key) is None:
            raise ConfigError(f"session {self.session.root} has no {self.key!r} file to replay")
        self.path: Path = self.session.file(self.key)  # type: ignore[assignment]
        self.pace = pace
        self._offset_arg = clock_offset_ns
        self.clock_offset_ns = 0 if clock_offset_ns is None else clock_offset_ns
        self._stop = threading.Event()

    def open(self) -> None:
        try:  # again: the directory may have changed since the session was loaded
            self.session.file(self.key)
        except ConfigError as exc:
            raise SensorError(str(exc)) from None
        self._stop.clear()
        if self._offset_arg is None:
            self.clock_offset_ns = time.monotonic_ns() if self.pace else 0
        self._info = self._probe()

    def close(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[Chunk]:
        if self._info is None:
            raise SensorError(f"{self.kind} source for {self.path} is not open (use it in a with block)")
        return self._chunks()

    def _probe(self) -> StreamInfo:
        raise NotImplementedError

    def _chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError

    def _deliver(self, session_t: float, data: np.ndarray, meta: dict[str, Any]) -> Chunk | None:
        """The chunk for ``session_t``, after sleeping until its time when pacing; None once closed."""
        t_ns = self.clock_offset_ns + int(session_t * 1e9)
        if self.pace:
            while (remaining := t_ns - time.monotonic_ns()) > 0:
                if self._stop.wait(remaining / 1e9):
                    return None
        if self._stop.is_set():
            return None
        return Chunk(t_ns, data, {"session_t": session_t, **meta})


class VideoReplaySource(_ReplaySource):
    """Frames of the session's video, one per chunk at ``index / fps``."""

    kind = "replay-video"
    key = "video"

    def _probe(self) -> StreamInfo:
        import cv2

        cap = self._capture()
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if not math.isfinite(fps) or not 0 < fps <= MAX_FPS:
            raise SensorError(f"video {self.path}: frame rate {fps:.6g} is unusable (expected 0 < fps <= "
                              f"{MAX_FPS:g} in the file)")
        self.fps = fps
        count = f"{frames} frames" if frames > 0 else "frame count unknown"
        return StreamInfo("face", fps, description=f"replay of {self.path.name}: {width}x{height}, "
                          f"{fps:g} fps, {count}")

    def _capture(self) -> Any:
        """An opened ``cv2.VideoCapture`` of the file; SensorError (one line) when OpenCV cannot open it."""
        import cv2

        from edge_mer.sources.video_file import cv_error_line

        try:
            cap = cv2.VideoCapture(str(self.path))
            opened = cap.isOpened()
        except cv2.error as exc:
            raise SensorError(f"video {self.path}: OpenCV failed to open it ({cv_error_line(exc)})") from None
        if not opened:
            cap.release()
            raise SensorError(f"video {self.path}: OpenCV cannot open it (expected a video file such as AVI or MP4)")
        return cap

    def _chunks(self) -> Iterator[Chunk]:
        from edge_mer.sources.video_file import FileFrames

        cap = self._capture()
        try:
            frames = FileFrames(cap, f"video {self.path}")
            while not self._stop.is_set():
                started = time.perf_counter_ns()
                got = frames.next()
                if got is None:
                    break
                index, frame = got
                decode_ms = (time.perf_counter_ns() - started) / 1e6
                chunk = self._deliver(index / self.fps, frame, {"frame_index": index, "decode_ms": decode_ms})
                if chunk is None:
                    break
                yield chunk
        finally:
            cap.release()


class AudioReplaySource(_ReplaySource):
    """The session's audio as float32 mono chunks of ``chunk_ms`` at the file's own rate.

    Reading and mixing down are :class:`~edge_mer.sources.wav.SoundFileReader`'s,
    the same as the live WAV source's; this class only puts the chunks on the
    session clock. ``meta["sample_index"]`` is the index of the chunk's newest sample.
    """

    kind = "replay-audio"
    key = "audio"

    def __init__(self, session: Session | str | Path, *, clock_offset_ns: int | None = None,
                 pace: bool = False, chunk_ms: float = 20.0) -> None:
        super().__init__(session, clock_offset_ns=clock_offset_ns, pace=pace)
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, (int, float)) or not 0 < chunk_ms <= 10_000:
            raise ConfigError(f"chunk_ms={chunk_ms!r}: expected a number of milliseconds in (0, 10000]")
        self.chunk_ms = float(chunk_ms)

    def _probe(self) -> StreamInfo:
        with SoundFileReader(self.path, f"audio {self.path}") as reader:
            self.rate = reader.rate
            self.chunk_samples = chunk_samples(self.rate, self.chunk_ms)
            return StreamInfo("speech", float(self.rate), description=f"replay of {self.path.name}: {self.rate} Hz, "
                              f"{reader.channels} channel(s), {reader.subtype}, {reader.frames} samples")

    def _chunks(self) -> Iterator[Chunk]:
        # Opened here, not in open(), so that the iterating thread is the one that releases the file.
        with SoundFileReader(self.path, f"audio {self.path}") as reader:
            for first, mono in reader.chunks(self.chunk_samples):
                if self._stop.is_set():
                    break
                newest = first + mono.size - 1
                chunk = self._deliver(newest / self.rate, mono, {"sample_index": newest})
                if chunk is None:
                    break
                yield chunk


class EegReplaySource(_ReplaySource):
    """The session's EEG CSV as float64 ``[channels, n]`` chunks of about 0.1 s."""

    kind = "replay-eeg"
    key = "eeg"

    def _probe(self) -> StreamInfo:
        try:
            channels, ts_col = read_eeg_header(self.path)
        except ConfigError as exc:
            raise SensorError(str(exc)) from None
        self.channels, self.ts_col = channels, ts_col
        self._columns = [i for i in range(len(channels) + (ts_col is not None)) if i != ts_col]
        rate = self.session.eeg_sampling_rate
        source = "eeg_sampling_rate"
        if ts_col is not None:
            stamps = [t for t, _ in self._rows(limit=_RATE_PREFIX_ROWS)]
            if rate is None:
                steps = [b - a for a, b in zip(stamps, stamps[1:])]
                step = statistics.median(steps) if steps else 0.0
                if not step > 0:
                    raise SensorError(f"eeg {self.path}: cannot derive the sampling rate from {len(stamps)} "
                                      "timestamps (expected increasing times); set eeg_sampling_rate")
                rate, source = round(1.0 / step, 6), "timestamps"  # 249.99999999999977 -> 250.0
                low, high = EEG_RATE_HZ
                if not low <= rate <= high:
                    raise SensorError(f"eeg {self.path}: the timestamps give {rate:.6g} Hz, expected a sampling "
                                      f"rate in {low}..{high} Hz")
        if rate is None:
            raise SensorError(f"eeg {self.path}: no timestamp column and no eeg_sampling_rate in session.json")
        self.rate = float(rate)
        self.chunk_samples = max(1, round(self.rate * EEG_CHUNK_S))
        return StreamInfo("eeg", self.rate, channel_names=channels,
                          description=f"replay of {self.path.name}: {len(channels)} channels at "
                                      f"{self.rate:g} Hz (from {source})")

    def _rows(self, limit: int | None = None) -> Iterator[tuple[float | None, list[float]]]:
        """(timestamp or None, channel values) per data row, validated; stops after ``limit`` rows.

        Errors name the line and column, never the text there (the file is untrusted).
        """
        width = len(self.channels) + (self.ts_col is not None)
        count, last_stamp, line = 0, -math.inf, 1
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(_bounded_lines(fh, self.path))
                next(reader, None)
                for row in reader:
                    line = reader.line_num
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    if limit is not None and count >= limit:
                        return
                    where = f"eeg {self.path} line {line}"
                    if len(row) != width:
                        raise SensorError(f"{where}: {len(row)} values, expected {width} (one per header column)")
                    try:
                        values = [float(v) for v in row]
                    except ValueError:
                        col = next(i for i, v in enumerate(row) if not is_number_text(v)) + 1
                        raise SensorError(f"{where} column {col}: not a number, expected one per column") from None
                    stamp = None
                    if self.ts_col is not None:
                        stamp = values[self.ts_col]
                        if not abs(stamp) <= MAX_SESSION_S:
                            what = "looks like an epoch time" if math.isfinite(stamp) else "is not finite"
                            raise SensorError(f"{where}: the timestamp {what}; expected seconds from the session "
                                              f"start, within +-{MAX_SESSION_S:g}")
                        if stamp < last_stamp:
                            raise SensorError(f"{where}: the timestamp is earlier than the previous row's; expected "
                                              "non-decreasing times")
                        last_stamp = stamp
                        values = [values[i] for i in self._columns]
                    count += 1
                    yield stamp, values
        except UnicodeDecodeError:
            raise SensorError(f"eeg {self.path} after line {line}: not UTF-8 text") from None
        except csv.Error:
            raise SensorError(f"eeg {self.path} after line {line}: not valid CSV") from None
        except OSError as exc:
            raise SensorError(f"eeg {self.path}: cannot read it ({exc.strerror or type(exc).__name__})") from None

    def _chunks(self) -> Iterator[Chunk]:
        buffer: list[list[float]] = []
        index = -1  # index of the newest row read
        stamp: float | None = None
        rows = self._rows()
        try:
            for stamp, values in rows:
                index += 1
                buffer.append(values)
                if len(buffer) == self.chunk_samples:
                    chunk = self._emit(buffer, index, stamp)
                    if chunk is None:
                        return
                    yield chunk
                    buffer = []
                if self._stop.is_set():
                    return
            if buffer and (chunk := self._emit(buffer, index, stamp)) is not None:
                yield chunk
        finally:
            rows.close()

    def _emit(self, buffer: list[list[float]], index: int, stamp: float | None) -> Chunk | None:
        data = np.asarray(buffer, dtype=np.float64).T.copy()
        t = stamp if stamp is not None else index / self.rate
        return self._deliver(t, data, {"sample_index": index})


def _bounded_lines(fh: Any, path: Path) -> Iterator[str]:
    """The lines of a text file, refusing one longer than ``_MAX_LINE_CHARS`` before holding more of it."""
    number = 0
    while line := fh.readline(_MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > _MAX_LINE_CHARS:
            raise SensorError(f"eeg {path} line {number}: longer than {_MAX_LINE_CHARS} characters, expected one "
                              "sample's values")
        yield line


#: Modality -> the source replaying that modality's session file.
REPLAY_SOURCES: dict[Modality, type[_ReplaySource]] = {
    "face": VideoReplaySource, "speech": AudioReplaySource, "eeg": EegReplaySource}


def replay_sources(session: Session | str | Path, *, pace: bool,
                   clock_offset_ns: int | None = None) -> dict[Modality, Source]:
    """One unopened replay source per modality with a file: ``{"face"?, "speech"?, "eeg"?}``.

    All sources share one ``clock_offset_ns``; when None it is
    ``time.monotonic_ns()`` now if ``pace`` (replay in real time from now),
    else 0 (``t_ns`` is the session time in nanoseconds).
    """
    if not isinstance(session, Session):
        session = load_session(session)
    if clock_offset_ns is None:
        clock_offset_ns = time.monotonic_ns() if pace else 0
    return {m: REPLAY_SOURCES[m](session, clock_offset_ns=clock_offset_ns, pace=pace) for m in session.modalities}
