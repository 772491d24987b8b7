"""Run the daemon: sensors or a replayed session -> encoders -> fused decisions -> outputs.

Flags override the TOML file given with --config; each flag sets exactly one
configuration field (shown in its help as [field]).
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from edge_mer.backends.registry import BACKENDS
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.cli.flags import Flag, add_flags, config_from_flags
from edge_mer.fusion.monte_carlo import MonteCarloOptions
from edge_mer.fusion.registry import RULE_NAMES
from edge_mer.fusion.reliability import CONFIDENCE_MEASURES, ReliabilityOptions
from edge_mer.names import AUTO, PRECISIONS
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.session_run import build_daemon
from edge_mer.preprocess.face_detect import DETECTORS

log = logging.getLogger(__name__)

_RELIABILITY = ReliabilityOptions()  # its defaults, shown in the help
_MONTE_CARLO = MonteCarloOptions()

FLAGS: tuple[Flag, ...] = (
    ("--rate-hz", "rate_hz", float, "decisions per second (default 2)"),
    ("--no-align-ticks", "align_ticks", "no", "tick on the timer alone, not right after the next sensor chunk"),
    ("--numpy-threads", "numpy_threads", int, "BLAS threads for preprocessing (default 1; 0 = library default)"),
    ("--precision", "precision", str, f"{', '.join(PRECISIONS)} or {AUTO} for every encoder"),
    ("--bundle", "bundle", str, "model bundle directory (default: the bundle shipped in the package)"),
    ("--duration-s", "duration_s", float, "stop after this many seconds (0 = until stopped)"),
    ("--replay", "replay", str, "replay this session directory instead of reading sensors"),
    ("--fast", "fast", "flag", "with --replay: as fast as possible, decisions on the session clock, then exit"),
    ("--record", "record", str, "record the sensors into this new session directory (opt-in; off by default)"),
    ("--backend", "backend.name", str, f"auto or one of {', '.join(BACKENDS)}"),
    ("--threads", "backend.onnxruntime.intra_op_threads", int, "ONNX Runtime intra-op threads (default 1; 0 = its own choice)"),
    ("--jsonl", "outputs.jsonl", str, "decisions as JSON lines: - (stdout), a file, or '' (off)"),
    ("--http", "outputs.http.enabled", "flag",
     "serve the dashboard at /, /healthz /metrics /state and the /ws WebSocket"),
    ("--http-host", "outputs.http.host", str, "HTTP bind address (default 127.0.0.1)"),
    ("--http-port", "outputs.http.port", int, "HTTP port (default 8765)"),
    ("--http-token", "outputs.http.token", str, "HTTP bearer token, all routes but /healthz (non-loopback hosts get one)"),
    ("--lsl", "outputs.lsl.enabled", "flag", "publish decisions on a Lab Streaming Layer outlet"),
    ("--mqtt", "outputs.mqtt.url", str, "publish decisions, status and health to this broker: mqtt[s]://host[:port]"),
    ("--mqtt-prefix", "outputs.mqtt.topic_prefix", str, "MQTT topic prefix (default edge-mer)"),
    ("--device-id", "device_id", str, "this device's id in MQTT topics and messages (default: the host name)"),
    ("--no-face", "face.enabled", "no", "disable the face modality"),
    ("--no-speech", "speech.enabled", "no", "disable the speech modality"),
    ("--no-eeg", "eeg.enabled", "no", "disable the EEG modality"),
    ("--camera", "face.camera.device", str, "camera index, video file, RTSP URL or GStreamer pipeline"),
    ("--face-detector", "face.detector.kind", str, f"one of {', '.join(DETECTORS)}"),
    ("--face-detector-model", "face.detector.model_path", str,
     "detector model file (YuNet or full-range BlazeFace .onnx; replaces the bundle's BlazeFace)"),
    ("--face-detector-precision", "face.detector.precision", str, "auto (default) or a precision the bundle's detector has"),
    ("--max-faces", "face.max_faces", int, "faces followed per frame, each with an id in `faces` (default 4)"),
    ("--primary-face", "face.primary", str, "the face the fused estimate uses: largest (default) or center"),
    ("--no-align", "face.align", "no", "do not level the eyes before the face crop"),
    ("--microphone", "speech.microphone.device", str, "input device index or name substring"),
    ("--audio-file", "speech.microphone.file", str, "read speech from this WAV file instead of a microphone"),
    ("--board", "eeg.board.board", str, "BrainFlow board name or id (default SYNTHETIC_BOARD)"),
    ("--serial-port", "eeg.board.serial_port", str, "BrainFlow serial port (e.g. /dev/ttyUSB0 for a Cyton)"),
    ("--fusion-rule", "fusion.rule", str, f"one of {', '.join(RULE_NAMES)}"),
    ("--fusion-head", "fusion.head", str,
     "learned rule: the bundle's head to run (stacked, attention, transformer...; default: the bundle's default)"),
    ("--head-min-confidence", "fusion.learned.min_confidence", float,
     "learned head: a modality less confident is masked out before the head (default 0.1; 0 = off)"),
    ("--head-min-skill", "fusion.learned.min_skill", float,
     "learned head: an encoder of lower measured skill (fusion weight) is masked out (default 0.1; 0 = off)"),
    ("--no-head-passthrough", "fusion.learned.single_passthrough", "no",
     "learned head: run the head on a lone modality too (default: its own distribution)"),
    ("--reliability-confidence", "fusion.reliability.confidence", str,
     f"reliability rule: {' or '.join(CONFIDENCE_MEASURES)} (default {_RELIABILITY.confidence})"),
    ("--reliability-min-confidence", "fusion.reliability.min_confidence", float,
     f"reliability rule: a modality less confident is uninformative (default {_RELIABILITY.min_confidence:g})"),
    ("--reliability-uninformative-factor", "fusion.reliability.uninformative_factor", float,
     f"reliability rule: an uninformative modality's weight factor (default {_RELIABILITY.uninformative_factor:g})"),
    ("--reliability-max-disagreement", "fusion.reliability.max_disagreement", float,
     f"reliability rule: JS bits from the others' consensus beyond which a modality contradicts "
     f"(default {_RELIABILITY.max_disagreement:g})"),
    ("--reliability-contradiction-factor", "fusion.reliability.contradiction_factor", float,
     f"reliability rule: a contradicting modality's weight factor (default {_RELIABILITY.contradiction_factor:g})"),
    ("--mc-samples", "fusion.monte_carlo.samples", int,
     f"monte_carlo rule: Dirichlet draws per tick (default {_MONTE_CARLO.samples})"),
    ("--mc-seed", "fusion.monte_carlo.seed", int,
     f"monte_carlo rule: random seed; the same seed replays the same decisions (default {_MONTE_CARLO.seed})"),
    ("--mc-concentration", "fusion.monte_carlo.concentration", float,
     f"monte_carlo rule: Dirichlet precision around each distribution (default {_MONTE_CARLO.concentration:g})"),
    ("--mc-level", "fusion.monte_carlo.level", float,
     f"monte_carlo rule: level of the reported probability interval (default {_MONTE_CARLO.level:g})"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FLAGS)


def load_config(args: argparse.Namespace) -> RunConfig:
    """The TOML file (if any) with the flags applied on top, validated once."""
    return config_from_flags(RunConfig, args, FLAGS)


def _explicit(args: argparse.Namespace, config: RunConfig) -> bool:
    """Whether the user named sensors, a session or a recording (then the demo is never substituted)."""
    sensor_flags = ("face.camera.device", "speech.microphone.device", "speech.microphone.file", "eeg.board.board",
                    "eeg.board.serial_port")
    return (args.config is not None or config.replay is not None or config.record is not None
            or any(getattr(args, key) is not None for key in sensor_flags))


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    stop = threading.Event()
    started = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()
        if not started.is_set():
            # Still loading (a first TensorRT build can take minutes): leave now; ExitStacks release what is open.
            raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    bundle = load_bundle(config.bundle or default_bundle_path())
    begun = time.monotonic()
    # A closed stdout (`edge-mer run | head`) raises BrokenPipeError here; main() ends the run quietly.
    with build_daemon(config, bundle, allow_demo=not _explicit(args, config)) as daemon:
        started.set()
        daemon.run(stop)
    log.info("stopped after %.1f s", time.monotonic() - begun)
    return 0
