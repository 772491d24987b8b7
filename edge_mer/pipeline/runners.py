"""The speech and EEG runners, and the registry of runners by modality.

The interface is :class:`~edge_mer.pipeline.runner_base.ModalityRunner`; the
face runner, which tracks several faces, is :mod:`edge_mer.pipeline.face_runner`.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import ConfigError
from edge_mer.names import Modality, ReasonCode
from edge_mer.pipeline.buffers import SampleBuffer
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.feeds import check_speech_window
from edge_mer.pipeline.face_runner import FaceRunner
from edge_mer.pipeline.runner_base import ModalityRunner, _batch_of_one
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.eeg import EegParams, EegPreprocessor
from edge_mer.sources.base import StreamInfo
from edge_mer.timing import StageTimes

__all__ = ["RUNNERS", "EegRunner", "FaceRunner", "ModalityRunner", "SpeechRunner", "choose_eeg_encoder"]

log = logging.getLogger(__name__)


class SpeechRunner(ModalityRunner):
    """The last ``window_s`` seconds of mono audio at the source rate."""

    modality = "speech"

    @classmethod
    def from_config(cls, name: str, spec: EncoderSpec, backend: Backend, config: RunConfig, info: StreamInfo,
                    timings: StageTimes | None = None, bundle: Bundle | None = None) -> SpeechRunner:
        check_speech_window(name, spec.preprocessing, config.speech.window_s)
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
                    timings: StageTimes | None = None, bundle: Bundle | None = None) -> EegRunner:
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
