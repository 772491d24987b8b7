"""The bundle manifest (``manifest.json``, format ``edge-mer-bundle/1``) as frozen dataclasses.

Every check that needs only the manifest lives here; checks against files on
disk (presence, sha256, ONNX signatures) live in :mod:`edge_mer.bundle.loader`.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from edge_mer.bundle.labels import CANONICAL_LABELS
# Tensors are defined in edge_mer.bundle.tensors and read from here too (``as`` marks the re-export).
from edge_mer.bundle.tensors import OutputKind as OutputKind
from edge_mer.bundle.tensors import TensorInfo as TensorInfo
from edge_mer.bundle.tensors import _short
from edge_mer.config import key_text, require
from edge_mer.names import PRECISIONS, Modality
from edge_mer.preprocess.audio import AudioParams
from edge_mer.preprocess.blazeface import BlazeFaceDecoding
from edge_mer.preprocess.eeg import EegParams
from edge_mer.preprocess.face_params import FaceParams

FORMAT = "edge-mer-bundle/1"
_PARAMS_BY_MODALITY = {"face": FaceParams, "speech": AudioParams, "eeg": EegParams}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Bounds on what the manifest may ask for: paths and external-data files per model (tensor shapes:
#: :mod:`edge_mer.bundle.tensors`).
MAX_PATH_CHARS, MAX_PART_CHARS, MAX_EXTERNAL_FILES = 1024, 255, 1024
MAX_HALF_LIFE_S = 3600.0
#: Encoder names appear in file names (engine caches, reports) and metric labels.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")



def check_relative_path(path: str, what: str = "path") -> None:
    """Refuse (ConfigError) a path that is not a short relative POSIX path inside its directory."""
    shown = _short(path)
    require(0 < len(path) <= MAX_PATH_CHARS and all(ch >= " " and ch != "\\" for ch in path),
            f"{what} {shown} must be 1..{MAX_PATH_CHARS} printable characters, '/' separated")
    pure = PurePosixPath(path)
    require(not pure.is_absolute() and ".." not in pure.parts and all(len(p) <= MAX_PART_CHARS for p in pure.parts),
            f"{what} {shown} must be relative to the bundle directory, without '..'")


@dataclass(frozen=True)
class FileEntry:
    """A file inside the bundle, by relative POSIX path, with its sha256.

    ``external_data`` lists the files an ONNX model keeps its tensors in
    (ONNX external data), each with its own sha256, by path relative to the
    bundle directory like every other path; most models have none, and a
    manifest that omits the key is read as having none.
    """

    path: str
    sha256: str
    external_data: tuple[FileEntry, ...] = ()

    def __post_init__(self) -> None:
        check_relative_path(self.path)
        require(bool(_HEX64.match(self.sha256)), f"sha256 of {self.path} must be 64 lowercase hex digits")
        require(len(self.external_data) <= MAX_EXTERNAL_FILES,
                f"{self.path}: {len(self.external_data)} external_data files, expected at most {MAX_EXTERNAL_FILES}")
        paths = [PurePosixPath(e.path).as_posix() for e in self.external_data]
        for entry, path in zip(self.external_data, paths):
            require(not entry.external_data, f"external_data {entry.path} of {self.path} cannot list external_data")
            require(path != PurePosixPath(self.path).as_posix(), f"{self.path} lists itself as its external_data")
            require(paths.count(path) == 1, f"{self.path} lists external_data {entry.path} twice")

    @property
    def content_sha256(self) -> str:
        """One digest of everything a backend loads for this file: its sha256, or with external data,
        the sha256 of every file's path and sha256 (engine caches key on it)."""
        if not self.external_data:
            return self.sha256
        lines = [f"{e.sha256}  {e.path}" for e in (self, *sorted(self.external_data, key=lambda e: e.path))]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class Metric:
    """A measured figure, with the data and split it was measured on."""

    name: str
    value: float
    dataset: str
    split: str
    n: int | None = None
    notes: str = ""


@dataclass(frozen=True)
class Provenance:
    """Where a model came from: source, training data, licence."""

    source: str
    training_data: str
    licence: str
    notes: str = ""


@dataclass(frozen=True)
class PrecisionReport:
    """What the export gate measured for one precision of one encoder.

    ``passed`` precisions have a file in ``models``; failed ones keep only
    this record and the ``reason``. ``cpu_latency_ms`` is ONNX Runtime's median
    batch-1 latency on the export host.
    """

    passed: bool
    reason: str | None = None
    cpu_latency_ms: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # ``auto`` precision takes the minimum of these: a NaN or negative latency would win it.
        require(self.cpu_latency_ms is None or 0.0 <= self.cpu_latency_ms < math.inf,
                f"cpu_latency_ms must be a finite number >= 0 or absent, got {self.cpu_latency_ms}")


