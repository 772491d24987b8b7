"""The modality runner interface: window -> preprocessing -> encoder -> canonical probabilities.

One runner per modality (:data:`edge_mer.pipeline.runners.RUNNERS`). Each
owns its preprocessor and its loaded backend, and turns whatever goes wrong
with a window (no data, stale data, no face, silence, bad EEG) into an
invalid :class:`ModalityResult` with the reason, so the other modalities go on.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from edge_mer.backends.base import Backend
from edge_mer.bundle.labels import to_canonical
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import BackendError
from edge_mer.names import Modality, ReasonCode
from edge_mer.numeric import softmax, temperature_scale
from edge_mer.pipeline.buffers import FrameBuffer, SampleBuffer
from edge_mer.pipeline.config import RunConfig
from edge_mer.preprocess.base import Invalid
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
                    timings: StageTimes | None = None, bundle: Bundle | None = None) -> ModalityRunner:
        """The runner for encoder ``name`` on the opened source described by ``info`` (``bundle``: the
        bundle it came from, for runners that load more of its models)."""
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
        #: The encoder's embedding outputs (name, width): appended to each evidence row after the class scores.
        self._embeddings = tuple((o.name, int(o.shape[-1])) for o in spec.outputs if o.kind == "embedding")
        self.class_width = len(spec.labels)

    def close(self) -> None:
        """Release the encoder's backend (and anything else the runner loaded)."""
        self.backend.close()

    #: Where the source's chunks go; set by each subclass.
    buffer: FrameBuffer | SampleBuffer

    def _features(self, now_ns: int) -> np.ndarray | Invalid:
        """The encoder's input batch for the window ending at ``now_ns``, or why there is none."""
        raise NotImplementedError

    def on_chunk(self, chunk: Chunk) -> None:
        """Work to do as soon as ``chunk`` is in the buffer (source thread); nothing by default."""

    def _evidence(self, now_ns: int, newest_ns: int) -> tuple[np.ndarray | Invalid, int]:
        """Evidence rows ``[n, classes + embedding widths]`` (float64; :meth:`_infer`) for the window ending
        at ``now_ns``, or why none, with the time of the newest sample they rest on (``newest_ns``: the
        buffer's newest)."""
        features = self._features(now_ns)
        return (features if isinstance(features, Invalid) else self._infer(features)), newest_ns

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Evidence rows: the calibrated class probabilities ``[n, classes]``, then each embedding output.

        Embeddings ride in the same rows so that whatever averages or caches
        probability rows (frames of a window, the EEG hop) treats them alike;
        :meth:`canonical` reads the first :attr:`class_width` columns.
        """
        started = time.perf_counter_ns()
        outputs = self.backend.infer({self._input_name: batch})
        self.timings.add(f"encoder.{self.name}", (time.perf_counter_ns() - started) / 1e6)
        probs = self._probs(outputs[self._output.name])
        if not self._embeddings:
            return probs
        parts = [probs]
        for name, width in self._embeddings:
            vector = np.asarray(outputs[name], dtype=np.float64)
            if vector.size != len(probs) * width or not np.isfinite(vector).all():
                raise BackendError(f"encoder {self.name!r}: embedding {name!r} has shape {list(vector.shape)}, "
                                   f"expected {width} finite values per row for {len(probs)} rows")
            parts.append(vector.reshape(len(probs), width))
        return np.concatenate(parts, axis=1)

    def _probs(self, outputs: np.ndarray) -> np.ndarray:
        probs = np.asarray(softmax(outputs) if self._output.kind == "logits" else outputs, dtype=np.float64)
        if not np.isfinite(probs).all() or (probs < 0).any() or not (probs.sum(axis=-1) > 0).all():
            # A model that emits NaN/Inf or no probability mass: this window is invalid, not the daemon.
            raise BackendError(f"encoder {self.name!r}: output {self._output.name!r} is not a probability "
                               "distribution (NaN, Inf, negative or all zero)")
        calibration = self.spec.calibration
        return probs if calibration is None else temperature_scale(probs, calibration.temperature)

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
            return self._finish(ModalityResult.invalid(self.modality, self.name, evidence.code, evidence.reason,
                                                       latency_ms, newest))
        return self._finish(ModalityResult(self.modality, self.name, True, None, self.canonical(evidence),
                                           latency_ms, newest, embeddings=self.embedding_means(evidence)))

    def canonical(self, rows: np.ndarray) -> dict[str, float]:
        """Evidence rows (several frames or windows) averaged, on canonical labels."""
        mean = rows[:, :self.class_width].mean(axis=0)
        return to_canonical(mean / mean.sum(), self.spec.labels, self.spec.label_map)

    def embedding_means(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Each embedding output averaged over the evidence rows, as float32 vectors."""
        out, start = {}, self.class_width
        for name, width in self._embeddings:
            out[name] = rows[:, start:start + width].mean(axis=0).astype(np.float32)
            start += width
        return out

    def _finish(self, result: ModalityResult) -> ModalityResult:
        """``result`` with whatever else this runner reports beside it (per-face evidence); as is by default."""
        return result


