"""Faults while the daemon runs: NaN-emitting models, sensors lost mid-run, a silent source, a failing fusion head.

Real models (tiny ONNX graphs that emit NaN), real ONNX Runtime sessions, real
files and BrainFlow's synthetic board; the daemon must go on and say what is wrong.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.config import from_dict
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.health import SourceState, health_status
from edge_mer.pipeline.scheduler import ErrorCount
from edge_mer.pipeline.session_run import build_daemon
from edge_mer.sessions import demo_session_path
from edge_mer_calibration.sessions import heldout_bundle

DEMO = demo_session_path()


def _nan_face_model(path: Path) -> Path:
    """The face encoder's signature, [N,1,64,64] -> probs [N,7] (every one 0/0 = NaN) and embedding [N,128]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    zeros = numpy_helper.from_array(np.zeros((1, 7), np.float32), "Z")
    ones = numpy_helper.from_array(np.ones((1, 128), np.float32), "O")
    nodes = [helper.make_node("GlobalAveragePool", ["input_1"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "Z"], ["zero"]),
             helper.make_node("Div", ["zero", "zero"], ["probs"]),
             helper.make_node("MatMul", ["flat", "O"], ["embedding"])]
    graph = helper.make_graph(nodes, "nan_face",
                              [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 1, 64, 64])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7]),
                               helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
                              initializer=[zeros, ones])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def nan_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("nan")
    return heldout_bundle(default_bundle_path(), work / "bundle", {"face": _nan_face_model(work / "nan.onnx")})


