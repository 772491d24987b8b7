"""Modality runners: window -> preprocessing -> encoder -> canonical probabilities.

One runner per modality. Each owns its preprocessor and its loaded backend,
and turns whatever goes wrong with a window (no data, stale data, no face,
silence, bad EEG) into an invalid :class:`ModalityResult` with the reason,
so the other modalities go on.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
import time
from typing import Any

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.bundle.labels import to_canonical
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.pipeline.buffers import FrameBuffer, SampleBuffer
from edge_mer.pipeline.results import ModalityResult
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import EegParams, EegPreprocessor
from edge_mer.preprocess.face import FacePreprocessor
from edge_mer.preprocess.face_detect import FaceDetector

log = logging.getLogger(__name__)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _batch_of_one(features: np.ndarray | Invalid) -> np.ndarray | Invalid:
    """One window's features as a float32 batch of one, or the reason there are none."""
    return features if isinstance(features, Invalid) else features[None].astype(np.float32, copy=False)


class ModalityRunner(abc.ABC):
    """Runs one encoder on the newest window of one modality's buffer."""

    modality: str

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, window_s: float, stale_s: float) -> None:
        self.name = name
        self.spec = spec
        self.backend = backend
        self.window_s = window_s
        self.stale_s = stale_s
        self.failure: str | None = None  # set by the daemon when the source has failed or ended
        out = spec.class_output
        if out is None:
            raise ValueError(f"encoder {name} has no probs/logits output")  # bundle validation prevents this
        self._output = out
        self._input_name = spec.inputs[0].name

    #: Where the source's chunks go; set by each subclass.
    buffer: FrameBuffer | SampleBuffer

    @abc.abstractmethod
    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        """The encoder's input batch for the window ending at ``now_ns``, or why there is none."""

    def run(self, now_ns: int) -> ModalityResult:
        """One result for the tick at ``now_ns`` (daemon clock)."""
        started = time.perf_counter()
        if self.failure is not None:
            return ModalityResult.invalid(self.modality, self.name, self.failure)
        newest = self.buffer.newest_t_ns
        if newest is None:
            return ModalityResult.invalid(self.modality, self.name, "no data yet")
        if (now_ns - newest) / 1e9 > self.stale_s:
            return ModalityResult.invalid(self.modality, self.name,
                                          f"stale: newest data {((now_ns - newest) / 1e9):.1f} s old")
        features = self._features(now_ns)
        if isinstance(features, Invalid):
            return ModalityResult.invalid(self.modality, self.name, features.reason,
                                          (time.perf_counter() - started) * 1e3)
        outputs = self.backend.infer({self._input_name: features})[self._output.name]
        probs = _softmax(outputs) if self._output.kind == "logits" else outputs
        mean = np.asarray(probs, dtype=np.float64).mean(axis=0)  # several face crops: average their evidence
        canonical = to_canonical(mean / mean.sum(), self.spec.labels, self.spec.label_map)
        return ModalityResult(self.modality, self.name, True, None, canonical,
                              (time.perf_counter() - started) * 1e3)


class FaceRunner(ModalityRunner):
    """Frames of the last ``window_s`` seconds (at most ``max_frames``), one crop per frame with a face, one batch."""

    modality = "face"

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, detector: FaceDetector,
                 window_s: float, stale_s: float, max_frames: int, capacity: int = 64) -> None:
        super().__init__(name, spec, backend, window_s, stale_s)
        self.buffer = FrameBuffer(capacity)
        self.max_frames = max_frames
        self.preprocessor = FacePreprocessor(spec.preprocessing, detector)

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        frames = self.buffer.window(now_ns, self.window_s, self.max_frames)
        return self.preprocessor.process(frames)


class SpeechRunner(ModalityRunner):
    """The last ``window_s`` seconds of mono audio at the source rate."""

    modality = "speech"

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, rate: float,
                 window_s: float, stale_s: float, capacity_s: float = 10.0) -> None:
        super().__init__(name, spec, backend, window_s, stale_s)
        self.buffer = SampleBuffer(rate, 1, max(capacity_s, window_s * 2))
        self.rate = int(round(rate))
        self.preprocessor = AudioPreprocessor(spec.preprocessing)

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        window = self.buffer.window(self.window_s)
        if window is None:
            return Invalid("filling: less than one window of audio")
        return _batch_of_one(self.preprocessor.process(window[0].astype(np.float32), self.rate))


class EegRunner(ModalityRunner):
    """The last ``window_s`` seconds of the board's EEG rows, mapped onto the encoder's channels."""

    modality = "eeg"

    def __init__(self, name: str, spec: EncoderSpec, backend: Backend, rate: float, channel_names: tuple[str, ...],
                 window_s: float | None, stale_s: float, notch_hz: float | None, max_abs_uv: float | None,
                 capacity_s: float = 30.0) -> None:
        params: EegParams = spec.preprocessing
        if window_s is not None and window_s != params.window_s:
            log.warning("eeg window %.1f s differs from the %.1f s encoder %s was trained on", window_s,
                        params.window_s, name)
        window_s = params.window_s if window_s is None else window_s
        super().__init__(name, spec, backend, window_s, stale_s)
        self.buffer = SampleBuffer(rate, len(channel_names), max(capacity_s, window_s * 2))
        self.rate = rate
        self.channel_names = channel_names
        changes: dict[str, Any] = {"max_abs": max_abs_uv, "window_s": window_s}
        if notch_hz is not None:
            changes["notch_hz"] = notch_hz
        self.preprocessor = EegPreprocessor(dataclasses.replace(params, **changes))

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        window = self.buffer.window(self.window_s)
        if window is None:
            return Invalid("filling: less than one window of EEG")
        return _batch_of_one(self.preprocessor.process(window, self.channel_names, self.rate))

