"""Modality runners: window -> preprocessing -> encoder -> canonical probabilities.

One runner per modality. Each owns its preprocessor and its loaded backend,
and turns whatever goes wrong with a window (no data, stale data, no face,
silence, bad EEG) into an invalid :class:`ModalityResult` with the reason,
so the other modalities go on.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.bundle.labels import to_canonical
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import BackendError, ConfigError
from edge_mer.names import Modality, ReasonCode
from edge_mer.numeric import softmax
from edge_mer.pipeline.buffers import FrameBuffer, SampleBuffer
from edge_mer.pipeline.config import MAX_WINDOW_S, RunConfig
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import EegParams, EegPreprocessor
from edge_mer.preprocess.face import FacePreprocessor
from edge_mer.preprocess.face_detect import FaceDetector, create_detector
from edge_mer.results import ModalityResult
from edge_mer.sources.base import Chunk, StreamInfo
from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)


def _batch_of_one(features: np.ndarray | Invalid) -> np.ndarray | Invalid:
    """One window's features as a float32 batch of one, or the reason there are none."""
    return features if isinstance(features, Invalid) else features[None].astype(np.float32, copy=False)


class ModalityRunner:
    """Runs one encoder on the newest window of one modality's buffer.

    Stage times go to ``timings``: the encoder as ``encoder.<name>``, the
    preprocessing under the modality's own stage names. Each subclass says
    which encoder a run uses (:meth:`encoder_name`) and builds itself from the
    run configuration (:meth:`from_config`), so a new modality is one runner
    class plus one line in :data:`RUNNERS`.
    """

    modality: Modality

    @classmethod
    def encoder_name(cls, bundle: Bundle, config: RunConfig, info: StreamInfo) -> str:
        """The bundle encoder this modality runs: the one its configuration names."""
        return config.modality(cls.modality).encoder

    @classmethod
    def from_config(cls, name: str, spec: EncoderSpec, backend: Backend, config: RunConfig, info: StreamInfo,
                    timings: StageTimes | None = None) -> ModalityRunner:
        """The runner for encoder ``name`` on the opened source described by ``info``."""
        raise NotImplementedError

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, window_s: float, stale_s: float,
                 timings: StageTimes | None = None) -> None:
        self.name = name
        self.spec = spec
        self.backend = backend
        self.window_s = window_s
        self.stale_s = stale_s
        self.timings = timings if timings is not None else StageTimes()
        #: (code, reason) set by the daemon when the source has failed or ended.
        self.failure: tuple[ReasonCode, str] | None = None
        out = spec.class_output
        if out is None:
            raise ValueError(f"encoder {name} has no probs/logits output")  # bundle validation prevents this
        self._output = out
        self._input_name = spec.inputs[0].name

    #: Where the source's chunks go; set by each subclass.
    buffer: FrameBuffer | SampleBuffer

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        """The encoder's input batch for the window ending at ``now_ns``, or why there is none."""
        raise NotImplementedError

    def on_chunk(self, chunk: Chunk) -> None:
        """Work to do as soon as ``chunk`` is in the buffer (source thread); nothing by default."""

    def _evidence(self, now_ns: int, newest_ns: int) -> tuple[np.ndarray | Invalid, int]:
        """Class probabilities ``[n, classes]`` (float64) for the window ending at ``now_ns``, or why none,
        with the time of the newest sample they rest on (``newest_ns``: the buffer's newest)."""
        features = self._features(now_ns)
        return (features if isinstance(features, Invalid) else self._infer(features)), newest_ns

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter_ns()
        outputs = self.backend.infer({self._input_name: batch})[self._output.name]
        self.timings.add(f"encoder.{self.name}", (time.perf_counter_ns() - started) / 1e6)
        probs = np.asarray(softmax(outputs) if self._output.kind == "logits" else outputs, dtype=np.float64)
        if not np.isfinite(probs).all() or (probs < 0).any() or not (probs.sum(axis=-1) > 0).all():
            # A model that emits NaN/Inf or no probability mass: this window is invalid, not the daemon.
            raise BackendError(f"encoder {self.name!r}: output {self._output.name!r} is not a probability "
                               "distribution (NaN, Inf, negative or all zero)")
        return probs

    def run(self, now_ns: int) -> ModalityResult:
        """One result for the tick at ``now_ns`` (daemon clock)."""
        started = time.perf_counter()
        if self.failure is not None:
            code, reason = self.failure
            return ModalityResult.invalid(self.modality, self.name, code, reason)
        newest = self.buffer.newest_t_ns
        if newest is None:
            return ModalityResult.invalid(self.modality, self.name, ReasonCode.NO_DATA)
        if (now_ns - newest) / 1e9 > self.stale_s:
            return ModalityResult.invalid(self.modality, self.name, ReasonCode.STALE,
                                          f"stale: newest data {((now_ns - newest) / 1e9):.1f} s old")
        evidence, newest = self._evidence(now_ns, newest)
        latency_ms = (time.perf_counter() - started) * 1e3
        if isinstance(evidence, Invalid):
            return ModalityResult.invalid(self.modality, self.name, evidence.code, evidence.reason, latency_ms,
                                          newest)
        mean = evidence.mean(axis=0)  # several face crops: average their evidence
        canonical = to_canonical(mean / mean.sum(), self.spec.labels, self.spec.label_map)
        return ModalityResult(self.modality, self.name, True, None, canonical, latency_ms, newest)