def _check_precisions(models: dict[str, FileEntry], reports: dict[str, PrecisionReport],
                      what: str = "models") -> None:
    require("fp32" in models, f"{what} needs an fp32 entry (other precisions are optional)")
    for precision, report in reports.items():
        require(precision in PRECISIONS, f"precisions.{precision}: must be one of {', '.join(PRECISIONS)}")
        require(report.passed == (precision in models),
                f"precisions.{precision}: passed={report.passed} but the model file is "
                f"{'present' if precision in models else 'absent'}")
    for precision in models:
        require(precision in PRECISIONS, f"models.{precision}: precision must be one of {', '.join(PRECISIONS)}")


#: Bounds on a fitted temperature: outside them a model is broken, not mis-calibrated.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 100.0


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling fitted on held-out outputs; the runtime applies ``softmax(log p / temperature)``.

    ``ece_before``/``ece_after`` are the expected calibration error (15 bins)
    on ``dataset``/``split`` without and with the temperature; ``n`` is the
    number of held-out samples it was fitted on.
    """

    temperature: float
    dataset: str
    split: str
    n: int
    ece_before: float
    ece_after: float
    mean_confidence: float | None = None
    accuracy: float | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        require(MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE,
                f"calibration temperature must be in {MIN_TEMPERATURE}..{MAX_TEMPERATURE:g}, got {self.temperature}")
        require(1 <= self.n <= 1 << 31, f"calibration n must be in 1..2^31, got {self.n}")
        for name in ("ece_before", "ece_after", "mean_confidence", "accuracy"):
            value = getattr(self, name)
            require(value is None or 0.0 <= value <= 1.0, f"calibration {name} must be in 0..1, got {value}")


@dataclass(frozen=True)
class EncoderSpec:
    """One modality encoder: files per precision, tensors, preprocessing, labels, provenance."""

    modality: Modality
    models: dict[str, FileEntry]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    preprocessing: FaceParams | AudioParams | EegParams
    label_map: dict[str, str]
    provenance: Provenance
    metrics: tuple[Metric, ...] = ()
    description: str = ""
    precisions: dict[str, PrecisionReport] = field(default_factory=dict)
    #: Temperature scaling of the class output, applied by the runtime before the label mapping.
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        _check_precisions(self.models, self.precisions)
        expected = _PARAMS_BY_MODALITY[self.modality]
        require(isinstance(self.preprocessing, expected),
                f"preprocessing for modality {self.modality} must be {expected.__name__} fields")
        require(len(self.inputs) > 0 and len(self.outputs) > 0, "an encoder needs at least one input and one output")
        for label in self.labels:
            require(label in self.label_map, f"label_map lacks the model label {label!r}")
        for source, target in self.label_map.items():
            require(target in CANONICAL_LABELS or target == source,
                    f"label_map.{source} = {target!r}: expected a canonical label "
                    f"({', '.join(CANONICAL_LABELS)}) or {source!r} itself")

    @property
    def class_output(self) -> TensorInfo | None:
        """The probs/logits output, if the encoder has one."""
        return next((o for o in self.outputs if o.kind in ("probs", "logits")), None)

    @property
    def labels(self) -> tuple[str, ...]:
        out = self.class_output
        return out.labels if out is not None else ()


@dataclass(frozen=True)
class DetectorSpec:
    """A face detector network shipped in the bundle: files per precision, tensors, decoding, provenance.

    Its name is a detector kind (``face.detector.kind``) that runs a network, such as ``blazeface``.
    """

    models: dict[str, FileEntry]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    decoding: BlazeFaceDecoding
    provenance: Provenance
    metrics: tuple[Metric, ...] = ()
    description: str = ""
    precisions: dict[str, PrecisionReport] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_precisions(self.models, self.precisions)
        require(len(self.inputs) == 1, f"a detector has one image input, got {len(self.inputs)}")
        require(len(self.outputs) >= 2, f"a detector has box and score outputs, got {len(self.outputs)}")


@dataclass(frozen=True)
class AffectSpace:
    """Valence/arousal coordinates in [-1, 1] for every label decisions can carry."""

    valence_arousal: dict[str, tuple[float, float]]
    source: str

    def __post_init__(self) -> None:
        missing = [label for label in CANONICAL_LABELS if label not in self.valence_arousal]
        require(not missing, f"valence_arousal lacks canonical labels {missing}")
        for label, (v, a) in self.valence_arousal.items():
            require(-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0, f"valence_arousal.{label} = {[v, a]} must lie in [-1, 1]")


@dataclass(frozen=True)
class FusionHead:
    """A learned fusion model over per-modality outputs (ONNX, quantizable like encoders)."""

    models: dict[str, FileEntry]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    #: Export gate results per precision, as for encoders (``auto`` precision reads them).
    precisions: dict[str, PrecisionReport] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_precisions(self.models, self.precisions, "fusion head models")


#: The name of ``fusion.head`` when a manifest gives none (bundles made before heads had names).
DEFAULT_HEAD_NAME = "stacked"
MAX_HEADS = 16


@dataclass(frozen=True)
class FusionSpec:
    """How the daemon fuses encoder results: the rule, per-encoder weights, smoothing, the learned heads.

    ``head`` is the default head (named ``head_name``) and ``heads`` the other
    shipped heads by name; ``fusion.head`` of a run (``--fusion-head``) picks
    one of :meth:`named_heads`. Each head's inputs say which encoder outputs it
    consumes (:mod:`edge_mer.fusion.learned`).
    """

    #: A name in :data:`edge_mer.fusion.registry.RULES`, checked when the fusion is built (and by ``info --bundle``).
    rule: str = "weighted_mean"
    weights: dict[str, float] = field(default_factory=dict)
    smoothing_half_life_s: float = 1.0
    head: FusionHead | None = None
    notes: str = ""
    head_name: str = DEFAULT_HEAD_NAME
    heads: dict[str, FusionHead] = field(default_factory=dict)

    def named_heads(self) -> dict[str, FusionHead]:
        """Every shipped head by name, the default first."""
        return ({self.head_name: self.head} if self.head is not None else {}) | dict(self.heads)

    def __post_init__(self) -> None:
        require(bool(_NAME.match(self.head_name)), f"head_name {_short(self.head_name)} must be 1..64 letters, "
                "digits, '_', '.' or '-'")
        require(len(self.heads) < MAX_HEADS, f"heads names {len(self.heads)} heads, expected at most {MAX_HEADS - 1}")
        require(self.head is not None or not self.heads, "heads needs a default head in fusion.head")
        require(self.head_name not in self.heads, f"heads.{self.head_name} repeats the default head's name")
        for name in self.heads:
            require(bool(_NAME.match(name)), f"heads: name {_short(name)} must be 1..64 letters, digits, '_', '.' "
                    "or '-', not starting with '.' or '-'")
        for name, w in self.weights.items():
            require(0.0 <= w < math.inf, f"weights.{key_text(name)} must be a finite number >= 0, got {w}")
        require(0.0 <= self.smoothing_half_life_s <= MAX_HALF_LIFE_S,
                f"smoothing_half_life_s must be in 0..{MAX_HALF_LIFE_S:g} s, got {self.smoothing_half_life_s}")
        require(bool(self.rule), "rule must name a fusion rule")


@dataclass(frozen=True)
class Manifest:
    """The whole bundle manifest."""

    format: str
    name: str
    version: str
    encoders: dict[str, EncoderSpec]
    affect: AffectSpace
    fusion: FusionSpec = field(default_factory=FusionSpec)
    description: str = ""
    #: Face detector networks by kind (``blazeface``); detectors without a network (Haar) need none.
    detectors: dict[str, DetectorSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.format == FORMAT, f"format {self.format!r} is not supported (this edge-mer reads {FORMAT})")
        require(len(self.encoders) > 0, "a bundle needs at least one encoder")
        for name, encoder in self.encoders.items():
            require(bool(_NAME.match(name)), f"encoders: name {_short(name)} must be 1..64 letters, digits, "
                    "'_', '.' or '-', not starting with '.' or '-'")
            for target in set(encoder.label_map.values()):
                require(target in self.affect.valence_arousal,
                        f"encoders.{name}: label {target!r} has no affect.valence_arousal coordinates")
        unknown = sorted(set(self.fusion.weights) - set(self.encoders))
        require(not unknown, f"fusion.weights names unknown encoder {unknown[0] if unknown else ''!r}")
        for name in self.detectors:
            require(bool(_NAME.match(name)), f"detectors: name {_short(name)} must be 1..64 letters, digits, "
                    "'_', '.' or '-', not starting with '.' or '-'")

    def files(self) -> list[FileEntry]:
        """Every model file the manifest references (each entry lists its external-data files)."""
        entries = [f for e in self.encoders.values() for f in e.models.values()]
        entries += [f for d in self.detectors.values() for f in d.models.values()]
        entries += [f for h in self.fusion.named_heads().values() for f in h.models.values()]
        return entries
