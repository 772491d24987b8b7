"""Assembling a daemon run: sources (sensors, replay or the demo), runners, fusion, sinks, recorder."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_mer.bundle.loader import Bundle
from edge_mer.errors import EdgeMerError, SensorError
from edge_mer.names import Modality
from edge_mer.pipeline.assembly import build_fusion, build_runner, live_sources
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.daemon import Daemon
from edge_mer.pipeline.health import SourceState
from edge_mer.pipeline.scheduler import Scheduler
from edge_mer.sessions.format import demo_session_path
from edge_mer.sources.base import Chunk, Source
from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A daemon ready to run, in live/real-time or fast mode."""

    daemon: Daemon
    fast: bool

    def run(self, stop: threading.Event) -> None:
        if self.fast:
            self.daemon.run_fast(stop)
        else:
            self.daemon.run_live(stop)


def _replay(path: Path, config: RunConfig, fast: bool) -> tuple[dict[str, Source], int]:
    from edge_mer.sessions.format import load_session
    from edge_mer.sessions.replay import replay_sources

    # Real time: session t = 0 a little after now, so the first chunks are not already late.
    offset = 0 if fast else time.monotonic_ns() + 50_000_000
    sources = replay_sources(load_session(path), pace=not fast, clock_offset_ns=offset)
    return {m: s for m, s in sources.items() if m in config.enabled}, offset


def _open_all(sources: dict[str, Source], stack: contextlib.ExitStack) -> dict[str, str]:
    """Open every source; a sensor that cannot open is reported, not fatal. Returns modality -> error."""
    failed = {}
    for modality, source in list(sources.items()):
        try:
            stack.enter_context(source)
        except SensorError as exc:
            log.debug("%s source cannot open: %s", modality, exc)
            failed[modality] = str(exc)
            del sources[modality]
            continue
        info = source.info
        log.info("%s: %s opened (%g %s)", modality, info.description or type(source).__name__, info.rate,
                 "fps" if modality == "face" else "Hz")
    return failed


def _choose_sources(config: RunConfig, allow_demo: bool, stack: contextlib.ExitStack
                    ) -> tuple[dict[str, Source], int | None, dict[str, str]]:
    if config.replay is not None:
        sources, offset = _replay(config.replay, config, config.fast)
        failed = _open_all(sources, stack)
        for modality, error in failed.items():
            log.error("%s stream of the session cannot be replayed: %s", modality, error)
        return sources, offset, failed
    sources = live_sources(config)
    with contextlib.ExitStack() as trial:
        failed = _open_all(sources, trial)
        if allow_demo and ({"face", "speech"} & set(failed)):
            log.warning("no camera or microphone found (%s); replaying the demo session %s instead",
                        "; ".join(f"{m}: {e}" for m, e in failed.items()), demo_session_path())
            print(f"edge-mer: no camera or microphone found; replaying the demo session {demo_session_path()}",
                  flush=True)
            trial.close()
            sources, offset = _replay(demo_session_path(), config, fast=False)
            return sources, offset, _open_all(sources, stack)
        named = [m for m in failed if _names_its_sensor(config, m)]
        if named:
            # The user asked for this sensor: running without it would hide a typo or an unplugged device.
            raise SensorError(f"{named[0]} sensor cannot open: {failed[named[0]]}")
        for modality, error in failed.items():
            # A default sensor that is not there (no camera on this host): one line, and the run goes on.
            log.warning("%s: no sensor (the other modalities go on): %s", modality, error)
        stack.push(trial.pop_all())
    return sources, None, failed


def _names_its_sensor(config: RunConfig, modality: Modality) -> bool:
    """Whether the run configures ``modality``'s sensor (its options differ from the defaults)."""
    _, options = config.modality(modality).source
    return options != type(options)()


@contextlib.contextmanager
def build_daemon(config: RunConfig, bundle: Bundle, *, allow_demo: bool = False) -> Iterator[Run]:
    """Everything opened for one run; closed (sources, sinks, recorder, backends) on exit."""
    from edge_mer.sinks.base import DeviceInfo, local_device_id
    from edge_mer.sinks.registry import build_sinks

    if config.record is not None:
        from edge_mer.sessions.record import check_new_directory

        check_new_directory(config.record)  # before minutes of loading, not after
    with contextlib.ExitStack() as stack:
        if config.numpy_threads:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=config.numpy_threads, user_api="blas"))
        sources, offset, failed = _choose_sources(config, allow_demo, stack)
        if not sources and not failed:
            raise EdgeMerError("nothing to run: every modality is disabled or the session has no files")
        if not sources and config.replay is not None:
            raise EdgeMerError(f"nothing to replay in {config.replay}: " + "; ".join(failed.values()))
        runners = {}
        timings = StageTimes()
        for modality, source in sources.items():
            runners[modality] = build_runner(modality, config, bundle, source.info, timings)
            stack.callback(runners[modality].close)
        rule, weights, smoother = build_fusion(config, bundle, [r.name for r in runners.values()])
        stack.callback(rule.close)
        scheduler = Scheduler(list(runners.values()), rule, weights, smoother, bundle.manifest.affect,
                              failures=failed, timings=timings)
        device = DeviceInfo(config.device_id or local_device_id(), f"{bundle.manifest.name}@{bundle.manifest.version}",
                            config.precision, tuple(runners),
                            tuple((m, r.backend.model.precision) for m, r in runners.items()))
        sinks = [stack.enter_context(sink) for sink in build_sinks(config.outputs, device)]
        if not sinks:
            log.warning("no output is configured (jsonl, http, lsl and mqtt are all off): decisions go nowhere%s",
                        "; the sensors are recorded" if config.record is not None else "")
        hook = _recorder_hook(config, sources, stack) if config.record is not None else None
        daemon = Daemon(scheduler, sources, runners, sinks, config.rate_hz, config.duration_s, offset, hook,
                        align_ticks=config.align_ticks)
        for modality, error in failed.items():
            daemon.states[modality] = SourceState("failed", error)
        yield Run(daemon, fast=config.fast)


def _recorder_hook(config: RunConfig, sources: dict[str, Source], stack: contextlib.ExitStack):
    from edge_mer.sessions.record import SessionRecorder

    recorder = stack.enter_context(SessionRecorder(config.record))
    lock = threading.Lock()
    infos = {m: s.info for m, s in sources.items()}
    log.info("recording raw sensor data to %s", config.record)

    def hook(modality: str, chunk: Chunk) -> None:
        with lock:
            recorder.add(modality, chunk, infos[modality])

    return hook