def test_a_nan_face_model_costs_the_face_not_the_daemon(nan_bundle: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", "--replay", str(DEMO), "--fast",
                             "--bundle", str(nan_bundle), "--rate-hz", "4"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(decisions) >= 28  # the whole 8 s session at 4 Hz
    faces = [d["modalities"]["face"] for d in decisions]
    assert not any(f["valid"] for f in faces)
    assert sum(f["reason_code"] == "model_error" for f in faces) >= len(faces) - 4  # the first ticks: no frames yet
    assert any(d["modalities"]["speech"]["valid"] or d["modalities"]["eeg"]["valid"] for d in decisions)
    assert all(d["label"] != "unknown" for d in decisions[-8:])  # the other modalities still decide


def test_repeated_model_errors_show_in_health(nan_bundle: Path) -> None:
    config = from_dict(RunConfig, {"replay": str(DEMO), "fast": True, "rate_hz": 4.0,
                                   "outputs": {"jsonl": "/dev/null"}})
    with build_daemon(config, load_bundle(nan_bundle)) as run:
        run.run(threading.Event())
        health = run.daemon.health(32_000_000_000)
    assert health["status"] == "degraded"
    face = health["model_errors"]["face"]
    assert face["total"] >= 20 and face["consecutive"] >= 3 and "not a probability distribution" in face["last"]
    assert "speech" not in health.get("model_errors", {})


def _nan_head_bundle(root: Path) -> Path:
    """The default bundle with fusion rule ``learned``: a real head over face and speech whose output is NaN."""
    import dataclasses
    import shutil

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_mer.bundle.loader import MANIFEST
    from edge_mer.bundle.schema import FusionHead, FusionSpec, TensorInfo
    from edge_mer.bundle.writer import file_entry, write_manifest

    bundle = load_bundle(default_bundle_path())
    shutil.copytree(bundle.root, root)
    (root / MANIFEST).unlink()
    face, speech = bundle.encoder("face").labels, bundle.encoder("speech").labels
    out = ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    nodes = [helper.make_node("Concat", ["face", "speech", "mask"], ["x"], axis=1),
             helper.make_node("MatMul", ["x", "Z"], ["zero"]),
             helper.make_node("Div", ["zero", "zero"], ["probs"])]
    graph = helper.make_graph(nodes, "nan_head", [
        helper.make_tensor_value_info("face", TensorProto.FLOAT, [1, 7]),
        helper.make_tensor_value_info("speech", TensorProto.FLOAT, [1, len(speech)]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, len(out)])],
        initializer=[numpy_helper.from_array(np.zeros((9 + len(speech), len(out)), np.float32), "Z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(root / "fusion" / "nan_head.onnx"))
    head = FusionHead(models={"fp32": file_entry(root, "fusion/nan_head.onnx")},
                      inputs=(TensorInfo("face", (1, 7), kind="probs", labels=face),
                              TensorInfo("speech", (1, len(speech)), kind="probs", labels=speech),
                              TensorInfo("mask", (1, 2), labels=("face", "speech"))),
                      outputs=(TensorInfo("probs", (1, len(out)), kind="probs", labels=out),))
    fusion = FusionSpec(rule="learned", weights={"face": 1.0, "speech": 1.0}, head=head)
    write_manifest(root, dataclasses.replace(bundle.manifest, fusion=fusion))
    return root


def test_a_nan_fusion_head_costs_the_fused_estimate_not_the_daemon(tmp_path: Path) -> None:
    bundle = _nan_head_bundle(tmp_path / "bundle")
    # The modality check off, so the head runs on every tick (a lone face would pass it by).
    config = from_dict(RunConfig, {"replay": str(DEMO), "fast": True, "rate_hz": 4.0, "eeg": {"enabled": False},
                                   "outputs": {"jsonl": str(tmp_path / "d.jsonl")},
                                   "fusion": {"learned": {"min_confidence": 0.0, "single_passthrough": False}}})
    with build_daemon(config, load_bundle(bundle)) as run:
        run.run(threading.Event())
        health = run.daemon.health(32_000_000_000)
    decisions = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(decisions) >= 28 and all(d["label"] == "unknown" for d in decisions)
    assert any(d["modalities"]["face"]["valid"] for d in decisions)  # the encoders still report their evidence
    assert health["status"] == "degraded" and health["model_errors"]["fusion"]["consecutive"] >= 3
    assert "NaN" in health["model_errors"]["fusion"]["last"]


def _video(path: Path, seconds: float) -> Path:
    cap = cv2.VideoCapture(str(DEMO / "video.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (int(cap.get(3)), int(cap.get(4))))
    for _ in range(int(seconds * fps)):
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def _audio(path: Path, seconds: float) -> Path:
    samples, rate = soundfile.read(str(DEMO / "audio.wav"), dtype="float32")
    soundfile.write(str(path), samples[: int(seconds * rate)], rate)
    return path


def test_every_sensor_lost_mid_run_is_reported_while_the_daemon_goes_on(tmp_path: Path) -> None:
    """Camera file ends at 2 s, the microphone file at 3 s, the board is released at 4 s (and reconnects)."""
    from brainflow.board_shim import BoardShim

    out = tmp_path / "decisions.jsonl"
    config = from_dict(RunConfig, {
        "rate_hz": 4.0, "duration_s": 8.0,
        "face": {"camera": {"device": str(_video(tmp_path / "face.mp4", 2.0))}},
        "speech": {"microphone": {"file": str(_audio(tmp_path / "speech.wav", 3.0))}},
        "eeg": {"window_s": 2.0, "board": {"reconnect_min_s": 0.2, "reconnect_max_s": 0.2}},
        "outputs": {"jsonl": str(out)}})
    stop = threading.Event()
    with build_daemon(config, load_bundle(default_bundle_path())) as run:
        thread = threading.Thread(target=run.run, args=(stop,))
        thread.start()
        time.sleep(4.0)
        BoardShim.release_all_sessions()
        thread.join(timeout=30)
        assert not thread.is_alive()
        health = run.daemon.health(time.monotonic_ns())
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(decisions) >= 28  # 8 s at 4 Hz: nothing stopped the daemon
    last = decisions[-1]["modalities"]
    assert last["face"]["reason_code"] == "source_ended" and last["speech"]["reason_code"] == "source_ended"
    assert last["eeg"]["valid"]  # the board came back
    assert any(d["modalities"]["face"]["valid"] for d in decisions[:8])
    assert health["sources"]["face"]["state"] == "ended" and health["status"] == "degraded"


def test_a_silent_source_makes_health_degraded_with_how_long() -> None:
    second = 1_000_000_000
    states = {"eeg": SourceState(chunks=40, last_chunk_ns=10 * second), "face": SourceState(chunks=9,
                                                                                              last_chunk_ns=17 * second)}
    health = health_status(states, {"eeg": 2.0, "face": 1.0}, {}, 17 * second + second // 2, 0, 30)
    assert health["status"] == "degraded"
    assert health["sources"]["eeg"]["state"] == "stalled"
    assert health["sources"]["eeg"]["error"] == "no data for 7.5 s (stale after 2 s)"
    assert health["sources"]["face"]["state"] == "running"
    never = health_status({"eeg": SourceState()}, {"eeg": 2.0}, {}, 5 * second, 0, 0)
    assert never["status"] == "ok"  # within the start-up grace
    assert health_status({"eeg": SourceState()}, {"eeg": 2.0}, {}, 8 * second, 0, 0)["status"] == "degraded"


def test_a_board_that_goes_quiet_is_stalled_in_health(tmp_path: Path) -> None:
    """A released board waiting 6 s to reconnect has sent nothing for longer than its 2 s stale limit."""
    from brainflow.board_shim import BoardShim

    config = from_dict(RunConfig, {
        "rate_hz": 4.0, "duration_s": 9.0, "face": {"enabled": False}, "speech": {"enabled": False},
        "eeg": {"window_s": 2.0, "board": {"reconnect_min_s": 6.0, "reconnect_max_s": 6.0}},
        "outputs": {"jsonl": str(tmp_path / "d.jsonl")}})
    stop = threading.Event()
    with build_daemon(config, load_bundle(default_bundle_path())) as run:
        thread = threading.Thread(target=run.run, args=(stop,))
        thread.start()
        time.sleep(2.5)
        assert run.daemon.health(time.monotonic_ns())["status"] == "ok"
        BoardShim.release_all_sessions()
        time.sleep(4.0)
        health = run.daemon.health(time.monotonic_ns())
        stop.set()
        thread.join(timeout=30)
    eeg = health["sources"]["eeg"]
    assert health["status"] == "degraded" and eeg["state"] == "stalled", health
    assert eeg["error"].startswith("no data for ") and "(stale after 2 s)" in eeg["error"]


def test_health_carries_no_file_paths() -> None:
    state = SourceState("failed", "sound file '/home/ana/private/session 3.wav': no such file; rtsp://u:pw@cam/x")
    health = health_status({"speech": state}, {"speech": 1.0},
                           {"face": ErrorCount(3, 3, "error: cannot read /etc/passwd")}, 10, 0, 1)
    text = json.dumps(health)
    assert "/home" not in text and "/etc" not in text and "pw@" not in text
    assert health["sources"]["speech"]["error"].startswith("sound file '<path>")
