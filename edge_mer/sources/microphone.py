"""Microphone source: a PyAudio (PortAudio) input stream in callback mode feeding a bounded ring.

PortAudio calls :meth:`MicrophoneSource._callback` on its own thread with each
buffer of int16 frames; the callback only copies them into an
:class:`AudioRing` (``buffer_s`` seconds; when the consumer falls behind the
oldest frames are dropped and counted, never an error) and wakes the consumer.
Iteration yields float32 mono chunks of about ``chunk_ms`` (channels averaged
by :func:`~edge_mer.preprocess.audio.to_mono`). ``t_ns`` is the daemon-clock
time of a chunk's newest sample, derived from PortAudio's ADC time of the
buffer when the host API provides it; the ADC time itself is ``meta["device_time"]``.

When no audio arrives for ``read_timeout_s`` (the device was unplugged or its
stream stopped) the stream and PortAudio are released and opened again, on the
iterating thread, with exponential backoff from ``reconnect_min_s`` to
``reconnect_max_s`` (:mod:`edge_mer.sources.backoff`); nothing is yielded
meanwhile, so the daemon's health shows the modality as stalled.
``max_failures`` consecutive failed reconnects (0 = never give up) raise
:class:`~edge_mer.errors.SensorError`. :meth:`MicrophoneSource.open` itself
fails at once (SensorError naming the device) when the device cannot be opened.

With ``MicrophoneConfig.file`` set, a :class:`~edge_mer.sources.wav.WavFileSource`
plays that file instead (see :mod:`edge_mer.sources.registry`). PortAudio
itself is behind :mod:`edge_mer.sources.audio_input`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.config import require
from edge_mer.errors import ConfigError, SensorError
from edge_mer.preprocess.audio import to_mono
from edge_mer.sources.audio_input import (PA_CONTINUE, PA_INPUT_OVERFLOW, Callback, InputStream, describe_inputs,
                                          open_input, select_input_device)
from edge_mer.sources.backoff import Backoff, ReconnectPolicy
from edge_mer.sources.base import Chunk, Source, StreamInfo
from edge_mer.sources.wav import WavFileSource, chunk_samples

log = logging.getLogger(__name__)

__all__ = ["AudioRing", "MicrophoneConfig", "MicrophoneSource", "Opener", "describe_inputs", "open_pyaudio",
           "select_input_device", "wav_file_source"]

_MAX_LATENCY_S = 1.0  # ADC timestamps further off than this are treated as unusable


@dataclass(frozen=True)
class MicrophoneConfig:
    """PyAudio input: ``device`` is "" (the default input), an index, or a name substring.

    ``file`` replaces the microphone by a WAV file read at its real rate (same
    interface). No audio for ``read_timeout_s`` (and at least 4 chunks) means
    the device is gone: it is reopened with exponential backoff from
    ``reconnect_min_s`` to ``reconnect_max_s``; ``max_failures`` consecutive
    failed reconnects (0 = never give up) end the source.
    """

    device: str = ""
    rate: int = 16000
    channels: int = 1
    chunk_ms: float = 20.0
    buffer_s: float = 10.0
    file: Path | None = None
    read_timeout_s: float = 2.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    max_failures: int = 0

    def __post_init__(self) -> None:
        require(8000 <= self.rate <= 384000, f"rate must be in 8000..384000 Hz, got {self.rate}")
        require(1 <= self.channels <= 32, f"channels must be in 1..32, got {self.channels}")
        require(1.0 <= self.chunk_ms <= 500.0, f"chunk_ms must be in 1..500, got {self.chunk_ms}")
        require(1.0 <= self.buffer_s <= 600.0, f"buffer_s must be in 1..600 s, got {self.buffer_s}")
        require(len(self.device) <= 256, f"device must be an index or a name of at most 256 characters, got "
                                         f"{len(self.device)} characters")
        if self.device.strip().lstrip("-").isdigit():
            require(0 <= int(self.device) <= 4096, f"device index must be in 0..4096, got {self.device}")
        require(0.1 <= self.read_timeout_s <= 60.0, f"read_timeout_s must be in 0.1..60 s, got {self.read_timeout_s}")
        require(0 < self.reconnect_min_s <= self.reconnect_max_s <= 3600,
                f"reconnect delays need 0 < reconnect_min_s <= reconnect_max_s <= 3600 s, got "
                f"{self.reconnect_min_s} and {self.reconnect_max_s}")
        require(self.max_failures >= 0, f"max_failures must be >= 0 (0 = never give up), got {self.max_failures}")

    @property
    def reconnect_policy(self) -> ReconnectPolicy:
        """The backoff between reconnect attempts these options describe."""
        return ReconnectPolicy(self.reconnect_min_s, self.reconnect_max_s, self.max_failures)


#: Opens the configured input and starts it: ``(config, frames per buffer, callback) -> InputStream``;
#: raises SensorError naming the device when it cannot. :func:`open_pyaudio` is the real one.
Opener = Callable[[MicrophoneConfig, int, Callback], InputStream]


def open_pyaudio(config: MicrophoneConfig, frames_per_buffer: int, callback: Callback) -> InputStream:
    """The default :data:`Opener`: a fresh PortAudio instance and an int16 stream on ``config.device``."""
    return open_input(config.device, config.rate, config.channels, frames_per_buffer, callback)


class AudioRing:
    """A bounded, thread-safe ring of interleaved int16 frames with a clock anchor.

    :meth:`write` (the audio thread) never blocks for long and never fails:
    when unread frames would exceed ``capacity`` the oldest are dropped,
    counted in :attr:`dropped` and :attr:`overflows` (one per write that
    dropped). :meth:`read` returns the oldest unread frames with the
    daemon-clock and device-clock times of the newest of them, interpolated
    from the latest write at ``rate``.
    """

    def __init__(self, capacity: int, channels: int, rate: float) -> None:
        if capacity < 1 or channels < 1 or rate <= 0:
            raise SensorError(f"audio ring: need capacity, channels and rate > 0, got {capacity}, {channels}, {rate}")
        self.capacity, self.channels, self.rate = capacity, channels, float(rate)
        self.cond = threading.Condition()
        self._buf = np.zeros((capacity, channels), dtype=np.int16)
        self.written = 0  # frames ever written
        self.read_pos = 0  # frames ever consumed or dropped
        self.dropped = 0
        self.overflows = 0
        self.last_write_s = time.monotonic()
        self._anchor: tuple[int, int, float | None] = (0, 0, None)  # (index of newest frame, t_ns, device time)

    @property
    def available(self) -> int:
        """Unread frames."""
        return self.written - self.read_pos

    def write(self, block: np.ndarray, t_ns: int, device_time: float | None = None) -> None:
        """Append ``block`` [n, channels], whose newest frame was captured at ``t_ns`` (``device_time``)."""
        n = block.shape[0]
        if n == 0:
            return
        with self.cond:
            keep = block[-self.capacity:]
            start = (self.written + n - keep.shape[0]) % self.capacity
            first = min(keep.shape[0], self.capacity - start)
            self._buf[start:start + first] = keep[:first]
            self._buf[:keep.shape[0] - first] = keep[first:]
            self.written += n
            excess = self.available - self.capacity
            if excess > 0:
                self.read_pos += excess
                self.dropped += excess
                self.overflows += 1
            self._anchor = (self.written - 1, int(t_ns), device_time)
            self.last_write_s = time.monotonic()
            self.cond.notify_all()

    def read(self, n: int) -> tuple[np.ndarray, int, float | None]:
        """Up to ``n`` oldest unread frames (a copy) with the (t_ns, device time) of the newest of them."""
        with self.cond:
            n = min(n, self.available)
            start = self.read_pos % self.capacity
            idx = (start + np.arange(n)) % self.capacity
            block = self._buf[idx]
            self.read_pos += n
            newest, t_ns, dev = self._anchor
            behind = (newest - (self.read_pos - 1)) / self.rate
            return block, t_ns - int(round(behind * 1e9)), (None if dev is None else dev - behind)

    def skip(self) -> int:
        """Drop every unread frame (counted in :attr:`dropped`); returns how many."""
        with self.cond:
            n = self.available
            self.read_pos += n
            self.dropped += n
            return n


class _Silent(Exception):
    """No audio within the read timeout: the device is gone or its stream stopped."""


class MicrophoneSource(Source):
    """Live audio from a PyAudio input device as float32 mono ``Chunk`` objects (see the module docstring).

    ``meta``: ``overflows`` (ring overruns plus PortAudio input-overflow flags,
    since open), ``dropped`` (frames lost to ring overruns, or left unread when
    the device went away), ``device_time`` (PortAudio ADC time of the newest
    sample in seconds, or None where the host API does not provide one) and
    ``reconnects`` (since open). ``opener`` opens the device, at :meth:`open`
    and at every reconnect (default :func:`open_pyaudio`).
    """

    kind = "microphone"

    def __init__(self, config: MicrophoneConfig, *, opener: Opener | None = None) -> None:
        super().__init__()
        self.config = config
        self._opener: Opener = opener if opener is not None else open_pyaudio
        self._name = f"microphone {config.device or '(default input)'!r}"
        self._chunk = max(chunk_samples(config.rate, config.chunk_ms), config.channels)
        self._ring = AudioRing(int(round(config.buffer_s * config.rate)), config.channels, config.rate)
        self._input: InputStream | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()  # hands _input over between the iterating thread and close()
        self._pa_overflows = 0
        self._reconnects = 0

    def open(self) -> None:
        """Open the configured input device; SensorError naming it (and listing inputs) if impossible."""
        if self._input is not None:
            return
        if self._closed.is_set():
            raise SensorError(f"{self._name}: this source was closed; make a new one to open the device again")
        description = self._connect()
        self._info = StreamInfo(modality="speech", rate=float(self.config.rate), description=description)
        log.info("opened %s", description)

    def _connect(self) -> str:
        """Open a stream through the opener (SensorError if it cannot) and make it current, unless closed meanwhile."""
        stream = self._opener(self.config, self._chunk, self._callback)
        with self._lock:
            if not self._closed.is_set():
                self._input = stream
                self._ring.last_write_s = time.monotonic()  # the stall clock starts with the stream
                return stream.description
        stream.close()  # close() ran while the device was opening
        return stream.description

    def _release(self) -> None:
        with self._lock:
            stream, self._input = self._input, None
        if stream is not None:
            stream.close()

    def close(self) -> None:
        """Stop and close the stream and PortAudio; ends an iteration (or a reconnect wait) in progress; idempotent."""
        self._closed.set()
        with self._ring.cond:
            self._ring.cond.notify_all()
        self._release()

    def __iter__(self) -> Iterator[Chunk]:
        _ = self.info  # SensorError unless open
        # Consecutive failed reconnects, counted across stalls until audio flows again.
        backoff = Backoff(self.config.reconnect_policy, self._closed, self._name, log)
        last_t_ns = 0
        while True:
            try:
                got = self._next_block()
            except _Silent as exc:
                self._reconnect(str(exc), backoff)
                continue
            if got is None:
                return
            backoff.reset()
            block, t_ns, meta = got
            # Callback jitter moves the clock anchor by a few ms; stamps must still increase.
            last_t_ns = max(t_ns, last_t_ns + 1)
            yield Chunk(t_ns=last_t_ns, data=to_mono(block), meta=meta)

    def _next_block(self) -> tuple[np.ndarray, int, dict[str, object]] | None:
        """The next chunk's frames, time and meta; None once closed; :class:`_Silent` when audio stopped."""
        ring, n = self._ring, self._chunk
        stall_s = max(self.config.read_timeout_s, 4 * n / ring.rate)
        with ring.cond:
            while ring.available < n and not self._closed.is_set():
                if time.monotonic() - ring.last_write_s > stall_s:
                    raise _Silent(f"no audio for {stall_s:g} s (device unplugged or stream stopped)")
                ring.cond.wait(0.1)
            if self._closed.is_set():
                return None
            block, t_ns, device_time = ring.read(n)
            return block, t_ns, {"overflows": ring.overflows + self._pa_overflows, "dropped": ring.dropped,
                                 "device_time": device_time, "reconnects": self._reconnects}

    def _reconnect(self, reason: str, backoff: Backoff) -> None:
        """Release the stream and open the device again, waiting ``backoff`` before each attempt.

        Raises SensorError once ``max_failures`` consecutive reconnects failed;
        returns early (without a stream) when the source is closed meanwhile.
        """
        log.warning("%s: %s; reconnecting", self._name, reason)
        self._release()
        self._ring.skip()  # a partial chunk from before the gap
        while not self._closed.is_set():
            if backoff.exhausted:
                raise SensorError(f"{self._name}: gave up after {backoff.failures} failed reconnects "
                                  f"(max_failures={self.config.max_failures}; last problem: {reason})")
            if not backoff.wait():
                return
            try:
                description = self._connect()
            except SensorError as exc:
                reason = str(exc)
                log.warning("%s", reason)
                continue
            if not self._closed.is_set():
                self._reconnects += 1
                log.info("%s: streaming again from %s", self._name, description)
            return

    def _callback(self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float],
                  status: int) -> tuple[None, int]:
        """PortAudio's thread: copy one buffer into the ring; must never raise or block."""
        now_ns = time.monotonic_ns()
        if status & PA_INPUT_OVERFLOW:
            self._pa_overflows += 1
        if in_data:
            block = np.frombuffer(in_data, dtype=np.int16).reshape(-1, self.config.channels)
            adc = float(time_info.get("input_buffer_adc_time", 0.0) or 0.0)
            now_dev = float(time_info.get("current_time", 0.0) or 0.0)
            newest_dev = adc + (block.shape[0] - 1) / self.config.rate if adc > 0 else None
            t_ns = now_ns
            if newest_dev is not None and now_dev > 0 and 0 <= now_dev - newest_dev < _MAX_LATENCY_S:
                t_ns -= int(round((now_dev - newest_dev) * 1e9))  # buffer latency: the sample is older than now
            self._ring.write(block, t_ns, newest_dev)
        return None, PA_CONTINUE


def wav_file_source(config: MicrophoneConfig) -> WavFileSource:
    """The microphone's stand-in: its ``file`` played in real time, in chunks of its ``chunk_ms``."""
    if config.file is None:
        raise ConfigError("speech.microphone.file: expected a sound file path for the 'wav' source")
    return WavFileSource(config.file, pace=True, chunk_ms=config.chunk_ms)
