"""JsonlSink: real files, real stdout (capsys and a child process), lines parse back."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from edge_mer.errors import ConfigError
from edge_mer.results import Decision, dumps_json
from edge_mer.sinks.http import HttpConfig, HttpSink
from edge_mer.sinks.jsonl import JsonlSink
from edge_mer.sinks.lsl import LslConfig, LslSink
from edge_mer.sinks.base import DeviceInfo
from edge_mer.sinks.mqtt import MqttConfig, MqttSink
from edge_mer.sinks.registry import SINKS, OutputsConfig, build_sinks


def decision(i: int) -> dict:
    return {"t": 1.5 + i, "label": "happy", "probs": {"happy": 0.75, "sad": 0.25}, "valence": 0.6, "arousal": 0.3,
            "modalities": {"face": {"valid": True, "reason": None, "reason_code": None, "label": "happy",
                                    "probs": {"happy": 1.0}, "latency_ms": 4.2},
                           "eeg": {"valid": False, "reason": "stale", "reason_code": "stale", "label": None,
                                   "probs": {}, "latency_ms": 0.0}},
            "latency_ms": 9.5 + i,
            "faces": [{"id": 1, "box": [10, 20, 100, 100], "label": "happy", "probs": {"happy": 1.0}, "valence": 0.8,
                       "arousal": 0.5, "valid": True, "reason": None, "reason_code": None, "primary": True}]}


def typed(i: int) -> Decision:
    return Decision.from_json(decision(i))


def test_file_appends_one_compact_line_per_decision(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    with JsonlSink(str(path)) as sink:
        sink.emit(typed(0))
        sink.emit(typed(1))
        assert path.read_text().count("\n") == 2  # flushed as written, before close
    with JsonlSink(str(path)) as sink:  # a second run appends
        sink.emit(typed(2))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [decision(0), decision(1), decision(2)]
    assert ": " not in lines[0] and ", " not in lines[0]


def test_close_is_idempotent_and_emit_after_close_fails(tmp_path: Path) -> None:
    sink = JsonlSink(str(tmp_path / "d.jsonl"))
    sink.open()
    sink.close()
    sink.close()
    with pytest.raises(RuntimeError, match="before open"):
        sink.emit(typed(0))


def test_missing_directory_is_a_clear_config_error(tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "d.jsonl"
    with pytest.raises(ConfigError, match=r"outputs.jsonl: directory .*nowhere.* does not exist") as info:
        JsonlSink(str(target)).open()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="is a directory"):
        JsonlSink(str(tmp_path)).open()
    with pytest.raises(ConfigError, match="empty"):
        JsonlSink("")


def test_stdout_with_capsys_is_never_closed(capsys: pytest.CaptureFixture[str]) -> None:
    with JsonlSink("-") as sink:
        sink.emit(typed(0))
        sink.emit(typed(1))
    assert not sys.stdout.closed
    print("after")
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in out[:2]] == [decision(0), decision(1)]
    assert out[2] == "after"


def test_stdout_lines_reach_a_pipe_before_the_process_ends() -> None:
    script = ("import sys, json\n"
              "from edge_mer.results import Decision\n"
              "from edge_mer.sinks.jsonl import JsonlSink\n"
              "sink = JsonlSink('-'); sink.open()\n"
              "for i in range(3):\n"
              "    sink.emit(Decision(float(i), 'neutral', {'neutral': 1.0}, 0.0, 0.0, (), 1.0))\n"
              "    sys.stderr.write('emitted\\n'); sys.stderr.flush()\n"
              "    sys.stdin.readline()\n"  # the parent reads our line before we go on
              "sink.close()\n"
              "print('still open')\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    got = []
    for _ in range(3):
        got.append(json.loads(proc.stdout.readline()))  # would hang if the line sat in a buffer
        proc.stdin.write("\n")
        proc.stdin.flush()
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [(d["t"], d["label"]) for d in got] == [(float(i), "neutral") for i in range(3)]
    assert rest == "still open\n"


def test_non_finite_floats_become_null() -> None:
    line = dumps_json({"valence": math.nan, "probs": {"x": math.inf}, "ok": 1.0, "s": "é"})
    assert json.loads(line) == {"valence": None, "probs": {"x": None}, "ok": 1.0, "s": "é"}


def test_registry_builds_the_configured_sinks() -> None:
    assert set(SINKS) == {"jsonl", "http", "lsl", "mqtt"}
    assert [type(s) for s in build_sinks(OutputsConfig())] == [JsonlSink]
    assert build_sinks(OutputsConfig(jsonl="")) == []
    sinks = build_sinks(OutputsConfig(jsonl="out.jsonl", http=HttpConfig(enabled=True, port=0),
                                      lsl=LslConfig(enabled=True, name="x")))
    assert [type(s) for s in sinks] == [JsonlSink, HttpSink, LslSink]
    assert sinks[0].target == "out.jsonl" and sinks[1].config.port == 0 and sinks[2].config.name == "x"
    mqtt = build_sinks(OutputsConfig(jsonl="", mqtt=MqttConfig(url="mqtt://broker")), DeviceInfo("dev-1"))
    assert [type(s) for s in mqtt] == [MqttSink] and mqtt[0].topics["decision"] == "edge-mer/dev-1/decision"


def test_sink_modules_import_without_optional_libraries() -> None:
    script = ("import sys\n"
              "for name in ('aiohttp', 'prometheus_client', 'pylsl', 'paho', 'paho.mqtt', 'paho.mqtt.client'):\n"
              "    sys.modules[name] = None\n"  # makes `import name` raise ImportError
              "import edge_mer.sinks.registry as r\n"
              "from edge_mer.sinks.http import HttpConfig\n"
              "from edge_mer.sinks.lsl import LslConfig\n"
              "from edge_mer.sinks.mqtt import MqttConfig\n"
              "from edge_mer.errors import ConfigError\n"
              "for sink in (r.HttpSink(HttpConfig(port=0)), r.LslSink(LslConfig()),\n"
              "             r.MqttSink(MqttConfig(url='mqtt://127.0.0.1'))):\n"
              "    try:\n"
              "        sink.open()\n"
              "    except ConfigError as exc:\n"
              "        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "outputs.http.enabled needs the aiohttp package: pip install aiohttp"
    assert lines[1].startswith("outputs.lsl.enabled needs the pylsl package: pip install pylsl")
    assert lines[2] == "outputs.mqtt.url needs the paho-mqtt package: pip install 'paho-mqtt>=2'"
