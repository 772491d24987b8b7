"""``edge-mer run`` configuration: one TOML file, validated into frozen dataclasses.

Every field has a default; unknown keys and wrong types are errors naming the
key (see :mod:`edge_mer.config`). CLI flags of ``edge-mer run`` map 1:1 onto
fields here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_mer.backends.options import BackendOptions
from edge_mer.config import require
from edge_mer.preprocess.face_detect import FaceDetectorOptions

Precision = Literal["auto", "fp32", "fp16", "int8"]


@dataclass(frozen=True)
class CameraConfig:
    """OpenCV capture: ``device`` is an index ("0"), a file, an RTSP URL or a GStreamer pipeline.

    ``api`` picks the OpenCV backend (``gstreamer`` for Jetson CSI pipelines).
    Width/height/fps of 0 keep the device's defaults. When frames stop, the
    capture reconnects with exponential backoff from ``reconnect_min_s`` to
    ``reconnect_max_s``; ``max_failures`` consecutive failed reconnects (0 =
    never give up) end the source.
    """

    device: str = "0"
    api: Literal["auto", "gstreamer", "ffmpeg", "v4l2"] = "auto"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    read_timeout_s: float = 2.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    max_failures: int = 0

    def __post_init__(self) -> None:
        require(self.device != "", "device must name a camera index, file, URL or pipeline")
        require(self.width >= 0 and self.height >= 0 and self.fps >= 0, "width, height and fps must be >= 0")
        require(0 < self.reconnect_min_s <= self.reconnect_max_s,
                f"need 0 < reconnect_min_s <= reconnect_max_s, got {self.reconnect_min_s} and {self.reconnect_max_s}")
        require(self.read_timeout_s > 0, f"read_timeout_s must be > 0, got {self.read_timeout_s}")
        require(self.max_failures >= 0, f"max_failures must be >= 0, got {self.max_failures}")


@dataclass(frozen=True)
class MicrophoneConfig:
    """PyAudio input: ``device`` is "" (the default input), an index, or a name substring.

    ``file`` replaces the microphone by a WAV file read at its real rate (same interface).
    """

    device: str = ""
    rate: int = 16000
    channels: int = 1
    chunk_ms: float = 20.0
    buffer_s: float = 10.0
    file: Path | None = None

    def __post_init__(self) -> None:
        require(self.rate >= 8000, f"rate must be >= 8000 Hz, got {self.rate}")
        require(1 <= self.channels <= 32, f"channels must be in 1..32, got {self.channels}")
        require(1.0 <= self.chunk_ms <= 500.0, f"chunk_ms must be in 1..500, got {self.chunk_ms}")
        require(self.buffer_s >= 1.0, f"buffer_s must be >= 1, got {self.buffer_s}")


@dataclass(frozen=True)
class BoardConfig:
    """A BrainFlow board: ``board`` is a BoardIds name (``SYNTHETIC_BOARD``, ``CYTON_BOARD``...) or its number.

    The connection fields are BrainFlowInputParams'; ``file`` and
    ``master_board`` are for PLAYBACK_FILE_BOARD.
    """

    board: str = "SYNTHETIC_BOARD"
    serial_port: str = ""
    mac_address: str = ""
    ip_address: str = ""
    ip_port: int = 0
    ip_protocol: int = 0
    serial_number: str = ""
    other_info: str = ""
    timeout: int = 0
    file: str = ""
    master_board: str = ""
    poll_s: float = 0.1
    buffer_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    max_failures: int = 0

    def __post_init__(self) -> None:
        require(self.board != "", "board must be a BrainFlow BoardIds name or number")
        require(0.01 <= self.poll_s <= 1.0, f"poll_s must be in 0.01..1, got {self.poll_s}")
        require(self.buffer_s >= 5.0, f"buffer_s must be >= 5, got {self.buffer_s}")
        require(0 < self.reconnect_min_s <= self.reconnect_max_s,
                f"need 0 < reconnect_min_s <= reconnect_max_s, got {self.reconnect_min_s} and {self.reconnect_max_s}")
        require(self.max_failures >= 0, f"max_failures must be >= 0, got {self.max_failures}")


def _check_modality(name: str, window_s: float, stale_s: float) -> None:
    require(window_s > 0, f"{name} window_s must be > 0, got {window_s}")
    require(stale_s > 0, f"{name} stale_s must be > 0, got {stale_s}")


@dataclass(frozen=True)
class FaceConfig:
    """The face modality: its window, frames analysed per window, encoder, detector and camera."""

    enabled: bool = True
    encoder: str = "face"
    window_s: float = 0.5
    max_frames: int = 5
    stale_s: float = 1.0
    detector: FaceDetectorOptions = field(default_factory=FaceDetectorOptions)
    camera: CameraConfig = field(default_factory=CameraConfig)

    def __post_init__(self) -> None:
        _check_modality("face", self.window_s, self.stale_s)
        require(self.max_frames >= 1, f"max_frames must be >= 1, got {self.max_frames}")


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
        require(0 <= self.hop_s <= self.stale_s,
                f"hop_s must be in 0..stale_s ({self.stale_s} s), so reused features are never stale; got {self.hop_s}")
        require(self.notch_hz is None or self.notch_hz in (0.0, 50.0, 60.0),
                f"notch_hz must be 0, 50 or 60, got {self.notch_hz}")


@dataclass(frozen=True)
class FusionConfig:
    """Overrides of the bundle's fusion section (unset: the bundle's)."""

    rule: Literal["weighted_mean", "log_linear", "learned"] | None = None
    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float | None = None

    def __post_init__(self) -> None:
        for name, w in self.weights.items():
            require(w >= 0, f"weights.{name} must be >= 0, got {w}")
        require(self.half_life_s is None or self.half_life_s >= 0, f"half_life_s must be >= 0, got {self.half_life_s}")


@dataclass(frozen=True)
class HttpConfig:
    """HTTP + WebSocket output: /healthz, /metrics (Prometheus), /state, /ws."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, f"port must be in 0..65535, got {self.port}")


@dataclass(frozen=True)
class LslConfig:
    """A Lab Streaming Layer outlet carrying each decision as one JSON string sample."""

    enabled: bool = False
    name: str = "edge-mer"
    source_id: str = "edge-mer-decisions"


@dataclass(frozen=True)
class OutputsConfig:
    """Where decisions go: ``jsonl`` is "-" (stdout), a file path, or "" (off)."""

    jsonl: str = "-"
    http: HttpConfig = field(default_factory=HttpConfig)
    lsl: LslConfig = field(default_factory=LslConfig)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``edge-mer run`` needs. ``replay``/``record`` are session directories (format edge-mer-session/1).

    ``align_ticks``: a decision that falls due waits for the next sensor chunk
    (at most half a period or 100 ms), so it includes the freshest data.
    ``numpy_threads``: BLAS threads for preprocessing (0 = the library's default). Its matrices are
    small, and a BLAS thread pool that has to wait for a busy core stalls the decision.
    """

    rate_hz: float = 2.0
    align_ticks: bool = True
    numpy_threads: int = 1
    precision: Precision = "auto"
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
        require(self.numpy_threads >= 0, f"numpy_threads must be >= 0 (0 = default), got {self.numpy_threads}")
        require(math.isfinite(self.duration_s) and self.duration_s >= 0,
                f"duration_s must be a finite number >= 0 (0 = until stopped), got {self.duration_s}")
        require(not self.fast or self.replay is not None, "fast needs replay (a session directory)")
        require(self.replay is None or self.record is None, "replay and record cannot be combined")
