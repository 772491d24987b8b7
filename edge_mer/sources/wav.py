"""A sound file played like a microphone: float32 mono chunks at the file's own rate.

Any format libsndfile reads (WAV, FLAC, ...), any rate, mono or multichannel,
PCM or float. With ``pace=True`` each chunk is delivered when its newest
sample would have been captured live, stamped with ``time.monotonic_ns()``;
with ``pace=False`` chunks come as fast as they are read, stamped with the
file's clock (nanoseconds since its first sample). soundfile is imported
lazily: it is a test/dev dependency, not needed by hosts with a microphone.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.errors import InputError, SensorError
from edge_mer.preprocess.audio import to_mono
from edge_mer.sources.base import Chunk, Source, StreamInfo

log = logging.getLogger(__name__)


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
        self._file: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def open(self) -> None:
        """Open the file with soundfile; SensorError naming it if it is missing or unreadable."""
        import soundfile  # lazy: a dev/test dependency

        if self._file is not None:
            return
        if not self.path.is_file():
            raise SensorError(f"sound file {str(self.path)!r}: no such file")
        try:
            self._file = soundfile.SoundFile(str(self.path))
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            raise SensorError(f"sound file {str(self.path)!r}: cannot read it as audio ({exc})") from None
        f = self._file
        self._info = StreamInfo(modality="speech", rate=float(f.samplerate),
                                description=f"sound file {self.path.name}: {f.samplerate} Hz, {f.channels} ch, "
                                            f"{f.subtype}, {f.frames / f.samplerate:.2f} s")
        log.info("opened %s", self._info.description)

    def close(self) -> None:
        """Stop an iteration in progress (promptly, also while pacing) and close the file; idempotent."""
        self._stop.set()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __iter__(self) -> Iterator[Chunk]:
        rate = self.info.rate
        n = chunk_samples(rate, self.chunk_ms)
        start_ns = time.monotonic_ns()
        position = 0
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                block = self._file.read(n, dtype="float64", always_2d=True)
            if block.shape[0] == 0:
                return
            end = position + block.shape[0]  # one past the newest sample
            file_ns = int(round((end - 1) * 1e9 / rate))
            if self.pace:
                t_ns = start_ns + int(round(end * 1e9 / rate))  # when a live microphone would have it
                delay = (t_ns - time.monotonic_ns()) / 1e9
                if delay > 0 and self._stop.wait(delay):
                    return
            else:
                t_ns = file_ns
            try:
                samples = mix_down(block)
            except InputError as exc:  # NaN/Inf in a float file
                raise SensorError(f"sound file {str(self.path)!r}: bad samples at {position / rate:.3f} s "
                                  f"({exc})") from None
            yield Chunk(t_ns=t_ns, data=samples,
                        meta={"sample_index": position, "device_time": file_ns / 1e9, "overflows": 0})
            position = end
