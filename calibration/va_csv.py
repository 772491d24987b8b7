"""Valence/arousal-labelled samples: a CSV of ``path,valence,arousal`` rows, through the runtime's preprocessing.

Format: a UTF-8 CSV whose header is exactly ``path,valence,arousal``; one row
per sample, ``path`` a file relative to the CSV's directory (no absolute
paths, no ``..``, no link out of that directory): an already-cropped face
image (``.png .jpg .jpeg .bmp .pgm``) for a face encoder, a sound file
(``.wav .flac``) for a speech encoder; ``valence`` and ``arousal`` numbers
in [-1, 1]. At most :data:`MAX_ROWS` rows and :data:`MAX_CSV_BYTES` bytes.

Images go through :func:`edge_mer.preprocess.face.prepare_crops`, as
:func:`edge_mer_calibration.face.read_face_folder` does; sound files are
read by :func:`edge_mer_calibration.speech.read_pcm` (the samples the WAV
source delivers) and :class:`~edge_mer.preprocess.audio.AudioPreprocessor`,
whole file per row. A sound file the preprocessor refuses (silence, too
short) is skipped and counted in the log, as the speech readers do. Each bad
row is one :class:`InputError` line naming the file, the row and the value.
"""
from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import InputError
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.face import prepare_crops
from edge_mer_calibration.face import IMAGE_SUFFIXES
from edge_mer_calibration.samples import Sample
from edge_mer_calibration.speech import WAV_SUFFIXES, read_pcm

log = logging.getLogger(__name__)

HEADER = ("path", "valence", "arousal")
MAX_ROWS = 50_000
MAX_CSV_BYTES = 16 << 20
MAX_PATH_CHARS = 1024
_SUFFIXES = {"face": IMAGE_SUFFIXES, "speech": WAV_SUFFIXES}


@dataclass(frozen=True)
class VaSamples:
    """Model-ready samples (label None) and their ``[n, 2]`` valence/arousal targets, row by row."""

    samples: list[Sample]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, rows: list[int]) -> VaSamples:
        """The samples at ``rows`` (in that order)."""
        return VaSamples([self.samples[i] for i in rows], self.targets[np.asarray(rows, dtype=np.int64)])


def is_va_csv(path: str | Path) -> bool:
    """Whether ``path`` is a ``.csv`` file whose first line is the V/A header (``path,valence,arousal``)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline(256)
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(part.strip() for part in first.strip().split(",")) == HEADER


def _number(text: str, what: str, where: str) -> float:
    """A valence or arousal field as a float in [-1, 1] (InputError naming the row)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise InputError(f"{where}: {what} {text[:40]!r} is not a number in [-1, 1]")
    return value


def _sample_file(root: Path, text: str, modality: str, where: str) -> Path:
    """``root/text`` after checking it stays inside ``root`` and has a suffix the modality reads."""
    shown = repr(text[:80])
    pure = PurePosixPath(text)
    if (not text or len(text) > MAX_PATH_CHARS or "\\" in text or any(ch < " " for ch in text)
            or pure.is_absolute() or ".." in pure.parts):
        raise InputError(f"{where}: path {shown} must be a relative path inside {root}, without '..'")
    if pure.suffix.lower() not in _SUFFIXES[modality]:
        raise InputError(f"{where}: path {shown} is not a {modality} sample file "
                         f"({' '.join(_SUFFIXES[modality])})")
    path = (root / pure).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"{where}: path {shown} leads out of {root}")
    if not path.is_file():
        raise InputError(f"{where}: path {shown} does not exist")
    return path


def _face_array(path: Path, spec: EncoderSpec, where: str) -> np.ndarray:
    """An already-cropped face image prepared as the runtime prepares crops."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{where}: cannot decode image {path.name}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return prepare_crops([image], spec.preprocessing)[0]


def _check_shape(array: np.ndarray, spec: EncoderSpec, where: str) -> None:
    """Refuse a preprocessed array that does not fit the encoder's input."""
    tensor = spec.inputs[0]
    expected = tensor.shape[1:]
    if array.ndim != len(expected) or any(isinstance(e, int) and e != d for e, d in zip(expected, array.shape)):
        raise InputError(f"{where}: preprocessed shape {list(array.shape)} does not fit input {tensor.name} "
                         f"{list(tensor.shape)} (batch axis first)")


def _rows(path: Path, max_rows: int) -> list[tuple[int, list[str]]]:
    """``(line, fields)`` of every data row after checking the size and the header."""
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise InputError(f"V/A CSV {path} is {size} bytes, at most {MAX_CSV_BYTES}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise InputError(f"V/A CSV {path}: header {header!r:.80}, expected {','.join(HEADER)}")
            rows = []
            for fields in reader:
                if not fields:
                    continue
                if len(rows) >= max_rows:
                    raise InputError(f"V/A CSV {path} has more than {max_rows} rows")
                rows.append((reader.line_num, fields))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"V/A CSV {path} is not a readable UTF-8 CSV: {str(exc)[:120]}") from None
    if not rows:
        raise InputError(f"V/A CSV {path} has no rows after its header")
    return rows


def read_va_csv(path: str | Path, spec: EncoderSpec, max_rows: int = MAX_ROWS) -> VaSamples:
    """The samples and valence/arousal targets of the CSV at ``path`` for encoder ``spec`` (format above)."""
    path = Path(path)
    if spec.modality not in _SUFFIXES:
        raise InputError(f"V/A CSV {path}: rows are face images or sound files; a {spec.modality} encoder "
                         "cannot read them")
    if not path.is_file():
        raise InputError(f"V/A CSV {path} does not exist")
    root = path.parent.resolve()
    pre = AudioPreprocessor(spec.preprocessing) if spec.modality == "speech" else None
    samples, targets, skipped = [], [], Counter()
    for line, fields in _rows(path, max_rows):
        where = f"{path} row {line}"
        if len(fields) != len(HEADER):
            raise InputError(f"{where}: {len(fields)} fields, expected {len(HEADER)} ({','.join(HEADER)})")
        file = _sample_file(root, fields[0].strip(), spec.modality, where)
        va = (_number(fields[1].strip(), "valence", where), _number(fields[2].strip(), "arousal", where))
        if pre is None:
            array = _face_array(file, spec, where)
        else:
            data, rate = read_pcm(file)
            array = pre.process(data, rate)
            if isinstance(array, Invalid):
                skipped[array.reason] += 1
                continue
        _check_shape(array, spec, where)
        samples.append(Sample(array, None, f"{path.name}:{line}"))
        targets.append(va)
    if not samples:
        raise InputError(f"V/A CSV {path}: no usable rows (skipped: {dict(skipped)})")
    log.info("%s: %d valence/arousal samples; skipped: %s", path, len(samples), dict(skipped) or "none")
    return VaSamples(samples, np.asarray(targets, dtype=np.float64))
