"""The daemon loop: source threads fill buffers, ticks make decisions, sinks receive them.

Live and real-time replay run one pump thread per source and tick on
``time.monotonic_ns()``; fast replay runs in one thread, merging the streams
in time order and ticking on the session clock, so its output is
deterministic. A source that fails or ends marks its modality invalid with
the reason while the others go on.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edge_mer.errors import EdgeMerError
from edge_mer.names import ReasonCode
from edge_mer.pipeline.health import SourceState, health_status
from edge_mer.pipeline.runners import ModalityRunner
from edge_mer.pipeline.scheduler import Scheduler
from edge_mer.sinks.base import Sink
from edge_mer.sources.base import Chunk, Source

log = logging.getLogger(__name__)

ChunkHook = Callable[[str, Chunk], None]


class Pump(threading.Thread):
    """Moves one source's chunks into its runner's buffer (and the recorder), recording failures."""

    def __init__(self, modality: str, source: Source, runner: ModalityRunner, state: SourceState,
                 hook: ChunkHook | None, arrived: threading.Event | None = None) -> None:
        super().__init__(name=f"edge-mer-{modality}", daemon=True)
        self.modality, self.source, self.runner, self.state, self.hook = modality, source, runner, state, hook
        self.arrived = arrived

    def run(self) -> None:
        try:
            for chunk in self.source:
                self._record(chunk)  # first: face work in accept() must not delay the recording
                accept(self.modality, chunk, self.runner, self.state)
                if self.arrived is not None:
                    self.arrived.set()
        except Exception as exc:  # noqa: BLE001 - any sensor failure must mark the modality, not vanish
            mark_failed(self.modality, self.state, self.runner, exc)
            return
        mark_ended(self.modality, self.state, self.runner)

    def _record(self, chunk: Chunk) -> None:
        if self.hook is None:
            return
        try:
            self.hook(self.modality, chunk)
        except Exception as exc:  # noqa: BLE001 - whatever the recorder raises (a full disk...) stops only it
            log.error("recording %s stopped: %s: %s", self.modality, type(exc).__name__, exc)
            self.hook = None


def accept(modality: str, chunk: Chunk, runner: ModalityRunner, state: SourceState) -> None:
    """Put ``chunk`` into its runner's buffer, let the runner work on it, and account for it (health, decode)."""
    runner.buffer.push(chunk)
    runner.on_chunk(chunk)
    state.chunks += 1
    state.last_chunk_ns = chunk.t_ns
    decode_ms = chunk.meta.get("decode_ms")
    if decode_ms is not None:
        runner.timings.add(f"decode.{modality}", decode_ms)


def mark_failed(modality: str, state: SourceState, runner: ModalityRunner, exc: BaseException) -> None:
    """Record that a source failed, so health and decisions say why."""
    text = str(exc) if isinstance(exc, EdgeMerError) else f"{type(exc).__name__}: {exc}"
    state.state, state.error = "failed", text
    runner.failure = (ReasonCode.SENSOR_FAILED, f"sensor failed: {text}")
    log.error("%s source failed: %s", modality, text)


def mark_ended(modality: str, state: SourceState, runner: ModalityRunner) -> None:
    """Record that a source (a file, a replay) has no more data."""
    if state.state == "running":
        state.state = "ended"
        runner.failure = (ReasonCode.SOURCE_ENDED, ReasonCode.SOURCE_ENDED.text)
        log.info("%s source ended", modality)


