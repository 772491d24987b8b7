"""PortAudio input streams through PyAudio: listing and choosing the input device, opening a callback stream.

:func:`open_input` is what :class:`~edge_mer.sources.microphone.MicrophoneSource`
calls to (re)connect: a fresh PortAudio instance each time, so a microphone
plugged in after start-up is seen. PortAudio's ALSA and JACK probing writes
straight to fd 2; those native calls run inside
:func:`~edge_mer.sources.native_stderr.native_stderr_silenced` (not at DEBUG).
PyAudio is imported lazily.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_mer.errors import SensorError
from edge_mer.sources.native_stderr import native_stderr_silenced

log = logging.getLogger(__name__)

#: PortAudio's callback status flag for an input overflow, and the callback's "keep going" return (portaudio.h).
PA_INPUT_OVERFLOW = 0x2
PA_CONTINUE = 0

#: PortAudio's stream callback, as PyAudio calls it: (data, frames, time info, status) -> (None, PA_CONTINUE).
Callback = Callable[[bytes | None, int, Mapping[str, float], int], tuple[None, int]]

_PYAUDIO_FIX = ("microphone needs PyAudio, which is not installed (pip install 'edge-mer[audio]'; it needs "
                "PortAudio, e.g. apt install portaudio19-dev)")


@dataclass
class InputStream:
    """A started input stream: ``description`` names the device; ``release`` stops it and frees PortAudio."""

    description: str
    release: Callable[[], None]

    def close(self) -> None:
        """Stop the stream and free PortAudio (no more callbacks once this returns)."""
        self.release()


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
        todo = ("connect one, or run with --no-speech" if not devices else
                "choose one with --microphone (speech.microphone.device)")
        raise SensorError(f"microphone: no {what}; available input devices: {describe_inputs(devices)}; {todo}")
    return found


def input_devices(pa: Any) -> list[dict[str, Any]]:
    """PortAudio's input devices (``maxInputChannels > 0``) as device-info dicts."""
    infos = (pa.get_device_info_by_index(i) for i in range(pa.get_device_count()))
    return [dict(d) for d in infos if int(d.get("maxInputChannels", 0)) > 0]


def default_input(pa: Any) -> int | None:
    """The index of PortAudio's default input device, or None when there is none."""
    try:
        return int(pa.get_default_input_device_info()["index"])
    except OSError:  # "No Default Input Device Available"
        return None


def _check_format(pa: Any, device: Mapping[str, Any], rate: int, channels: int, sample_format: int) -> None:
    if channels > int(device["maxInputChannels"]):
        raise SensorError(f"microphone {device['name']!r}: {channels} channels requested, the device has "
                          f"{int(device['maxInputChannels'])}")
    try:
        pa.is_format_supported(rate, input_device=int(device["index"]), input_channels=channels,
                               input_format=sample_format)
    except ValueError as exc:
        raise SensorError(f"microphone {device['name']!r}: {rate} Hz x {channels} ch int16 is not "
                          f"supported ({exc}); the device's default rate is "
                          f"{int(device['defaultSampleRate'])} Hz") from None


def _terminate(pa: Any, stream: Any = None) -> None:
    """Stop and close ``stream`` (if any), then terminate ``pa``; errors are logged, never raised."""
    problem = None
    with native_stderr_silenced(log):
        if stream is not None:
            try:
                stream.stop_stream()
                stream.close()
            except OSError as exc:  # the device may be gone already
                problem = exc
        pa.terminate()
    if problem is not None:
        log.warning("microphone: closing the stream failed (%s)", problem)


def open_input(device_spec: str, rate: int, channels: int, frames_per_buffer: int,
               callback: Callback) -> InputStream:
    """Open and start an int16 input stream on the device ``device_spec`` names; SensorError if impossible."""
    try:
        import pyaudio  # lazy: native PortAudio
    except ImportError:
        raise SensorError(_PYAUDIO_FIX) from None
    with native_stderr_silenced(log):
        pa = pyaudio.PyAudio()
        devices, default = input_devices(pa), default_input(pa)
    try:
        device = select_input_device(devices, device_spec, default)  # may log: not silenced
        with native_stderr_silenced(log):  # ALSA opens the device here and may complain
            _check_format(pa, device, rate, channels, pyaudio.paInt16)
            stream = pa.open(format=pyaudio.paInt16, channels=channels, rate=rate, input=True,
                             input_device_index=int(device["index"]), frames_per_buffer=frames_per_buffer,
                             stream_callback=callback, start=True)
    except (OSError, ValueError) as exc:  # PortAudio errors surface as OSError (IOError)
        _terminate(pa)
        raise SensorError(f"microphone {device_spec or '(default input)'!r}: cannot open a {rate} Hz "
                          f"{channels}-channel int16 input stream ({exc})") from None
    except SensorError:
        _terminate(pa)
        raise
    description = f"microphone {int(device['index'])}: {device['name']}, {rate} Hz, {channels} ch"
    return InputStream(description, lambda: _terminate(pa, stream))
