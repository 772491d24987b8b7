"""Microphone device selection against PortAudio's real device list, and the capture ring buffer.

This host has no sound card, so opening any microphone must fail with a
SensorError that says what is available; capture itself is a hardware test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_mer.errors import SensorError
from edge_mer.sources.microphone import AudioRing, MicrophoneConfig, MicrophoneSource, select_input_device
from edge_mer.sources.registry import create_source

pyaudio = pytest.importorskip("pyaudio")


def list_input_devices() -> list[dict]:
    """PortAudio's input devices as PyAudio reports them (to decide whether this host can run hardware tests)."""
    pa = pyaudio.PyAudio()
    try:
        infos = (pa.get_device_info_by_index(i) for i in range(pa.get_device_count()))
        return [dict(d) for d in infos if int(d.get("maxInputChannels", 0)) > 0]
    finally:
        pa.terminate()


# PortAudio device-info dicts as PyAudio returns them (only the keys selection reads).
DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "maxInputChannels": 2, "defaultSampleRate": 44100.0},
    {"index": 3, "name": "USB PnP Sound Device: Audio (hw:2,0)", "maxInputChannels": 1, "defaultSampleRate": 48000.0},
    {"index": 5, "name": "pulse", "maxInputChannels": 32, "defaultSampleRate": 44100.0},
    {"index": 6, "name": "default", "maxInputChannels": 32, "defaultSampleRate": 44100.0},
]


def test_real_device_list_selection_fails_clearly_without_inputs() -> None:
    devices = list_input_devices()
    if devices:
        pytest.skip("this host has audio inputs")
    for spec in ("", "0", "usb"):
        with pytest.raises(SensorError, match="available input devices: none"):
            select_input_device(devices, spec, None)


@pytest.mark.parametrize("device", ["", "2", "USB"])
def test_opening_a_microphone_here_is_a_sensor_error(device: str) -> None:
    if list_input_devices():
        pytest.skip("this host has audio inputs")
    source = MicrophoneSource(MicrophoneConfig(device=device))
    with pytest.raises(SensorError, match="^microphone: no .*available input devices: none"):
        source.open()
    with pytest.raises(SensorError, match="not open"):
        next(iter(source))
    source.close()  # closing a never-opened source is harmless


def test_selection_by_default_index_and_name() -> None:
    assert select_input_device(DEVICES, "", 6)["name"] == "default"
    assert select_input_device(DEVICES, "3", 6)["index"] == 3
    assert select_input_device(DEVICES, "usb pnp", 6)["index"] == 3
    assert select_input_device(DEVICES, "PULSE", 6)["index"] == 5
    assert select_input_device(DEVICES, "Default", None)["index"] == 6  # an exact name beats substrings


def test_unknown_device_lists_the_inputs() -> None:
    with pytest.raises(SensorError, match=r"no input device 4; available input devices: 0: HDA Intel.*3: USB PnP "
                                          r"Sound Device: Audio \(hw:2,0\) \(1 ch, 48000 Hz\)"):
        select_input_device(DEVICES, "4", 6)
    with pytest.raises(SensorError, match="named like 'webcam'"):
        select_input_device(DEVICES, "webcam", 6)
    with pytest.raises(SensorError, match="no default input device"):
        select_input_device(DEVICES, "", None)


def test_ring_delivers_frames_in_order_with_interpolated_times() -> None:
    ring = AudioRing(capacity=100, channels=2, rate=1000.0)
    block = np.arange(80, dtype=np.int16).reshape(40, 2)
    ring.write(block, t_ns=5_000_000_000, device_time=12.0)
    first, t_ns, dev = ring.read(10)
    np.testing.assert_array_equal(first, block[:10])
    assert t_ns == 5_000_000_000 - 30_000_000 and dev == pytest.approx(12.0 - 0.030)
    rest, t_ns, dev = ring.read(100)
    np.testing.assert_array_equal(rest, block[10:])
    assert t_ns == 5_000_000_000 and dev == pytest.approx(12.0) and ring.available == 0


