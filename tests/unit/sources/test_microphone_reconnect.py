"""MicrophoneSource reconnection: stall detection, backoff, giving up, close() at any point, quiet PortAudio.

The source opens its device through the ``opener`` it is given (the real one
is PortAudio). Here the opener follows a script: an input that the test
drives from its own thread (real-time int16 buffers through the source's real
callback, then silence, as an unplugged microphone falls silent), a refusal,
or the real PortAudio opener, which on this host (no sound card) really fails.
Everything else (ring, stall clock, Backoff waits, logs) is the real code.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Union

import numpy as np
import pytest

from edge_mer.config import from_dict
from edge_mer.errors import ConfigError, SensorError
from edge_mer.sources.audio_input import Callback, InputStream
from edge_mer.sources.microphone import MicrophoneConfig, MicrophoneSource, open_pyaudio

LOGGER = "edge_mer.sources.microphone"
FAST = {"read_timeout_s": 0.5, "reconnect_min_s": 0.01, "reconnect_max_s": 0.02}


class DrivenInput:
    """An input whose buffers come from a test thread: ``buffers`` of them (None: until released), then silence."""

    def __init__(self, callback: Callback, frames: int, config: MicrophoneConfig, buffers: int | None) -> None:
        self.callback, self.frames, self.config, self.buffers = callback, frames, config, buffers
        self.released = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> InputStream:
        self._thread.start()
        return InputStream(f"driven input {id(self)}", self.release)

    def _run(self) -> None:
        period = self.frames / self.config.rate
        while not self.released.is_set() and (self.buffers is None or self.sent < self.buffers):
            data = np.full(self.frames * self.config.channels, self.sent % 1000, np.int16).tobytes()
            self.callback(data, self.frames, {}, 0)
            self.sent += 1
            self.released.wait(period)

    def release(self) -> None:
        self.released.set()
        self._thread.join(2.0)  # like Pa_CloseStream: no callback once this returns
        assert not self._thread.is_alive()


Step = Union[int, None, Exception, Callable[..., InputStream]]


class ScriptedOpener:
    """The source's opener: each call takes the next step (the last one repeats).

    An int or None opens a :class:`DrivenInput` with that many buffers; an
    exception is raised; a callable (the real :func:`open_pyaudio`) is called.
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.inputs: list[DrivenInput] = []

    def __call__(self, config: MicrophoneConfig, frames: int, callback: Callback) -> InputStream:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(config, frames, callback)
        driven = DrivenInput(callback, frames, config, step)
        self.inputs.append(driven)
        return driven.start()


def _no_inputs_here() -> bool:
    pyaudio = pytest.importorskip("pyaudio")
    from edge_mer.sources.audio_input import input_devices
    from edge_mer.sources.native_stderr import native_stderr_silenced

    with native_stderr_silenced():
        pa = pyaudio.PyAudio()
        try:
            return not input_devices(pa)
        finally:
            pa.terminate()


def test_a_silent_microphone_is_reopened_with_backoff_and_chunks_resume(caplog: pytest.LogCaptureFixture) -> None:
    opener = ScriptedOpener(10, SensorError("microphone: no default input device; unplugged"), None)
    source = MicrophoneSource(MicrophoneConfig(**FAST), opener=opener)
    stamps, reconnects, values = [], [], []
    with caplog.at_level(logging.INFO, logger=LOGGER), source:
        for chunk in source:
            stamps.append(chunk.t_ns)
            reconnects.append(chunk.meta["reconnects"])
            values.append(int(round(float(chunk.data[0]) * 32768)))
            if chunk.meta["reconnects"] == 1 and reconnects.count(1) >= 5:
                break
    assert opener.calls == 3 and opener.inputs[0].released.is_set() and opener.inputs[1].released.is_set()
    assert reconnects[:10] == [0] * 10 and values[:10] == list(range(10))  # every buffer before the gap
    assert values[10] == 0  # the new input's first buffer follows at once
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert messages[1:] == [
        ("WARNING", "microphone '(default input)': no audio for 0.5 s (device unplugged or stream stopped); "
                    "reconnecting"),
        ("WARNING", "microphone '(default input)': reconnect attempt 1 in 0.01 s"),
        ("WARNING", "microphone: no default input device; unplugged"),
        ("WARNING", "microphone '(default input)': reconnect attempt 2 in 0.02 s"),
        ("INFO", f"microphone '(default input)': streaming again from driven input {id(opener.inputs[1])}"),
    ]
    assert messages[0][1].startswith("opened driven input")


def test_a_reopened_input_that_stays_silent_counts_as_failed() -> None:
    """Backoff resets only when audio flows again, not when a device merely opens."""
    opener = ScriptedOpener(3, 0)  # after 3 buffers, every reconnect opens but never delivers
    config = MicrophoneConfig(**FAST, max_failures=3)
    chunks = 0
    with MicrophoneSource(config, opener=opener) as source:
        with pytest.raises(SensorError, match=r"^microphone '\(default input\)': gave up after 3 failed reconnects "
                                              r"\(max_failures=3; last problem: no audio for 0\.5 s"):
            for _ in source:
                chunks += 1
    assert chunks == 3 and opener.calls == 4 and all(i.released.is_set() for i in opener.inputs)


