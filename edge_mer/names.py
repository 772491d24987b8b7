"""The package's closed vocabularies, defined once and imported everywhere.

Precisions, modalities, source states, health states and the codes of
invalid results are fixed by the bundle and decision formats, so they are
Literals (checked by :mod:`edge_mer.config` when a file is read) or an enum.
Open vocabularies, the names of backends, fusion rules, sinks, sources and
face detectors, are the keys of their registries instead, so a new one is
one module plus one registry line.
"""
from __future__ import annotations

import enum
import typing
from typing import Literal

#: A precision an exported model can have (the bundle's ``models`` keys).
QuantizedPrecision = Literal["fp16", "int8"]
Precision = Literal["fp32", QuantizedPrecision]
PRECISIONS: tuple[Precision, ...] = typing.get_args(Precision)
QUANTIZED_PRECISIONS: tuple[QuantizedPrecision, ...] = typing.get_args(QuantizedPrecision)
#: ``auto``: the precision is chosen from the bundle's gate results (see :mod:`edge_mer.bundle.precision`).
AUTO: Literal["auto"] = "auto"
PrecisionChoice = Literal["auto", Precision]

#: The sensing modalities, in the order decisions list them.
Modality = Literal["face", "speech", "eeg"]
MODALITIES: tuple[Modality, ...] = typing.get_args(Modality)

#: What /healthz says about one source (``stalled``: running, but silent for longer than its stale limit).
SourceStatus = Literal["running", "stalled", "failed", "ended", "stopped"]
SOURCE_STATES: tuple[SourceStatus, ...] = typing.get_args(SourceStatus)

#: The daemon's overall health.
HealthStatus = Literal["ok", "degraded"]

#: The decision's label while no modality gives evidence (its probabilities are then uniform).
NO_EVIDENCE = "unknown"


class ReasonCode(str, enum.Enum):
    """Why a modality's result is invalid: a stable code, with free text beside it for people.

    Codes are what metrics count and programs branch on; the text (``reason``)
    may name channels, durations or errors and is never parsed.
    """

    NO_DATA = "no_data"              # the source has delivered nothing yet
    STALE = "stale"                  # the newest data is older than the modality's stale_s
    FILLING = "filling"              # less than one window has arrived
    NO_FRAMES = "no_frames"          # no processed video frame inside the window
    NO_FACE = "no_face"              # frames, but no face found
    FACE_LOST = "face_lost"          # a tracked face not found in the newest frame (its id is kept a while)
    TOO_SHORT = "too_short"          # audio shorter than the encoder accepts
    SILENCE = "silence"              # audio below the loudness gate
    SHORT_WINDOW = "short_window"    # EEG window shorter than the encoder's
    BAD_CHANNELS = "bad_channels"    # too many EEG channels flat, railed or out of range
    MODEL_ERROR = "model_error"      # preprocessing or the encoder failed on this window
    SENSOR_FAILED = "sensor_failed"  # the source failed (or never opened)
    SOURCE_ENDED = "source_ended"    # a file or replay has no more data

    def __str__(self) -> str:
        return self.value

    @property
    def text(self) -> str:
        """The plain reason shown when a result has no more specific text."""
        return _TEXTS.get(self, self.value.replace("_", " "))


_TEXTS = {ReasonCode.NO_DATA: "no data yet"}