class FaceRunner(ModalityRunner):
    """Face evidence of the last ``window_s`` seconds: up to ``max_frames`` frames, each processed once.

    Frames are detected, cropped and encoded as they arrive (in the source's
    thread, through :meth:`on_chunk`), at most one every ``window_s /
    max_frames`` seconds; a tick only averages the results inside its window.
    So the per-frame work, including an occasional full-frame detection, is
    never on a decision's critical path, and each frame is paid for once
    however many overlapping windows contain it.
    """

    modality = "face"

    @classmethod
    def from_config(cls, name: str, spec: EncoderSpec, backend: Backend, config: RunConfig, info: StreamInfo,
                    timings: StageTimes | None = None) -> FaceRunner:
        c = config.face
        return cls(name, spec, backend, create_detector(c.detector), c.window_s, c.stale_s, c.max_frames,
                   timings=timings)

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, detector: FaceDetector,
                 window_s: float, stale_s: float, max_frames: int, capacity: int = 2,
                 timings: StageTimes | None = None) -> None:
        super().__init__(name, spec, backend, window_s, stale_s, timings)
        self.buffer = FrameBuffer(capacity)  # frames are processed on arrival: only the newest's time is read
        self.max_frames = max_frames
        self.preprocessor = FacePreprocessor(spec.preprocessing, detector, self.timings)
        # 10% slack: a 30 fps camera's frames 100 ms apart must not miss the 0.1 s spacing by jitter.
        self._spacing_ns = int(0.9e9 * window_s / max_frames)
        self._last_ns: int | None = None
        self._results: deque[tuple[int, np.ndarray | Invalid]] = deque(maxlen=4 * max_frames)
        self._lock = threading.Lock()

    def on_chunk(self, chunk: Chunk) -> None:
        """Process ``chunk``'s frame if it is due (called after it entered the buffer)."""
        if self._last_ns is not None and chunk.t_ns - self._last_ns < self._spacing_ns:
            return
        self._last_ns = chunk.t_ns
        try:
            box = self.preprocessor.find(chunk.data)
            result = Invalid(ReasonCode.NO_FACE) if box is None else \
                self._infer(self.preprocessor.prepare([chunk.data], [box]))[0]
        except Exception as exc:  # noqa: BLE001 - one bad frame (cv2.error included) costs that frame, not the camera
            log.warning("%s: frame at %d ns failed: %s: %s", self.name, chunk.t_ns, type(exc).__name__, exc)
            result = Invalid(ReasonCode.MODEL_ERROR, f"error: {exc}")
        with self._lock:
            self._results.append((chunk.t_ns, result))

    def _evidence(self, now_ns: int, newest_ns: int) -> tuple[np.ndarray | Invalid, int]:
        start = now_ns - int(self.window_s * 1e9)
        with self._lock:
            inside = [(t, r) for t, r in self._results if start < t <= now_ns]
        if not inside:
            return Invalid(ReasonCode.NO_FRAMES), newest_ns
        # The spacing's slack can let one frame more than max_frames into a window: keep the newest.
        rows = [r for _, r in inside if not isinstance(r, Invalid)][-self.max_frames:]
        evidence = np.stack(rows) if rows else inside[-1][1]
        return evidence, inside[-1][0]


class SpeechRunner(ModalityRunner):
    """The last ``window_s`` seconds of mono audio at the source rate."""

    modality = "speech"

    @classmethod
    def from_config(cls, name: str, spec: EncoderSpec, backend: Backend, config: RunConfig, info: StreamInfo,
                    timings: StageTimes | None = None) -> SpeechRunner:
        shortest = spec.preprocessing.min_seconds
        if config.speech.window_s < shortest:
            # Every window would be "too short": a run that can never hear anything is a configuration error.
            raise ConfigError(f"speech.window_s = {config.speech.window_s:g} s is shorter than the {shortest:g} s "
                              f"encoder {name!r} needs; expected {shortest:g}..{MAX_WINDOW_S['speech']:g} s")
        return cls(name, spec, backend, info.rate, config.speech.window_s, config.speech.stale_s, timings=timings)

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, rate: float,
                 window_s: float, stale_s: float, capacity_s: float = 10.0, timings: StageTimes | None = None) -> None:
        super().__init__(name, spec, backend, window_s, stale_s, timings)
        self.buffer = SampleBuffer(rate, 1, max(capacity_s, window_s * 2))
        self.rate = int(round(rate))
        self.preprocessor = AudioPreprocessor(spec.preprocessing)

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        window = self.buffer.window(self.window_s)
        if window is None:
            return Invalid(ReasonCode.FILLING, "filling: less than one window of audio")
        with self.timings.time("speech.logmel"):
            return _batch_of_one(self.preprocessor.process(window[0].astype(np.float32), self.rate))


