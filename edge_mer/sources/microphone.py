"""Microphone source: a PyAudio (PortAudio) input stream in callback mode feeding a bounded ring.

PortAudio calls :meth:`MicrophoneSource._callback` on its own thread with each
buffer of int16 frames; the callback only copies them into an
:class:`AudioRing` (``buffer_s`` seconds; when the consumer falls behind the
oldest frames are dropped and counted, never an error) and wakes the consumer.
Iteration yields float32 mono chunks of about ``chunk_ms`` (channels averaged
by :func:`~edge_mer.preprocess.audio.to_mono`). ``t_ns`` is the daemon-clock
time of a chunk's newest sample, derived from PortAudio's ADC time of the
buffer when the host API provides it; the ADC time itself is ``meta["device_time"]``.

With ``MicrophoneConfig.file`` set, a :class:`~edge_mer.sources.wav.WavFileSource`
plays that file instead (see :mod:`edge_mer.sources.registry`). PyAudio is imported lazily.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.config import require
from edge_mer.errors import ConfigError, SensorError
from edge_mer.preprocess.audio import to_mono
from edge_mer.sources.base import Chunk, Source, StreamInfo
from edge_mer.sources.wav import WavFileSource, chunk_samples

log = logging.getLogger(__name__)

STALL_S = 2.0  # no callback for this long (at least 4 chunks) means the device is gone
_MAX_LATENCY_S = 1.0  # ADC timestamps further off than this are treated as unusable


@dataclass(frozen=True)
class MicrophoneConfig:
    """PyAudio input: ``device`` is "" (the default input), an index, or a name substring.

    ``file`` replaces the microphone by a WAV file read at its real rate (same interface).
    """

    device: str = ""
    rate: int = 16000
    channels: int = 1
    chunk_ms: float = 20.0
    buffer_s: float = 10.0
    file: Path | None = None

    def __post_init__(self) -> None:
        require(8000 <= self.rate <= 384000, f"rate must be in 8000..384000 Hz, got {self.rate}")
        require(1 <= self.channels <= 32, f"channels must be in 1..32, got {self.channels}")
        require(1.0 <= self.chunk_ms <= 500.0, f"chunk_ms must be in 1..500, got {self.chunk_ms}")
        require(1.0 <= self.buffer_s <= 600.0, f"buffer_s must be in 1..600 s, got {self.buffer_s}")
        require(len(self.device) <= 256, f"device must be an index or a name of at most 256 characters, got "
                                         f"{len(self.device)} characters")
        if self.device.strip().lstrip("-").isdigit():
            require(0 <= int(self.device) <= 4096, f"device index must be in 0..4096, got {self.device}")


def describe_inputs(devices: Sequence[Mapping[str, Any]]) -> str:
    """``"0: name (2 ch, 44100 Hz), ..."`` for an error message, or ``"none"``."""
    if not devices:
        return "none (PortAudio sees no input device)"
    return ", ".join(f"{int(d['index'])}: {d['name']} ({int(d['maxInputChannels'])} ch, "
                     f"{int(d['defaultSampleRate'])} Hz)" for d in devices)


def select_input_device(devices: Sequence[Mapping[str, Any]], spec: str,
                        default_index: int | None) -> Mapping[str, Any]:
    """The input device that ``MicrophoneConfig.device`` names.

    ``devices`` are PortAudio device-info dicts of input devices
    (``maxInputChannels > 0``). ``spec`` is ``""`` (the default input,
    ``default_index``), a device index, or a case-insensitive name substring
    (an exact name wins over substrings; the first of several matches is taken).
    Raises :class:`SensorError` listing the available input devices.
    """
    spec = spec.strip()
    found: Mapping[str, Any] | None = None
    if spec == "":
        what = "default input device"
        found = next((d for d in devices if int(d["index"]) == default_index), None)
    elif spec.isdigit():
        what = f"input device {spec}"
        found = next((d for d in devices if int(d["index"]) == int(spec)), None)
    else:
        what = f"input device named like {spec!r}"
        key = spec.lower()
        exact = [d for d in devices if str(d["name"]).strip().lower() == key]
        matches = exact or [d for d in devices if key in str(d["name"]).lower()]
        if len(matches) > 1:
            log.warning("microphone %r matches %d input devices; using %s", spec, len(matches),
                        describe_inputs(matches[:1]))
        found = matches[0] if matches else None
    if found is None:
        raise SensorError(f"microphone: no {what}; available input devices: {describe_inputs(devices)}")
    return found


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


class MicrophoneSource(Source):
    """Live audio from a PyAudio input device as float32 mono ``Chunk`` objects (see the module docstring).

    ``meta``: ``overflows`` (ring overruns plus PortAudio input-overflow flags,
    since open), ``dropped`` (frames lost to ring overruns) and
    ``device_time`` (PortAudio ADC time of the newest sample in seconds, or
    None where the host API does not provide one).
    """

    kind = "microphone"

    def __init__(self, config: MicrophoneConfig) -> None:
        super().__init__()
        self.config = config
        self._chunk = max(chunk_samples(config.rate, config.chunk_ms), config.channels)
        self._ring = AudioRing(int(round(config.buffer_s * config.rate)), config.channels, config.rate)
        self._pa: Any = None
        self._stream: Any = None
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._pa_overflows = 0
        self._overflow_flag = 0
        self._continue = 0

    def open(self) -> None:
        """Open the configured input device; SensorError naming it (and listing inputs) if impossible."""
        try:
            import pyaudio  # lazy: native PortAudio
        except ImportError:
            raise SensorError("microphone needs PyAudio, which is not installed "
                              "(pip install 'edge-mer[audio]'; it needs PortAudio, e.g. apt install portaudio19-dev)"
                              ) from None

        if self._stream is not None:
            return
        cfg = self.config
        pa = pyaudio.PyAudio()
        try:
            device = select_input_device(_input_devices(pa), cfg.device, _default_input(pa))
            self._check_format(pa, device)
            self._overflow_flag, self._continue = pyaudio.paInputOverflow, pyaudio.paContinue
            stream = pa.open(format=pyaudio.paInt16, channels=cfg.channels, rate=cfg.rate, input=True,
                             input_device_index=int(device["index"]), frames_per_buffer=self._chunk,
                             stream_callback=self._callback, start=True)
        except (OSError, ValueError) as exc:  # PortAudio errors surface as OSError (IOError)
            pa.terminate()
            raise SensorError(f"microphone {cfg.device or '(default input)'!r}: cannot open a {cfg.rate} Hz "
                              f"{cfg.channels}-channel int16 input stream ({exc})") from None
        except SensorError:
            pa.terminate()
            raise
        self._pa, self._stream = pa, stream
        self._ring.last_write_s = time.monotonic()  # the stall clock starts with the stream
        self._info = StreamInfo(modality="speech", rate=float(cfg.rate),
                                description=f"microphone {int(device['index'])}: {device['name']}, {cfg.rate} Hz, "
                                            f"{cfg.channels} ch")
        log.info("opened %s", self._info.description)

    def _check_format(self, pa: Any, device: Mapping[str, Any]) -> None:
        import pyaudio

        cfg = self.config
        if cfg.channels > int(device["maxInputChannels"]):
            raise SensorError(f"microphone {device['name']!r}: {cfg.channels} channels requested, the device has "
                              f"{int(device['maxInputChannels'])}")
        try:
            pa.is_format_supported(cfg.rate, input_device=int(device["index"]), input_channels=cfg.channels,
                                   input_format=pyaudio.paInt16)
        except ValueError as exc:
            raise SensorError(f"microphone {device['name']!r}: {cfg.rate} Hz x {cfg.channels} ch int16 is not "
                              f"supported ({exc}); the device's default rate is "
                              f"{int(device['defaultSampleRate'])} Hz") from None

    def close(self) -> None:
        """Stop and close the stream and PortAudio; ends an iteration in progress; idempotent."""
        self._closed.set()
        with self._ring.cond:
            self._ring.cond.notify_all()
        with self._close_lock:
            stream, pa, self._stream, self._pa = self._stream, self._pa, None, None
            if stream is not None:
                try:
                    stream.stop_stream()
                    stream.close()
                except OSError as exc:
                    log.warning("microphone: closing the stream failed (%s)", exc)
            if pa is not None:
                pa.terminate()

    def __iter__(self) -> Iterator[Chunk]:
        _ = self.info  # SensorError unless open
        ring, n = self._ring, self._chunk
        stall_s = max(STALL_S, 4 * n / ring.rate)
        last_t_ns = 0
        while True:
            with ring.cond:
                while ring.available < n and not self._closed.is_set():
                    if time.monotonic() - ring.last_write_s > stall_s:
                        raise SensorError(f"microphone {self.config.device or '(default input)'!r}: no audio for "
                                          f"{stall_s:g} s (device unplugged or stream stopped)")
                    ring.cond.wait(0.1)
                if self._closed.is_set():
                    return
                block, t_ns, device_time = ring.read(n)
                meta = {"overflows": ring.overflows + self._pa_overflows, "dropped": ring.dropped,
                        "device_time": device_time}
            # Callback jitter moves the clock anchor by a few ms; stamps must still increase.
            last_t_ns = max(t_ns, last_t_ns + 1)
            yield Chunk(t_ns=last_t_ns, data=to_mono(block), meta=meta)

    def _callback(self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float],
                  status: int) -> tuple[None, int]:
        """PortAudio's thread: copy one buffer into the ring; must never raise or block."""
        now_ns = time.monotonic_ns()
        if status & self._overflow_flag:
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
        return None, self._continue


def _input_devices(pa: Any) -> list[dict[str, Any]]:
    infos = (pa.get_device_info_by_index(i) for i in range(pa.get_device_count()))
    return [dict(d) for d in infos if int(d.get("maxInputChannels", 0)) > 0]


def _default_input(pa: Any) -> int | None:
    try:
        return int(pa.get_default_input_device_info()["index"])
    except OSError:  # "No Default Input Device Available"
        return None


def wav_file_source(config: MicrophoneConfig) -> WavFileSource:
    """The microphone's stand-in: its ``file`` played in real time, in chunks of its ``chunk_ms``."""
    if config.file is None:
        raise ConfigError("speech.microphone.file: expected a sound file path for the 'wav' source")
    return WavFileSource(config.file, pace=True, chunk_ms=config.chunk_ms)
