"""Sound files: the one reader every file-backed speech source uses, and a file played like a microphone.

:class:`SoundFileReader` opens any format libsndfile reads (WAV, FLAC, ...),
any rate, mono or multichannel, PCM or float, and hands out consecutive
blocks of float32 mono samples (:func:`mix_down`). It knows nothing about
clocks: :class:`WavFileSource` (below) and
:class:`~edge_mer.sessions.replay.AudioReplaySource` (a session's audio)
stamp the blocks each on their own clock.

:class:`WavFileSource` stands in for the microphone. With ``pace=True`` each
chunk is delivered when its newest sample would have been captured live,
stamped with ``time.monotonic_ns()``; with ``pace=False`` chunks come as fast
as they are read, stamped with the file's clock (nanoseconds since its first
sample). soundfile is imported lazily: it is a test/dev dependency, not needed
by hosts with a microphone.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edge_mer.errors import InputError, SensorError
from edge_mer.preprocess.audio import to_mono
from edge_mer.sources.base import Chunk, Source, StreamInfo

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = (4000, 384_000)  # sound files outside this are refused (a 3 Hz "speech" file is a mistake)
MAX_CHANNELS = 64


def chunk_samples(rate: float, chunk_ms: float) -> int:
    """Samples in one chunk of ``chunk_ms`` milliseconds at ``rate`` Hz (at least one)."""
    return max(1, int(round(rate * chunk_ms / 1000.0)))


def mix_down(block: np.ndarray) -> np.ndarray:
    """``to_mono`` of an interleaved ``[n, channels]`` block, including blocks shorter than their channel count."""
    if block.ndim == 2 and block.shape[0] < block.shape[1]:
        # to_mono rejects [n, c] with n < c as a likely transposition; a file's last few
        # samples can legitimately look like that, so repeat the rows and take every c-th.
        reps = block.shape[1]
        return to_mono(np.repeat(block, reps, axis=0))[::reps]
    return to_mono(block)


class SoundFileReader:
    """One open sound file read in consecutive blocks of float32 mono samples.

    ``name`` prefixes every error (default ``sound file '<path>'``). Opening
    raises :class:`SensorError` when the file is missing or not audio; after
    that :attr:`rate`, :attr:`channels`, :attr:`subtype` and :attr:`frames`
    describe it; a sample rate outside ``SAMPLE_RATE_HZ`` (4000..384000 Hz)
    is refused. :meth:`read` may run on one thread while :meth:`close` is
    called from another: the close waits for a read in progress, and later
    reads return None.
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        import soundfile  # lazy: a dev/test dependency

        self.path = Path(path)
        self.name = name if name is not None else f"sound file {str(self.path)!r}"
        if not self.path.is_file():
            raise SensorError(f"{self.name}: no such file")
        try:
            handle = soundfile.SoundFile(str(self.path))
        except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError derives from RuntimeError
            raise SensorError(f"{self.name}: cannot read it as audio ({exc}); expected a WAV or FLAC file") from None
        low, high = SAMPLE_RATE_HZ
        if not low <= handle.samplerate <= high:
            handle.close()
            raise SensorError(f"{self.name}: sample rate {handle.samplerate} Hz, expected {low}..{high} Hz")
        if not 0 < handle.channels <= MAX_CHANNELS:
            handle.close()
            raise SensorError(f"{self.name}: {handle.channels} channels, expected 1..{MAX_CHANNELS}")
        self.rate: int = int(handle.samplerate)
        self.channels: int = int(handle.channels)
        self.subtype: str = str(handle.subtype)
        self.frames: int = int(handle.frames)
        self.position = 0  # index of the next sample read() returns
        self._file: Any = handle
        self._lock = threading.Lock()

    def read(self, n: int) -> tuple[int, np.ndarray] | None:
        """The next up to ``n`` samples as ``(index of the first, float32 mono)``; None at the end or once closed.

        Raises SensorError naming the file and position for NaN/Inf samples (float files).
        """
        with self._lock:
            if self._file is None:
                return None
            # float64 keeps PCM exact: libsndfile scales int16 by 1/32768, as to_mono does.
            block = self._file.read(n, dtype="float64", always_2d=True)
        if block.shape[0] == 0:
            return None
        start = self.position
        self.position += block.shape[0]
        try:
            return start, mix_down(block)
        except InputError as exc:
            raise SensorError(f"{self.name}: bad samples at sample {start} ({start / self.rate:.3f} s): "
                              f"{exc}") from None

    def chunks(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`read` of ``n`` samples until the end of the file or :meth:`close`; the last block may be shorter."""
        while (block := self.read(n)) is not None:
            yield block

    def close(self) -> None:
        """Release the file (after a read in progress); idempotent."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> SoundFileReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class WavFileSource(Source):
    """A sound file as a speech source (same interface as the microphone); see the module docstring.

    ``meta``: ``sample_index`` (file position of the chunk's first sample),
    ``device_time`` (file time of its newest sample, seconds) and ``overflows`` (always 0).
    """

    kind = "sound file"

    def __init__(self, path: str | Path, *, pace: bool = True, chunk_ms: float = 20.0) -> None:
        super().__init__()
        if not 1.0 <= chunk_ms <= 500.0:
            raise SensorError(f"sound file {str(path)!r}: chunk_ms must be in 1..500, got {chunk_ms}")
        self.path = Path(path)
        self.pace = pace
        self.chunk_ms = float(chunk_ms)
        self._reader: SoundFileReader | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        """Open the file; SensorError naming it if it is missing or unreadable."""
        if self._reader is not None:
            return
        reader = self._reader = SoundFileReader(self.path)
        self._info = StreamInfo(modality="speech", rate=float(reader.rate),
                                description=f"sound file {self.path.name}: {reader.rate} Hz, {reader.channels} ch, "
                                            f"{reader.subtype}, {reader.frames / reader.rate:.2f} s")
        log.info("opened %s", self._info.description)

    def close(self) -> None:
        """Stop an iteration in progress (promptly, also while pacing) and close the file; idempotent."""
        self._stop.set()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()  # a read in progress finishes first; the iteration then sees the end

    def __iter__(self) -> Iterator[Chunk]:
        rate = self.info.rate
        reader = self._reader
        if reader is None:  # closed after open: nothing more to read
            return
        start_ns = time.monotonic_ns()
        for position, samples in reader.chunks(chunk_samples(rate, self.chunk_ms)):
            if self._stop.is_set():
                return
            end = position + samples.size  # one past the newest sample
            file_ns = int(round((end - 1) * 1e9 / rate))
            if self.pace:
                t_ns = start_ns + int(round(end * 1e9 / rate))  # when a live microphone would have it
                delay = (t_ns - time.monotonic_ns()) / 1e9
                if delay > 0 and self._stop.wait(delay):
                    return
            else:
                t_ns = file_ns
            yield Chunk(t_ns=t_ns, data=samples,
                        meta={"sample_index": position, "device_time": file_ns / 1e9, "overflows": 0})
