"""``edge-mer run`` configuration: one TOML file, validated into frozen dataclasses.

Every field has a default; unknown keys and wrong types are errors naming the
key (see :mod:`edge_mer.config`). CLI flags of ``edge-mer run`` map 1:1 onto
fields here. This module only composes: each part's options live beside it
(sensors in :mod:`edge_mer.sources`, outputs in :mod:`edge_mer.sinks`, fusion
in :mod:`edge_mer.fusion.options`, backends in :mod:`edge_mer.backends.options`);
what is here is how the pipeline windows each modality.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edge_mer.backends.options import BackendOptions
from edge_mer.config import require
from edge_mer.fusion.options import FusionConfig
from edge_mer.names import MODALITIES, Modality, PrecisionChoice
from edge_mer.preprocess.face_detect import FaceDetectorOptions
from edge_mer.preprocess.face_track import MAX_FACES, Primary
from edge_mer.sinks.base import check_device_id
from edge_mer.sinks.registry import OutputsConfig
from edge_mer.sources.camera import CameraConfig
from edge_mer.sources.eeg_board import BoardConfig
from edge_mer.sources.microphone import MicrophoneConfig


#: The longest analysis window per modality, in seconds: windows are held in memory at the source's rate.
MAX_WINDOW_S: dict[Modality, float] = {"face": 10.0, "speech": 30.0, "eeg": 60.0}
#: The longest run a duration may ask for (a year); 0 runs until stopped.
MAX_DURATION_S = 366 * 86400.0
#: The longest a modality's newest data may be old before its results are ``stale``.
MAX_STALE_S = 60.0


def _in_range(value: float, low: float, high: float) -> bool:
    return math.isfinite(value) and low < value <= high


def _check_modality(name: Modality, window_s: float, stale_s: float) -> None:
    high = MAX_WINDOW_S[name]
    require(_in_range(window_s, 0.0, high), f"{name} window_s must be in (0, {high:g}] s, got {window_s}")
    require(_in_range(stale_s, 0.0, MAX_STALE_S), f"{name} stale_s must be in (0, {MAX_STALE_S:g}] s, got {stale_s}")


@dataclass(frozen=True)
class FaceConfig:
    """The face modality: its window, frames analysed per window, faces followed, encoder, detector, camera.

    ``max_faces`` faces are tracked per frame, each with an id and its own
    evidence in the decision (``faces``); the fused estimate uses the
    ``primary`` one (``largest``, or nearest the ``center``). The default of 4
    covers a kiosk or robot's usual group; each extra face in view costs one
    region search and one encoder row per processed frame, nothing when
    absent. ``align`` levels the eyes (detector keypoints) before the crop.
    """

    enabled: bool = True
    encoder: str = "face"
    window_s: float = 0.5
    max_frames: int = 5
    stale_s: float = 1.0
    max_faces: int = 4
    primary: Primary = "largest"
    align: bool = True
    detector: FaceDetectorOptions = field(default_factory=FaceDetectorOptions)
    camera: CameraConfig = field(default_factory=CameraConfig)

    def __post_init__(self) -> None:
        _check_modality("face", self.window_s, self.stale_s)
        require(1 <= self.max_frames <= 100, f"max_frames must be in 1..100, got {self.max_frames}")
        require(1 <= self.max_faces <= MAX_FACES, f"max_faces must be in 1..{MAX_FACES}, got {self.max_faces}")
        require(self.primary in ("largest", "center"), f"primary must be 'largest' or 'center', got {self.primary!r}")

    @property
    def source(self) -> tuple[str, CameraConfig]:
        """The live source kind and its options (a key of :data:`edge_mer.sources.registry.LIVE_SOURCES`)."""
        return "camera", self.camera


@dataclass(frozen=True)
class SpeechConfig:
    """The speech modality: its window, encoder and microphone."""

    enabled: bool = True
    encoder: str = "speech"
    window_s: float = 2.0
    stale_s: float = 1.0
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)

    def __post_init__(self) -> None:
        _check_modality("speech", self.window_s, self.stale_s)

    @property
    def source(self) -> tuple[str, MicrophoneConfig]:
        """The live source kind and its options: the microphone, or its ``file`` when one is set."""
        return ("microphone" if self.microphone.file is None else "wav"), self.microphone


@dataclass(frozen=True)
class EegConfig:
    """The EEG modality: window, encoder (``auto``: the bundle's EEG encoder whose channels the board has), board.

    ``window_s`` unset uses the encoder's training window (4 s in the default bundle).

    ``notch_hz`` overrides the bundle's mains frequency (50 or 60; 0 disables);
    ``max_abs_uv`` is the deviation from the channel median beyond which a channel counts as bad
    (2000 uV by default: BrainFlow's synthetic board swings to ~1000 uV; real boards want 150-500).
    ``hop_s``: features are recomputed once this much new EEG has arrived; decisions in between reuse them.
    """

    enabled: bool = True
    encoder: str = "auto"
    window_s: float | None = None
    stale_s: float = 2.0
    notch_hz: float | None = None
    max_abs_uv: float | None = 2000.0
    hop_s: float = 0.5
    board: BoardConfig = field(default_factory=BoardConfig)

    def __post_init__(self) -> None:
        _check_modality("eeg", 4.0 if self.window_s is None else self.window_s, self.stale_s)
        require(math.isfinite(self.hop_s) and 0 <= self.hop_s <= self.stale_s,
                f"hop_s must be in 0..stale_s ({self.stale_s} s), so reused features are never stale; got {self.hop_s}")
        require(self.max_abs_uv is None or _in_range(self.max_abs_uv, 0.0, 1e6),
                f"max_abs_uv must be in (0, 1e6] uV or unset, got {self.max_abs_uv}")
        require(self.notch_hz is None or self.notch_hz in (0.0, 50.0, 60.0),
                f"notch_hz must be 0, 50 or 60, got {self.notch_hz}")

    @property
    def source(self) -> tuple[str, BoardConfig]:
        """The live source kind and its options."""
        return "board", self.board


@dataclass(frozen=True)
class RunConfig:
    """Everything ``edge-mer run`` needs. ``replay``/``record`` are session directories (format edge-mer-session/1).

    ``align_ticks``: a decision that falls due waits for the next sensor chunk
    (at most half a period or 100 ms), so it includes the freshest data.
    ``numpy_threads``: BLAS threads for preprocessing (0 = the library's default). Its matrices are
    small, and a BLAS thread pool that has to wait for a busy core stalls the decision.
    ``device_id``: names this device to outputs that publish it (MQTT topics, ``device_id`` of each
    message); "" is the host name, resolved when the run starts.
    """

    rate_hz: float = 2.0
    device_id: str = ""
    align_ticks: bool = True
    numpy_threads: int = 1
    precision: PrecisionChoice = "auto"
    bundle: Path | None = None
    duration_s: float = 0.0
    replay: Path | None = None
    fast: bool = False
    record: Path | None = None
    backend: BackendOptions = field(default_factory=BackendOptions)
    face: FaceConfig = field(default_factory=FaceConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    eeg: EegConfig = field(default_factory=EegConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)

    def __post_init__(self) -> None:
        require(0.1 <= self.rate_hz <= 100.0, f"rate_hz must be in 0.1..100, got {self.rate_hz}")
        require(0 <= self.numpy_threads <= 256, f"numpy_threads must be in 0..256 (0 = default), got "
                                                    f"{self.numpy_threads}")
        require(math.isfinite(self.duration_s) and 0 <= self.duration_s <= MAX_DURATION_S,
                f"duration_s must be in 0..{MAX_DURATION_S:g} s (0 = until stopped), got {self.duration_s}")
        require(not self.fast or self.replay is not None, "fast needs replay (a session directory)")
        require(self.replay is None or self.record is None, "replay and record cannot be combined")
        check_device_id(self.device_id)

    def modality(self, name: Modality) -> FaceConfig | SpeechConfig | EegConfig:
        """The options of modality ``name``."""
        return {"face": self.face, "speech": self.speech, "eeg": self.eeg}[name]

    @property
    def enabled(self) -> tuple[Modality, ...]:
        """The enabled modalities, in decision order."""
        return tuple(m for m in MODALITIES if self.modality(m).enabled)