def test_ring_overflow_drops_the_oldest_and_counts() -> None:
    ring = AudioRing(capacity=50, channels=1, rate=1000.0)
    for k in range(4):  # 120 frames into 50 slots, nothing read
        ring.write(np.arange(k * 30, k * 30 + 30, dtype=np.int16).reshape(-1, 1), t_ns=k, device_time=None)
    assert ring.available == 50 and ring.dropped == 70 and ring.overflows == 3
    data, _, dev = ring.read(50)
    np.testing.assert_array_equal(data[:, 0], np.arange(70, 120))
    assert dev is None
    ring.write(np.zeros((500, 1), np.int16), t_ns=9)  # one block larger than the whole ring
    assert ring.available == 50 and ring.dropped == 520 and ring.overflows == 4


def test_speech_source_picks_the_microphone_without_a_file() -> None:
    assert isinstance(create_source("speech", "microphone", MicrophoneConfig()), MicrophoneSource)


@pytest.mark.hardware
def test_default_microphone_captures_a_second() -> None:
    config = MicrophoneConfig(rate=16000, channels=1, chunk_ms=20.0)
    samples, stamps = 0, []
    with MicrophoneSource(config) as mic:
        start = time.monotonic()
        for chunk in mic:
            assert chunk.data.dtype == np.float32 and chunk.data.ndim == 1
            samples += chunk.data.size
            stamps.append(chunk.t_ns)
            if time.monotonic() - start > 1.0:
                break
    assert samples >= 0.8 * config.rate
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


NULL_CAPTURE = """
import json, sys, time
import pyaudio
from edge_mer.sources.microphone import MicrophoneConfig, MicrophoneSource
pa = pyaudio.PyAudio()
inputs = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
pa.terminate()
if "default" not in [d["name"] for d in inputs if int(d.get("maxInputChannels", 0)) > 0]:
    print(json.dumps(None)); sys.exit()
sizes, dtypes, stamps = set(), set(), []
with MicrophoneSource(MicrophoneConfig(device="default", rate=16000, channels=2, chunk_ms=20.0, buffer_s=1.0)) as mic:
    start = time.monotonic()
    for chunk in mic:
        sizes.add(chunk.data.size); dtypes.add(str(chunk.data.dtype)); stamps.append(chunk.t_ns)
        if time.monotonic() - start > 0.3:
            break
    meta = chunk.meta
    closing = time.monotonic()
close_s = time.monotonic() - closing
print(json.dumps({"sizes": sorted(sizes), "dtypes": sorted(dtypes), "meta": meta, "close_s": close_s,
                  "increasing": all(b > a for a, b in zip(stamps, stamps[1:])), "rate": mic.info.rate}))
"""


def test_capture_through_portaudio_from_alsa_null_device(tmp_path: Path) -> None:
    """The whole PortAudio callback path, from ALSA's null PCM (a $HOME/.asoundrc in a child process).

    The null device delivers silence as fast as it is read, so the ring must overflow
    (counted, not fatal) and the consumer still gets well-formed chunks.
    """
    (tmp_path / ".asoundrc").write_text("pcm.!default { type null }\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", NULL_CAPTURE], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result is None:
        pytest.skip("PortAudio here has no ALSA 'default' device")
    assert result["sizes"] == [320] and result["dtypes"] == ["float32"] and result["rate"] == 16000
    assert result["meta"]["overflows"] > 0 and result["meta"]["dropped"] > 0
    assert result["increasing"] and result["close_s"] < 0.5


def test_a_missing_pyaudio_is_a_sensor_error_naming_the_install() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['pyaudio'] = None\n"  # what `import pyaudio` sees without the package
            "from edge_mer.errors import SensorError\n"
            "from edge_mer.sources.microphone import MicrophoneConfig, MicrophoneSource\n"
            "try:\n    MicrophoneSource(MicrophoneConfig()).open()\n"
            "except SensorError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "PyAudio, which is not installed" in out and "edge-mer[audio]" in out