@dataclass
class Daemon:
    """Runs ``scheduler`` over ``sources`` until stopped, the duration passes, or every source has ended.

    With ``align_ticks`` (live and real-time replay), a tick that falls due
    waits for the next chunk from any source (at most half a tick period, and at
    most 100 ms) and runs as soon as it arrives, so each decision includes the
    freshest data instead of data up to one chunk interval old.

    Recorded in the scheduler's timings (live and real-time replay), at the
    moment the decision has been handed to every output: ``decision``, from
    the timestamp of the newest sample the decision examined (end-to-end
    latency); ``age.<modality>``, from the newest sample each valid
    modality's evidence rests on (a face frame processed up to 0.1 s earlier,
    EEG features reused for up to ``hop_s``); ``tick.delay``, from the tick's
    scheduled time (what alignment and compute add to the period).
    """

    scheduler: Scheduler
    sources: dict[str, Source]
    runners: dict[str, ModalityRunner]
    sinks: list[Sink]
    rate_hz: float
    duration_s: float = 0.0
    clock_offset_ns: int | None = None  # replay: daemon time of session t = 0
    hook: ChunkHook | None = None
    states: dict[str, SourceState] = field(default_factory=dict)
    started_ns: int = field(default_factory=time.monotonic_ns)
    align_ticks: bool = True
    _arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.states = {m: SourceState() for m in self.sources}

    def health(self, now_ns: int) -> dict[str, Any]:
        """The /healthz object (see :mod:`edge_mer.pipeline.health`)."""
        stale = {m: r.stale_s for m, r in self.runners.items()}
        outputs = {s.kind: r for s in self.sinks if (r := s.report()) is not None}
        return health_status(self.states, stale, self.scheduler.errors, now_ns, self.started_ns,
                             self.scheduler.decisions, outputs)

    def _emit(self, now_ns: int, t: float, fast: bool = False, due_ns: int | None = None) -> None:
        decision = self.scheduler.tick(now_ns, t)
        health = self.health(now_ns if fast else time.monotonic_ns())
        had_sinks = bool(self.sinks)
        for sink in list(self.sinks):
            try:
                sink.emit(decision)
                sink.health(health)
            except BrokenPipeError:
                raise  # stdout's reader left: the CLI ends the run quietly
            except (OSError, EdgeMerError) as exc:
                # One broken output (disk full, a dead socket) must not silence the others.
                log.error("%s output failed and is dropped: %s", sink.kind, exc)
                self.sinks.remove(sink)
        # A run configured with no output at all (--jsonl '' to only --record) goes on; one whose
        # outputs have all failed has nowhere left to say anything, so it stops.
        if had_sinks and not self.sinks:
            raise EdgeMerError("every output has failed; stopping")
        if not fast:
            self._record_ages(time.monotonic_ns(), due_ns)

    def _record_ages(self, emitted_ns: int, due_ns: int | None) -> None:
        timings, scheduler = self.scheduler.timings, self.scheduler
        for modality, t_ns in scheduler.evidence_t_ns.items():
            timings.add(f"age.{modality}", (emitted_ns - t_ns) / 1e6)
        if scheduler.examined_t_ns:
            timings.add("decision", (emitted_ns - max(scheduler.examined_t_ns.values())) / 1e6)
        if due_ns is not None:
            timings.add("tick.delay", (emitted_ns - due_ns) / 1e6)

    def run_live(self, stop: threading.Event) -> None:
        """Pump threads plus ticks on the monotonic clock (live sensors or real-time replay)."""
        if self.clock_offset_ns is not None:
            # Session t = 0 now, after backends loaded (a first TensorRT build can take minutes).
            self.clock_offset_ns = time.monotonic_ns() + 50_000_000
            for source in self.sources.values():
                source.clock_offset_ns = self.clock_offset_ns
        pumps = [Pump(m, s, self.runners[m], self.states[m], self.hook, self._arrived)
                 for m, s in self.sources.items()]
        for pump in pumps:
            pump.start()
        period = int(1e9 / self.rate_hz)
        start = time.monotonic_ns()
        deadline = start + int(self.duration_s * 1e9) if self.duration_s else None
        next_tick = start + period
        try:
            while not stop.is_set():
                wake = next_tick if deadline is None else min(next_tick, deadline)
                wait = (wake - time.monotonic_ns()) / 1e9
                if wait > 0 and stop.wait(wait):
                    break
                if self.align_ticks and wake == next_tick:
                    self._arrived.clear()
                    # At most half a period, so a quiet sensor set never costs a tick.
                    self._arrived.wait(min(0.5 * period / 1e9, 0.1))
                now = time.monotonic_ns()
                if deadline is not None and now >= deadline and now < next_tick:
                    break
                t = (now - self.clock_offset_ns) / 1e9 if self.clock_offset_ns is not None else now / 1e9
                self._emit(now, t, due_ns=next_tick)
                next_tick += period * max(1, (now - next_tick) // period + 1)  # skip ticks we were too late for
                if deadline is not None and now >= deadline:
                    break
                if all(not p.is_alive() for p in pumps) and self.clock_offset_ns is not None:
                    log.info("replay finished")
                    break
        finally:
            self._stop_sources(pumps)

    def _stop_sources(self, pumps: list[Pump]) -> None:
        for modality, source in self.sources.items():
            if self.states[modality].state == "running":
                self.states[modality].state = "stopped"
            source.close()
        for pump in pumps:
            pump.join(timeout=1.0)
            if pump.is_alive():
                log.warning("%s source did not stop within 1 s", pump.modality)

    def run_fast(self, stop: threading.Event) -> None:
        """Fast replay: one thread, streams merged by time, ticks on the session clock (t = 0 at start).

        A tick at time T sees every chunk stamped at or before T, as in real time.
        """
        self.started_ns = 0
        period = int(1e9 / self.rate_hz)
        end = int(self.duration_s * 1e9) if self.duration_s else None
        next_tick = period
        last = 0
        for modality, chunk in heapq.merge(*(self._tagged(m, s) for m, s in self.sources.items()),
                                           key=lambda mc: mc[1].t_ns):
            while next_tick < chunk.t_ns and not stop.is_set() and (end is None or next_tick <= end):
                self._emit(next_tick, next_tick / 1e9, fast=True)
                next_tick += period
            if stop.is_set() or (end is not None and next_tick > end):
                return
            accept(modality, chunk, self.runners[modality], self.states[modality])
            last = chunk.t_ns
        while next_tick <= last and not stop.is_set() and (end is None or next_tick <= end):
            self._emit(next_tick, next_tick / 1e9, fast=True)
            next_tick += period

    def _tagged(self, modality: str, source: Source) -> Iterator[tuple[str, Chunk]]:
        state, runner = self.states[modality], self.runners[modality]
        try:
            for chunk in source:
                yield modality, chunk
        except EdgeMerError as exc:  # a bad file fails its modality; the others replay on
            mark_failed(modality, state, runner, exc)
            return
        mark_ended(modality, state, runner)
