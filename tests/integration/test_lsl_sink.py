"""LslSink: a real outlet here, a real pylsl StreamInlet in another process resolving it by name."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer.errors import ConfigError
from edge_mer.results import Decision
from edge_mer.sinks.lsl import STREAM_TYPE, LslConfig, LslSink, load_pylsl

ROOT = Path(__file__).resolve().parents[2]

try:
    pylsl = load_pylsl()
    LIBLSL_MISSING = None
except ConfigError as exc:  # pragma: no cover - only where liblsl cannot be loaded
    pylsl, LIBLSL_MISSING = None, str(exc)

needs_liblsl = pytest.mark.skipif(LIBLSL_MISSING is not None, reason=f"liblsl cannot be loaded: {LIBLSL_MISSING}")

# The consumer: resolve by name, report the stream's metadata, then print each sample as one JSON line.
INLET = r"""
import json, sys
import pylsl
name, count = sys.argv[1], int(sys.argv[2])
found = pylsl.resolve_byprop("name", name, 1, 10.0)
if not found:
    print(json.dumps({"error": "stream not found"}), flush=True)
    sys.exit(1)
inlet = pylsl.StreamInlet(found[0])
inlet.open_stream(10.0)
info = inlet.info(10.0)
labels, node = [], info.desc().child("labels").child("label")
while not node.empty():
    labels.append(node.child_value())
    node = node.next_sibling("label")
print(json.dumps({"ready": True, "type": info.type(), "source_id": info.source_id(),
                  "channels": info.channel_count(), "format": info.channel_format(),
                  "rate": info.nominal_srate(), "desc_format": info.desc().child_value("format"),
                  "labels": labels}), flush=True)
for _ in range(count):
    sample, ts = inlet.pull_sample(timeout=10.0)
    if sample is None:
        print(json.dumps({"error": "timeout"}), flush=True)
        sys.exit(1)
    print(json.dumps({"ts": ts, "sample": sample[0]}), flush=True)
"""


def decision(i: int) -> dict[str, Any]:
    return {"t": 10.0 + i, "label": "sad", "probs": {"sad": 0.8, "neutral": 0.2}, "valence": -0.4, "arousal": -0.1,
            "modalities": {"eeg": {"valid": True, "reason": None, "reason_code": None, "label": "sad",
                                   "probs": {"sad": 0.8}, "latency_ms": 1.5}}, "latency_ms": 3.0 + i,
            "faces": []}


def typed(i: int) -> Decision:
    return Decision.from_json(decision(i))


@needs_liblsl
def test_inlet_in_another_process_receives_the_decisions() -> None:
    name = f"edge-mer-test-{uuid.uuid4().hex[:8]}"
    config = LslConfig(enabled=True, name=name, source_id=f"{name}-src")
    with LslSink(config) as sink:
        proc = subprocess.Popen([sys.executable, "-c", INLET, name, "3"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            meta = json.loads(proc.stdout.readline())
            assert meta.get("ready"), meta
            assert sink.wait_for_consumers(10.0)
            before = pylsl.local_clock()
            for i in range(3):
                sink.emit(typed(i))
            after = pylsl.local_clock()
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    rows = [json.loads(line) for line in out.splitlines()]
    assert [json.loads(r["sample"]) for r in rows] == [decision(i) for i in range(3)]
    stamps = [r["ts"] for r in rows]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after  # one host, one LSL clock
    assert meta["type"] == STREAM_TYPE and meta["source_id"] == f"{name}-src"
    assert meta["channels"] == 1 and meta["format"] == pylsl.cf_string and meta["rate"] == pylsl.IRREGULAR_RATE
    assert meta["desc_format"] == "edge-mer-decision/1" and meta["labels"] == list(CANONICAL_LABELS)
    assert sink.samples == 3


@needs_liblsl
def test_emit_outside_open_and_double_close() -> None:
    sink = LslSink(LslConfig(name=f"edge-mer-test-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(RuntimeError, match="before open"):
        sink.emit(typed(0))
    sink.open()
    sink.emit(typed(0))  # no consumer: the sample is simply not delivered
    sink.close()
    sink.close()


def test_missing_liblsl_is_a_one_line_error_saying_how_to_install_it(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("pylsl")
    if spec is None or spec.origin is None:
        pytest.skip("pylsl is not installed")
    # The real pylsl package without the liblsl it bundles: exactly what pip installs on aarch64.
    shutil.copytree(Path(spec.origin).parent, tmp_path / "pylsl",
                    ignore=shutil.ignore_patterns("*.so*", "*.dylib", "*.dll", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYLSL_LIB"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    script = ("from edge_mer.errors import ConfigError\n"
              "from edge_mer.sinks.lsl import LslConfig\n"
              "from edge_mer.sinks.lsl import LslSink\n"
              "try:\n"
              "    LslSink(LslConfig(enabled=True)).open()\n"
              "    print('OPENED')\n"
              "except ConfigError as exc:\n"
              "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "OPENED":
        pytest.skip("a system-wide liblsl is installed, so pylsl finds one anyway")
    message = out.stdout.strip()
    assert "\n" not in message
    assert message.startswith("outputs.lsl.enabled: pylsl cannot load liblsl (LSL binary library file was not found")
    assert "https://github.com/sccn/liblsl" in message and "PYLSL_LIB" in message
