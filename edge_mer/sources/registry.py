"""Live sources by modality and kind: a new sensor is its module plus one line in :data:`LIVE_SOURCES`.

Each entry builds an unopened :class:`~edge_mer.sources.base.Source` from the
sensor's options dataclass (``[face.camera]``, ``[speech.microphone]``,
``[eeg.board]``); which kind a modality uses is its configuration's choice
(:attr:`edge_mer.pipeline.config.FaceConfig.source` and the like). Replayed
sessions have their own registry, :data:`edge_mer.sessions.replay.REPLAY_SOURCES`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_mer.errors import ConfigError
from edge_mer.names import Modality
from edge_mer.sources.base import Source
from edge_mer.sources.camera import CameraSource
from edge_mer.sources.eeg_board import BoardSource
from edge_mer.sources.microphone import MicrophoneSource, wav_file_source

SourceFactory = Callable[[Any], Source]

#: (modality, kind) -> factory taking that kind's options.
LIVE_SOURCES: dict[tuple[Modality, str], SourceFactory] = {
    ("face", "camera"): CameraSource,
    ("speech", "microphone"): MicrophoneSource,
    ("speech", "wav"): wav_file_source,
    ("eeg", "board"): BoardSource,
}


def create_source(modality: Modality, kind: str, options: Any) -> Source:
    """An unopened live source of ``kind`` for ``modality``, built from its ``options``."""
    try:
        factory = LIVE_SOURCES[(modality, kind)]
    except KeyError:
        known = ", ".join(k for m, k in LIVE_SOURCES if m == modality)
        raise ConfigError(f"{modality}: unknown source kind {kind!r} (expected one of: {known})") from None
    return factory(options)
