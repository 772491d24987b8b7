"""Labelled windows of a session, through the daemon's own replay sources, runners and encoders.

Each stream of the session is replayed on its own (fast, on the session
clock) into the runner a run would build for it (:func:`build_runner`: the
same encoder choice, preprocessing, face detection and tracking); every
``step_s`` seconds, as the daemon ticks, the window ending then is read
through the runner's own hooks: ``_evidence`` (face, speech), the step
between the encoder and the canonical mapping that :meth:`run` averages, or
for EEG ``_features`` then ``_infer``, which is what its ``_evidence`` does,
keeping the encoder input. Only windows lying wholly inside one label
segment are kept: a window straddling two segments has no single label.

The runners are built from a copy of the bundle with every calibration
removed, so the probabilities collected are the encoders' raw ones; the
shipped calibration ("before") and the fitted one ("after") are applied by
the evaluation, exactly as the runner applies them. EEG runners recompute
features every step (``hop_s = 0``), and the EEG windows keep the encoder
input (differential entropy ``[channels, bands]``) for the per-user head.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import ConfigError, EdgeMerError
from edge_mer.names import Modality, ReasonCode
from edge_mer.pipeline.assembly import build_runner
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.daemon import accept
from edge_mer.pipeline.health import SourceState
from edge_mer.pipeline.runners import ModalityRunner
from edge_mer.preprocess.base import Invalid
from edge_mer.sessions.format import Label, Session
from edge_mer.sessions.replay import REPLAY_SOURCES

log = logging.getLogger(__name__)

_EPS_S = 1e-9  # window edges are compared on a nanosecond clock


@dataclass
class Windows:
    """One encoder's labelled windows: end times, labels, raw probability rows (and EEG features)."""

    encoder: str
    modality: Modality
    spec: EncoderSpec
    window_s: float
    ends: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    #: Labelled windows without evidence, by reason code (``no_face``, ``silence``, ``bad_channels``, ...).
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ends)

    def add(self, end_s: float, label: str, rows: np.ndarray, features: np.ndarray | None) -> None:
        self.ends.append(end_s)
        self.labels.append(label)
        self.rows.append(np.atleast_2d(np.asarray(rows, dtype=np.float64)))
        if features is not None:
            self.features.append(np.asarray(features, dtype=np.float32))

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def raw_bundle(bundle: Bundle) -> Bundle:
    """``bundle`` with no encoder calibrated, so runners built from it return raw encoder probabilities."""
    encoders = {n: dataclasses.replace(e, calibration=None) for n, e in bundle.manifest.encoders.items()}
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, encoders=encoders))


class _Segments:
    """Which label segment, if any, holds a whole window."""

    def __init__(self, segments: Sequence[Label]) -> None:
        self._segments = sorted(segments, key=lambda s: s.start)
        self._starts = [s.start for s in self._segments]

    def label(self, start_s: float, end_s: float) -> str | None:
        i = bisect.bisect_right(self._starts, start_s + _EPS_S) - 1
        if i < 0:
            return None
        segment = self._segments[i]
        return segment.label if end_s <= segment.end + _EPS_S else None


def run_config(encoders: Mapping[Modality, str]) -> RunConfig:
    """The run configuration of an adaptation: defaults, the named encoders, EEG features every step."""
    config = RunConfig()
    changes: dict[str, object] = {}
    for modality in ("face", "speech", "eeg"):
        options = config.modality(modality)
        if modality in encoders:
            options = dataclasses.replace(options, encoder=encoders[modality])
        if modality == "eeg":
            options = dataclasses.replace(options, hop_s=0.0)
        changes[modality] = options
    return dataclasses.replace(config, **changes)


def _window(runner: ModalityRunner, now_ns: int) -> tuple[np.ndarray | Invalid, np.ndarray | None]:
    """The raw probability rows of the window ending at ``now_ns`` (and for EEG its features), or why none."""
    newest = runner.buffer.newest_t_ns
    if newest is None:
        return Invalid(ReasonCode.NO_DATA), None
    if (now_ns - newest) / 1e9 > runner.stale_s:
        return Invalid(ReasonCode.STALE), None
    if runner.modality == "eeg":
        features = runner._features(now_ns)
        if isinstance(features, Invalid):
            return features, None
        return runner._infer(features)[:, :runner.class_width], features[0]
    evidence, _ = runner._evidence(now_ns, newest)
    # Evidence rows carry the encoder's embeddings after its class probabilities: adaptation needs only those.
    return (evidence if isinstance(evidence, Invalid) else evidence[:, :runner.class_width]), None


def _tick(runner: ModalityRunner, out: Windows, segments: _Segments, now_ns: int) -> None:
    end_s = now_ns / 1e9
    label = segments.label(end_s - out.window_s, end_s)
    if label is None:
        return
    try:
        evidence, features = _window(runner, now_ns)
    except EdgeMerError as exc:  # as in the daemon: a bad window costs that window
        log.warning("%s: window ending at %.2f s: %s", out.encoder, end_s, exc)
        out.skip("model_error")
        return
    if isinstance(evidence, Invalid):
        out.skip(evidence.code.value)
        return
    out.add(end_s, label, evidence, features)


def collect_modality(session: Session, modality: Modality, bundle: Bundle, config: RunConfig,
                     segments: Sequence[Label], step_s: float) -> Windows:
    """Replay ``modality``'s stream of ``session`` into its runner; its labelled windows every ``step_s``."""
    source = REPLAY_SOURCES[modality](session, clock_offset_ns=0, pace=False)
    with source:
        runner = build_runner(modality, config, raw_bundle(bundle), source.info)
        try:
            out = Windows(runner.name, modality, bundle.encoder(runner.name), runner.window_s)
            lookup, state, step = _Segments(segments), SourceState(), round(step_s * 1e9)
            next_tick, last = step, 0
            for chunk in source:  # the daemon's run_fast, one stream at a time
                while next_tick < chunk.t_ns:
                    _tick(runner, out, lookup, next_tick)
                    next_tick += step
                accept(modality, chunk, runner, state)
                last = chunk.t_ns
            while next_tick <= last:
                _tick(runner, out, lookup, next_tick)
                next_tick += step
        finally:
            runner.close()
    log.info("%s: %d labelled windows, skipped %s", out.encoder, out.n, out.skipped or "none")
    return out


def modality_encoders(bundle: Bundle, session: Session, names: Sequence[str]) -> dict[Modality, str | None]:
    """Which encoder to adapt per session stream: ``names`` (one per modality at most), or the run's choice (None)."""
    if not names:
        return {m: None for m in session.modalities}
    chosen: dict[Modality, str] = {}
    for name in names:
        modality = bundle.encoder(name).modality
        if modality in chosen:
            raise ConfigError(f"encoders {chosen[modality]!r} and {name!r} are both {modality} encoders; a run uses "
                              "one per modality, so name at most one each")
        if modality not in session.modalities:
            raise ConfigError(f"encoder {name!r} reads {modality}, but session {session.root} has no {modality} "
                              "stream")
        chosen[modality] = name
    return {m: chosen[m] for m in session.modalities if m in chosen}
