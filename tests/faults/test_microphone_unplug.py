"""A microphone whose stream stops mid-run is reopened through real PortAudio, quietly.

The child process reads ALSA's null PCM (a ``$HOME/.asoundrc``, as in
tests/unit/sources/test_microphone.py) through the real PortAudio opener. Its
first stream ends itself after 20 buffers (the callback returns
``paComplete``, so PortAudio stops calling, as it does when a USB microphone
is pulled); the source must notice the silence, release that stream and
PortAudio, open a fresh PortAudio instance and stream again, with PortAudio's
ALSA/JACK probing kept off stderr.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyaudio")

CHILD = """
import json, logging, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import pyaudio
from edge_mer.sources.audio_input import PA_CONTINUE, input_devices
from edge_mer.sources.microphone import MicrophoneConfig, MicrophoneSource, open_pyaudio
from edge_mer.sources.native_stderr import native_stderr_silenced

with native_stderr_silenced():
    pa = pyaudio.PyAudio()
    names = [d["name"] for d in input_devices(pa)]
    pa.terminate()
if "default" not in names:
    print(json.dumps(None)); sys.exit()
PA_COMPLETE = 1
opens = []

def opener(config, frames, callback):
    opens.append(time.monotonic())
    if len(opens) > 1:
        return open_pyaudio(config, frames, callback)
    count = [0]
    def ending(*args):
        count[0] += 1
        callback(*args)
        return None, PA_COMPLETE if count[0] >= 20 else PA_CONTINUE
    return open_pyaudio(config, frames, ending)

config = MicrophoneConfig(device="default", chunk_ms=20.0, buffer_s=1.0, read_timeout_s=0.3,
                          reconnect_min_s=0.05, reconnect_max_s=0.1, max_failures=3)
before, after = 0, 0
start = time.monotonic()
with MicrophoneSource(config, opener=opener) as mic:
    for chunk in mic:
        if chunk.meta["reconnects"] == 0:
            before += 1
        else:
            after += 1
        if after >= 10 or time.monotonic() - start > 20:
            break
print(json.dumps({"before": before, "after": after, "opens": len(opens), "meta": chunk.meta}))
"""


def test_a_stopped_stream_is_reopened_through_real_portaudio(tmp_path: Path) -> None:
    (tmp_path / ".asoundrc").write_text("pcm.!default { type null }\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=90,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result is None:
        pytest.skip("PortAudio here has no ALSA 'default' device")
    assert result["opens"] == 2 and result["meta"]["reconnects"] == 1, result
    assert result["before"] >= 1 and result["after"] >= 10, result
    lines = proc.stderr.splitlines()
    assert not [line for line in lines if "ALSA" in line or "jack" in line.lower()], proc.stderr
    assert any("no audio for 0.3 s" in line and "reconnecting" in line for line in lines), proc.stderr
    assert len(lines) <= 4, proc.stderr  # the stall, the attempt, at most a failed stop of the ended stream
