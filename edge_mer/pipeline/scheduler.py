"""One decision per tick: every modality's window through its encoder, then fusion and smoothing."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer.bundle.schema import AffectSpace
from edge_mer.errors import EdgeMerError
from edge_mer.fusion.affect import valence_arousal
from edge_mer.fusion.base import FusionRule, ReportsLabelSet, ReportsUncertainty
from edge_mer.fusion.reliability import ReportsWeights
from edge_mer.fusion.smoothing import EmaSmoother
from edge_mer.names import NO_EVIDENCE, ReasonCode
from edge_mer.pipeline.runners import ModalityRunner
from edge_mer.results import Decision, FaceResult, ModalityResult
from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)

#: The key of fusion failures in :attr:`Scheduler.errors`, beside the modalities.
FUSION = "fusion"
#: This many model errors in a row make /healthz say ``degraded``.
ERROR_STREAK = 3


@dataclass
class ErrorCount:
    """How often a modality's model (or the fusion) failed: in all, in a row now, and the last reason."""

    total: int = 0
    consecutive: int = 0
    last: str | None = None

    def count(self, failed: bool, reason: str | None) -> None:
        if failed:
            self.total += 1
            self.consecutive += 1
            self.last = reason
        else:
            self.consecutive = 0

    @property
    def repeated(self) -> bool:
        return self.consecutive >= ERROR_STREAK

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "consecutive": self.consecutive, "last": self.last}


class Scheduler:
    """Turns the buffers' newest windows into :class:`~edge_mer.results.Decision` objects."""

    def __init__(self, runners: Sequence[ModalityRunner], rule: FusionRule, weights: Mapping[str, float],
                 smoother: EmaSmoother, affect: AffectSpace, failures: Mapping[str, str] | None = None,
                 timings: StageTimes | None = None) -> None:
        self.runners = list(runners)
        self.timings = timings if timings is not None else StageTimes()
        #: Per modality of the last decision, the timestamp (daemon clock) of the newest sample it examined
        #: (a silent speech window counts: the decision reflects it); stale or failed modalities are left out.
        self.examined_t_ns: dict[str, int] = {}
        #: The same for the modalities whose evidence was valid (how old each modality's evidence is).
        self.evidence_t_ns: dict[str, int] = {}
        # Modalities whose sensor never opened: reported invalid in every decision.
        self.failures = dict(failures or {})
        self.rule = rule
        self.weights = dict(weights)
        self.smoother = smoother
        self.affect = affect
        self.decisions = 0
        #: Model errors (``model_error`` results, failed fusion) per modality and for ``fusion``.
        self.errors: dict[str, ErrorCount] = {}

    def _run(self, runner: ModalityRunner, now_ns: int) -> ModalityResult:
        try:
            result = runner.run(now_ns)
        except EdgeMerError as exc:
            # A bad window or a backend hiccup costs this modality one decision, not the daemon.
            log.warning("%s: %s", runner.name, exc)
            result = ModalityResult.invalid(runner.modality, runner.name, ReasonCode.MODEL_ERROR, f"error: {exc}")
        except Exception as exc:  # noqa: BLE001 - whatever one modality raises must cost only that modality
            log.warning("%s: unexpected %s on this window: %s", runner.name, type(exc).__name__, exc)
            result = ModalityResult.invalid(runner.modality, runner.name, ReasonCode.MODEL_ERROR,
                                            f"error: {type(exc).__name__}: {exc}")
        self.errors.setdefault(runner.modality, ErrorCount()).count(result.code is ReasonCode.MODEL_ERROR,
                                                                    result.reason)
        return result

    def _fuse(self, results: Sequence[ModalityResult]) -> dict[str, float] | None:
        """The rule's fused distribution, or None (no evidence this tick) when the rule itself fails."""
        try:
            fused = self.rule.fuse(results, self.weights)
            failed = None
        except EdgeMerError as exc:  # e.g. a learned head that returns NaN
            log.warning("fusion (%s) failed on this tick: %s", self.rule.name, exc)
            fused, failed = None, f"error: {exc}"
        self.errors.setdefault(FUSION, ErrorCount()).count(failed is not None, failed)
        return fused

    def tick(self, now_ns: int, t: float) -> Decision:
        """The decision for the windows ending at ``now_ns`` (daemon clock), stamped ``t`` seconds."""
        started = time.perf_counter()
        results = [self._run(r, now_ns) for r in self.runners]
        results += [ModalityResult.invalid(m, m, ReasonCode.SENSOR_FAILED, f"sensor failed: {e}")
                    for m, e in self.failures.items()]
        with self.timings.time("fusion"):
            fused = self._fuse(results)
            # A rule whose weights change per tick says what each encoder weighed (the decision's fusion_weights).
            fusion_weights = dict(self.rule.last_weights) if fused and isinstance(self.rule, ReportsWeights) else {}
            uncertainty = self.rule.last_uncertainty if fused and isinstance(self.rule, ReportsUncertainty) else None
            # A multilabel head reports its label set every tick (empty without evidence); it is not smoothed.
            active = self.rule.last_labels_active if isinstance(self.rule, ReportsLabelSet) else None
            active = {} if active is not None and not fused else active
            probs = self.smoother.update(fused, t)
            label = None
            if probs is None:
                # No evidence (nothing valid, or the last estimate expired): uniform, and the label says so.
                probs = {label: 1.0 / len(CANONICAL_LABELS) for label in CANONICAL_LABELS}
                label = NO_EVIDENCE
            valence, arousal = valence_arousal(probs, self.affect)
        self.decisions += 1
        self.examined_t_ns = {r.modality: r.newest_t_ns for r in results if r.newest_t_ns is not None}
        valid = {r.modality for r in results if r.valid}
        self.evidence_t_ns = {m: t for m, t in self.examined_t_ns.items() if m in valid}
        faces = self._faces(results)
        latency_ms = (time.perf_counter() - started) * 1e3
        self.timings.add("tick", latency_ms)
        return Decision(t, label or max(probs, key=probs.get), probs, valence, arousal, tuple(results), latency_ms,
                        faces, fusion_weights, uncertainty, active)

    def _faces(self, results: Sequence[ModalityResult]) -> tuple[FaceResult, ...]:
        """Every tracked face of this tick, each valid one with its own valence/arousal."""
        out = []
        for face in (f for r in results for f in r.faces):
            if face.valid and face.probs:
                v, a = valence_arousal(face.probs, self.affect)
                face = dataclasses.replace(face, valence=v, arousal=a)
            out.append(face)
        return tuple(out)
