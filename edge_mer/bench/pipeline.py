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
from pathlib import Path
from typing import Any

from edge_mer.bench.latency import summarize
from edge_mer.bench.power import PowerMonitor
from edge_mer.bundle.loader import Bundle
from edge_mer.errors import EdgeMerError
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.session_run import build_daemon
from edge_mer.results import Decision
from edge_mer.sinks.base import Sink
from edge_mer.sinks.registry import OutputsConfig

log = logging.getLogger(__name__)


class CountingSink(Sink):
    """Counts decisions and how many had each modality valid; keeps nothing else."""

    kind = "bench"

    def __init__(self) -> None:
        self.decisions = 0
        self.valid: dict[str, int] = {}

    def open(self) -> None:
        pass

    def emit(self, decision: Decision) -> None:
        self.decisions += 1
        for result in decision.modalities:
            self.valid[result.modality] = self.valid.get(result.modality, 0) + int(result.valid)

    def close(self) -> None:
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # 5: reset the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident set size (MiB) since the last :func:`reset_peak_rss`.

    Read from VmHWM in /proc/self/status; where that is missing, ru_maxrss, the
    peak over the process's whole life.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass  # not Linux: the lifetime peak below
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_measured(run: Any, sink: CountingSink, warmup_s: float) -> tuple[float, float, int, dict]:
    """Run the daemon to its end in a worker; returns wall s, CPU s, decisions skipped in the warm-up, power."""
    stop, failure = threading.Event(), []

    def replay() -> None:
        try:
            run.run(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
            failure.append(exc)

    worker = threading.Thread(target=replay, name="edge-mer-bench-pipeline", daemon=True)
    worker.start()
    try:
        time.sleep(warmup_s)
        sink.decisions, skipped, sink.valid = 0, sink.decisions, {}
        run.daemon.scheduler.timings.clear()
        power = PowerMonitor()
        with power:
            cpu0, wall0 = _cpu_s(), time.perf_counter()
            worker.join()
            wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    finally:
        stop.set()  # an interrupt here must not close the backends under a running worker
        worker.join()
    if failure:
        raise failure[0]
    return wall, cpu, skipped, power.summary()


def bench_pipeline(config: RunConfig, bundle: Bundle, *, warmup_s: float = 1.0) -> dict[str, Any]:
    """Run ``config`` (a real-time replay) to its end and summarise it.

    Returns ``decision_latency_ms``, ``tick_ms`` and ``stages_ms`` per stage
    (p50/p95/p99/max; see :class:`~edge_mer.pipeline.daemon.Daemon` for
    ``decision``, ``age.*`` and ``tick.delay``), ``cpu_percent`` (process CPU
    time over wall time after the warm-up; 100 = one full core),
    ``peak_rss_mb`` (the process's peak resident set during this run, loading
    included), ``decisions``, per-modality valid shares, GPU memory and power
    where the host exposes them.
    """
    if config.replay is None or config.fast:
        raise EdgeMerError("the pipeline benchmark needs a session replayed in real time (replay set, fast off)")
    config = dataclasses.replace(config, outputs=OutputsConfig(jsonl=""))
    sink = CountingSink()
    rss_reset = reset_peak_rss()
    with build_daemon(config, bundle) as run:
        run.daemon.sinks.append(sink)
        streams = {m: {"rate": round(src.info.rate, 3), "channels": len(src.info.channel_names) or None,
                       "description": src.info.description} for m, src in run.daemon.sources.items()}
        wall, cpu, skipped, power = _run_measured(run, sink, warmup_s)
        gpu = gpu_memory(next(iter(run.daemon.runners.values())).backend.name) if run.daemon.runners else None
        timings = run.daemon.scheduler.timings
    if sink.decisions == 0:
        raise EdgeMerError(f"no decisions after the {warmup_s} s warm-up: the session {config.replay} or the "
                           "duration is too short")
    stages = timings.stages()
    decision, tick = stages.pop("decision", []), stages.pop("tick", [])
    return {
        "session": str(config.replay), "rate_hz": config.rate_hz, "align_ticks": config.align_ticks,
        "face_detector": _detector_text(config), "eeg_hop_s": config.eeg.hop_s,
        "numpy_threads": config.numpy_threads, "ort_intra_op_threads": config.backend.onnxruntime.intra_op_threads,
        "streams": streams,
        "decisions": sink.decisions, "warmup_decisions_skipped": skipped, "wall_s": round(wall, 3),
        "decision_latency_ms": summarize(decision), "tick_ms": summarize(tick),
        "stages_ms": {name: summarize(samples) for name, samples in stages.items()},
        "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else None,
        "peak_rss_mb": peak_rss_mb(), "peak_rss_scope": "this run" if rss_reset else "process lifetime",
        "valid_share": {m: round(n / sink.decisions, 3) for m, n in sink.valid.items()},
        "gpu_memory": gpu, "power": power,
    }


def gpu_memory(backend: str) -> dict[str, Any]:
    """Device memory in use on CUDA device 0, all processes (TensorRT backend), or why it is not reported.

    Read with the device's primary context (the one the TensorRT backend uses), while its engines are loaded.
    On a Jetson, device memory is the shared system RAM.
    """
    if backend != "tensorrt":
        return {"available": False, "reason": f"no GPU backend in use ({backend})"}
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        return {"available": False, "reason": f"pycuda not importable: {exc}"}
    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        free, total = cuda.mem_get_info()
    finally:
        context.pop()
    return {"available": True, "used_mb_all_processes": round((total - free) / 2**20, 1),
            "total_mb": round(total / 2**20, 1)}


def _detector_text(config: RunConfig) -> str:
    d = config.face.detector
    # BlazeFace letterboxes the whole frame into its fixed input: detect_width does not apply to it.
    width = "" if d.kind.startswith("blazeface") else f"detect_width {d.detect_width or 'full'}, "
    return (f"{d.kind}, {width}tracking {'on' if d.track else 'off'}, max_faces {config.face.max_faces}, "
            f"align {'on' if config.face.align else 'off'}")

