"""``edge-mer export`` configuration: one frozen dataclass, each CLI flag sets one field."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_mer.config import require
from edge_mer.names import QUANTIZED_PRECISIONS

#: INT8 calibration methods (ONNX Runtime's calibrators; see :data:`edge_mer_export.int8.METHODS`).
Method = Literal["entropy", "minmax", "percentile"]
#: The one default of ``edge-mer export`` and :func:`~edge_mer_export.int8.make_int8`.
DEFAULT_METHOD: Method = "minmax"
#: The key of ``calib``/``eval``/``*_groups`` that applies to every encoder without its own entry.
ALL_ENCODERS = "*"


@dataclass(frozen=True)
class ExportConfig:
    """What to export, from which data, and how strict the accuracy gate is.

    ``calib`` and ``eval`` map encoder names to data (a path usable by
    :func:`edge_mer_calibration.datasets.open_dataset`); the key ``*``
    (:data:`ALL_ENCODERS`) applies to every selected encoder.
    ``calib_groups``/``eval_groups`` keep only those speakers or subjects
    (e.g. ``{"speech": ("08", "09")}``), so one folder can give disjoint
    calibration and evaluation sets. ``encoders``
    empty selects every encoder that has evaluation data.
    ``max_accuracy_drop`` is in percentage points; ``max_ccc_drop`` in
    absolute CCC (valence/arousal outputs, see :mod:`edge_mer_export.va`);
    ``max_map_drop`` in absolute mAP (multilabel outputs); ``min_embedding_cosine`` a
    cosine similarity with FP32 (embedding outputs).
    """

    source: Path
    out: Path
    calib: dict[str, Path] = field(default_factory=dict)
    eval: dict[str, Path] = field(default_factory=dict)
    calib_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    eval_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    entry: Path | None = None
    encoders: tuple[str, ...] = ()
    precisions: tuple[str, ...] = QUANTIZED_PRECISIONS  # checked against QUANTIZED_PRECISIONS below, naming the bad one
    method: Method = DEFAULT_METHOD
    calib_size: int = 256
    eval_size: int = 0
    seed: int = 0
    max_accuracy_drop: float = 1.0
    min_agreement: float = 0.97
    latency_iterations: int = 50
    engines: bool = False
    cache_dir: Path | None = None
    board: str = ""
    hop_s: float = 2.0
    #: Videos whose frames gate (``detector_eval``) and calibrate (``detector_calib``) the bundle's face
    #: detector; with ``detector_eval`` set, the detector is exported beside the encoders.
    detector_eval: Path | None = None
    detector_calib: Path | None = None
    detector_every: int = 10
    detector_frames: int = 300
    #: Frames of ``detector_calib`` that calibrate the detector's INT8 (``calib_size`` is the encoders').
    detector_calib_frames: int = 256
    min_detection_recall: float = 0.95
    min_detection_iou: float = 0.85
    #: V/A-labelled evaluation data per encoder (a CSV of ``path,valence,arousal`` rows, see
    #: :mod:`edge_mer_calibration.va_csv`), for encoders with a ``valence_arousal`` output.
    va_eval: dict[str, Path] = field(default_factory=dict)
    #: The largest CCC loss (absolute, per axis) against FP32 and against V/A labels that passes.
    max_ccc_drop: float = 0.02
    #: Fusion-head data (``.npz``, see :mod:`edge_mer_calibration.head`): with ``head_eval`` set, every
    #: shipped head (``fusion.named_heads()``) is exported and gated on it; ``head_calib`` calibrates their INT8.
    head_eval: Path | None = None
    head_calib: Path | None = None
    #: The largest mAP loss (absolute, FP32 minus candidate, on the head data's ``label_sets``) of a
    #: ``multilabel`` output that passes (see :mod:`edge_mer_export.multilabel`).
    max_map_drop: float = 0.02
    #: The smallest mean cosine similarity with FP32 (over the evaluation rows) of every ``embedding`` output
    #: that passes (see :mod:`edge_mer_export.embedding`).
    min_embedding_cosine: float = 0.98

    def __post_init__(self) -> None:
        for p in self.precisions:
            require(p in QUANTIZED_PRECISIONS, f"precisions: {p!r} is not one of {', '.join(QUANTIZED_PRECISIONS)}")
        require(len(self.precisions) > 0, f"precisions must name at least one of {', '.join(QUANTIZED_PRECISIONS)}")
        require(len(set(self.precisions)) == len(self.precisions), f"precisions repeats a value: {self.precisions}")
        require(self.calib_size >= 1, f"calib_size must be >= 1, got {self.calib_size}")
        require(self.eval_size >= 0, f"eval_size must be >= 0 (0 = all), got {self.eval_size}")
        require(0.0 <= self.max_accuracy_drop <= 100.0, f"max_accuracy_drop must be 0..100 points, got "
                                                          f"{self.max_accuracy_drop}")
        require(0.0 <= self.min_agreement <= 1.0, f"min_agreement must be in 0..1, got {self.min_agreement}")
        require(self.latency_iterations >= 1, f"latency_iterations must be >= 1, got {self.latency_iterations}")
        require(self.hop_s > 0, f"hop_s must be > 0, got {self.hop_s}")
        require(1 <= self.detector_every <= 1000, f"detector_every must be 1..1000 frames, got {self.detector_every}")
        require(1 <= self.detector_frames <= 5000, f"detector_frames must be 1..5000, got {self.detector_frames}")
        require(1 <= self.detector_calib_frames <= 5000,
                f"detector_calib_frames must be 1..5000, got {self.detector_calib_frames}")
        require(0.0 <= self.min_detection_recall <= 1.0,
                f"min_detection_recall must be in 0..1, got {self.min_detection_recall}")
        require(0.0 <= self.min_detection_iou <= 1.0, f"min_detection_iou must be in 0..1, got {self.min_detection_iou}")
        require(0.0 <= self.max_ccc_drop <= 2.0,
                f"max_ccc_drop must be in 0..2 (absolute CCC), got {self.max_ccc_drop}")
        require(isinstance(self.max_map_drop, (int, float)) and not isinstance(self.max_map_drop, bool)
                and 0.0 <= self.max_map_drop <= 1.0,
                f"max_map_drop must be in 0..1 (absolute mAP), got {self.max_map_drop}")
        require(isinstance(self.min_embedding_cosine, (int, float)) and not isinstance(self.min_embedding_cosine, bool)
                and 0.0 <= self.min_embedding_cosine <= 1.0,
                f"min_embedding_cosine must be in 0..1, got {self.min_embedding_cosine}")
        require(self.head_calib is None or self.head_eval is not None,
                "head_calib needs head_eval: the fusion head is exported only with evaluation data")
        require(self.source.suffix != ".onnx" or self.entry is not None,
                f"source {self.source} is an ONNX file: give its manifest entry (JSON) with --entry")

    def data_for(self, table: dict, encoder: str):  # noqa: ANN201 - Path or group tuple
        """The entry for ``encoder`` in ``calib``/``eval``/``*_groups`` (its own key, else ``*``)."""
        return table.get(encoder, table.get(ALL_ENCODERS))