class EegRunner(ModalityRunner):
    """The last ``window_s`` seconds of the board's EEG rows, mapped onto the encoder's channels.

    Features of a 4 s window change little in 0.1 s: they are recomputed once
    ``hop_s`` of new samples has arrived, and decisions in between reuse the
    last result (reporting the time of the newest sample it rests on).
    """

    modality = "eeg"

    @classmethod
    def encoder_name(cls, bundle: Bundle, config: RunConfig, info: StreamInfo) -> str:
        """The configured EEG encoder, or for ``auto`` the one with the most channels the board has."""
        return choose_eeg_encoder(bundle, info.channel_names, config.eeg.encoder)

    @classmethod
    def from_config(cls, name: str, spec: EncoderSpec, backend: Backend, config: RunConfig, info: StreamInfo,
                    timings: StageTimes | None = None) -> EegRunner:
        c = config.eeg
        return cls(name, spec, backend, info.rate, info.channel_names, c.window_s, c.stale_s, c.notch_hz,
                   c.max_abs_uv, timings=timings, hop_s=c.hop_s)

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, rate: float, channel_names: tuple[str, ...],
                 window_s: float | None, stale_s: float, notch_hz: float | None, max_abs_uv: float | None,
                 capacity_s: float = 30.0, timings: StageTimes | None = None, hop_s: float = 0.0) -> None:
        params: EegParams = spec.preprocessing
        if window_s is not None and window_s != params.window_s:
            log.warning("eeg window %.1f s differs from the %.1f s encoder %s was trained on", window_s,
                        params.window_s, name)
        window_s = params.window_s if window_s is None else window_s
        super().__init__(name, spec, backend, window_s, stale_s, timings)
        self.buffer = SampleBuffer(rate, len(channel_names), max(capacity_s, window_s * 2))
        self.rate = rate
        self.channel_names = channel_names
        changes: dict[str, Any] = {"max_abs": max_abs_uv, "window_s": window_s}
        if notch_hz is not None:
            changes["notch_hz"] = notch_hz
        self.preprocessor = EegPreprocessor(dataclasses.replace(params, **changes))
        self.hop_samples = int(round(hop_s * rate))
        self._last: tuple[int, np.ndarray, int] | None = None  # (samples written, evidence, newest)

    def _evidence(self, now_ns: int, newest_ns: int) -> tuple[np.ndarray | Invalid, int]:
        written = self.buffer.written
        if self._last is not None and written - self._last[0] < self.hop_samples:
            return self._last[1], self._last[2]
        evidence, newest = super()._evidence(now_ns, newest_ns)
        # Only evidence is reused: a window that was filling or bad is looked at again on the next tick.
        self._last = None if isinstance(evidence, Invalid) else (written, evidence, newest)
        return evidence, newest

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        window = self.buffer.window(self.window_s)
        if window is None:
            return Invalid(ReasonCode.FILLING, "filling: less than one window of EEG")
        with self.timings.time("eeg.features"):
            return _batch_of_one(self.preprocessor.process(window, self.channel_names, self.rate))


def choose_eeg_encoder(bundle: Bundle, channel_names: tuple[str, ...], requested: str) -> str:
    """``requested``, or for ``auto`` the bundle's EEG encoder with the most channels the board has."""
    have = {n.lower() for n in channel_names}
    if requested != "auto":
        bundle.encoder(requested)
        return requested
    fitting = [(len(spec.preprocessing.channels), name) for name, spec in bundle.manifest.encoders.items()
               if spec.modality == "eeg" and all(c.lower() in have for c in spec.preprocessing.channels)]
    if not fitting:
        raise ConfigError(f"no EEG encoder in bundle {bundle.manifest.name} fits this board's channels "
                          f"({' '.join(channel_names)}); set eeg.encoder or use a board with its montage")
    return max(fitting)[1]


#: Modality -> its runner class.
RUNNERS: dict[Modality, type[ModalityRunner]] = {
    FaceRunner.modality: FaceRunner,
    SpeechRunner.modality: SpeechRunner,
    EegRunner.modality: EegRunner,
}
