"""The whole daemon on a session replayed in real time: per-stage times, decision latency, CPU and memory.

The session is replayed at its own rates (video frames at the file's fps,
audio in 20 ms chunks, EEG in 0.1 s chunks at the board's rate) by the same
sources, runners, scheduler and fusion as ``edge-mer run --replay``;
decisions go to a counting output instead of stdout. Stage samples and CPU
time from the first ``warmup_s`` seconds (buffers filling, first inference
calls) are left out.
"""
from __future__ import annotations

import dataclasses
import logging
import resource
import threading
import time
from typing import Any

from edge_mer.bench.latency import summarize
from edge_mer.bench.power import PowerMonitor
from edge_mer.bundle.loader import Bundle
from edge_mer.errors import EdgeMerError
from edge_mer.pipeline.config import OutputsConfig, RunConfig
from edge_mer.pipeline.session_run import build_daemon
from edge_mer.sinks.base import Sink

log = logging.getLogger(__name__)


class CountingSink(Sink):
    """Counts decisions and how many had each modality valid; keeps nothing else."""

    kind = "bench"

    def __init__(self) -> None:
        self.decisions = 0
        self.valid: dict[str, int] = {}

    def open(self) -> None:
        pass

    def emit(self, decision: dict[str, Any]) -> None:
        self.decisions += 1
        for modality, result in decision["modalities"].items():
            self.valid[modality] = self.valid.get(modality, 0) + int(bool(result["valid"]))

    def close(self) -> None:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_pipeline(config: RunConfig, bundle: Bundle, *, warmup_s: float = 1.0) -> dict[str, Any]:
    """Run ``config`` (a real-time replay) to its end and summarise it.

    Returns ``decision_latency_ms`` and ``tick_ms`` (p50/p95/p99/max),
    ``stages_ms`` per stage, ``cpu_percent`` (process CPU time over wall time
    after the warm-up; 100 = one full core), ``peak_rss_mb``, ``decisions``,
    per-modality valid shares, and power where the host exposes it.
    """
    if config.replay is None or config.fast:
        raise EdgeMerError("the pipeline benchmark needs a session replayed in real time (replay set, fast off)")
    config = dataclasses.replace(config, outputs=OutputsConfig(jsonl=""))
    sink = CountingSink()
    stop = threading.Event()
    with build_daemon(config, bundle) as run:
        run.daemon.sinks.append(sink)
        streams = {m: {"rate": round(src.info.rate, 3), "channels": len(src.info.channel_names) or None,
                       "description": src.info.description} for m, src in run.daemon.sources.items()}
        timings = run.daemon.scheduler.timings
        failure: list[BaseException] = []

        def replay() -> None:
            try:
                run.run(stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
                failure.append(exc)

        worker = threading.Thread(target=replay, name="edge-mer-bench-pipeline", daemon=True)
        worker.start()
        time.sleep(warmup_s)
        timings.clear()
        skipped, sink.decisions, sink.valid = sink.decisions, 0, {}
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        with PowerMonitor() as power:
            worker.join()
        wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    if failure:
        raise failure[0]
    stages = timings.stages()
    decision = stages.pop("decision", [])
    tick = stages.pop("tick", [])
    return {
        "session": str(config.replay), "rate_hz": config.rate_hz, "align_ticks": config.align_ticks,
        "face_detector": _detector_text(config), "eeg_hop_s": config.eeg.hop_s,
        "numpy_threads": config.numpy_threads, "ort_intra_op_threads": config.backend.onnxruntime.intra_op_threads,
        "streams": streams,
        "decisions": sink.decisions, "warmup_decisions_skipped": skipped, "wall_s": round(wall, 3),
        "decision_latency_ms": summarize(decision), "tick_ms": summarize(tick),
        "stages_ms": {name: summarize(samples) for name, samples in stages.items()},
        "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
        "valid_share": {m: round(n / sink.decisions, 3) for m, n in sink.valid.items()} if sink.decisions else {},
        "power": power.summary(),
    }


def _detector_text(config: RunConfig) -> str:
    d = config.face.detector
    return (f"{d.kind}, detect_width {d.detect_width or 'full'}, "
            f"tracking {'on' if d.track else 'off'}")