def test_real_portaudio_reconnects_fail_here_quietly_and_give_up(capfd: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """After the device goes silent, every reconnect is a real PortAudio open, which fails on this host."""
    if not _no_inputs_here():
        pytest.skip("this host has audio inputs")
    capfd.readouterr()
    opener = ScriptedOpener(5, open_pyaudio)
    config = MicrophoneConfig(device="3", **FAST, max_failures=2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER), MicrophoneSource(config, opener=opener) as source:
        with pytest.raises(SensorError) as info:
            for _ in source:
                pass
    text = str(info.value)
    assert text.startswith("microphone '3': gave up after 2 failed reconnects (max_failures=2; last problem: "
                           "microphone: no input device 3; available input devices: none")
    assert "\n" not in text and opener.calls == 3 and time.monotonic() - started < 3.0
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("microphone: no input device 3")]
    assert len(failures) == 2
    err = capfd.readouterr().err
    assert "ALSA" not in err and "jack" not in err.lower(), err  # PortAudio's probing stayed off fd 2


def test_close_during_a_backoff_wait_ends_the_iteration_at_once() -> None:
    opener = ScriptedOpener(3, SensorError("microphone: gone"))
    config = MicrophoneConfig(read_timeout_s=0.2, reconnect_min_s=30.0, reconnect_max_s=30.0)
    source = MicrophoneSource(config, opener=opener)
    source.open()
    ended = threading.Event()

    def consume() -> None:
        for _ in source:
            pass
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    deadline = time.monotonic() + 5.0
    while not opener.inputs[0].released.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)  # the stall was seen: the source now waits 30 s before reconnecting
    assert opener.inputs[0].released.is_set()
    closing = time.monotonic()
    source.close()
    assert ended.wait(0.5) and time.monotonic() - closing < 0.5
    assert opener.calls == 1  # closed before any reconnect attempt


def test_close_while_the_device_is_opening_releases_the_new_input() -> None:
    opening, proceed = threading.Event(), threading.Event()
    late: list[DrivenInput] = []

    def slow_open(config: MicrophoneConfig, frames: int, callback: Callback) -> InputStream:
        opening.set()
        proceed.wait(5.0)
        late.append(DrivenInput(callback, frames, config, None))
        return late[0].start()

    opener = ScriptedOpener(3, slow_open)
    source = MicrophoneSource(MicrophoneConfig(**FAST), opener=opener)
    source.open()
    result: list[Any] = []
    consumer = threading.Thread(target=lambda: result.append(sum(1 for _ in source)), daemon=True)
    consumer.start()
    assert opening.wait(5.0)
    source.close()  # does not wait for the open in progress
    proceed.set()
    consumer.join(2.0)
    assert result == [3] and late[0].released.is_set()  # the late input was closed, not leaked


def test_a_closed_source_cannot_be_opened_again() -> None:
    source = MicrophoneSource(MicrophoneConfig(), opener=ScriptedOpener(None))
    source.open()
    source.close()
    with pytest.raises(SensorError, match="was closed"):
        source.open()


def test_reconnect_options_map_one_to_one_and_are_checked() -> None:
    config = from_dict(MicrophoneConfig, {"read_timeout_s": 1.5, "reconnect_min_s": 0.25, "reconnect_max_s": 4,
                                          "max_failures": 7}, "speech.microphone")
    assert (config.read_timeout_s, config.reconnect_min_s, config.reconnect_max_s, config.max_failures) == (
        1.5, 0.25, 4.0, 7)
    policy = config.reconnect_policy
    assert (policy.min_s, policy.max_s, policy.max_failures) == (0.25, 4.0, 7)
    defaults = MicrophoneConfig()
    assert (defaults.reconnect_min_s, defaults.reconnect_max_s, defaults.max_failures) == (0.5, 10.0, 0)
    for bad, match in [({"reconnect_min_s": 0.0}, "0 < reconnect_min_s <= reconnect_max_s"),
                       ({"reconnect_min_s": 2.0, "reconnect_max_s": 1.0}, "0 < reconnect_min_s <= reconnect_max_s"),
                       ({"reconnect_max_s": 7200.0}, "<= 3600 s"),
                       ({"max_failures": -1}, "max_failures must be >= 0"),
                       ({"read_timeout_s": 0.0}, "read_timeout_s must be in 0.1..60 s")]:
        with pytest.raises(ConfigError, match=match):
            from_dict(MicrophoneConfig, bad, "speech.microphone")
    with pytest.raises(ConfigError, match="max_failures"):
        from_dict(MicrophoneConfig, {"max_failures": True}, "speech.microphone")
