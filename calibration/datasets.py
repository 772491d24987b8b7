"""One entry point for every reader: detect a dataset's layout, read it for an encoder, sample it.

:func:`open_dataset` picks the reader from the encoder's modality and the
path (rules in its docstring), checks every sample against the encoder's
input tensor, and drops samples whose label the encoder cannot output.
:func:`stratified_sample` and :func:`split_by_group` choose subsets
reproducibly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import InputError
from edge_mer.sessions.format import SESSION_JSON, load_session
from edge_mer_calibration.eeg import is_gu_file, read_brainflow_file, read_gu_folder, read_session_eeg
from edge_mer_calibration.face import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_face_folder, read_face_video,
                                       read_fer_csv)
from edge_mer_calibration.samples import Sample, session_with
from edge_mer_calibration.speech import WAV_SUFFIXES, read_session_audio, read_wav_folder

log = logging.getLogger(__name__)

#: Every option :func:`open_dataset` accepts; each layout uses the ones that apply to it.
OPTIONS: dict[str, str] = {
    "hop_s": "seconds between windows (EEG; speech sessions and windowed WAV folders)",
    "window_s": "speech window in seconds (sessions default 2.0; WAV folders default whole files)",
    "every_n": "face video: keep every n-th frame",
    "detector": "face video: a FaceDetectorOptions (default Haar)",
    "label": "label for every sample of a video or BrainFlow file",
    "labels": "class folder name -> canonical label table (face and WAV folders)",
    "usage": "FER CSV: keep rows with this Usage",
    "board": "BrainFlow board id or BoardIds name of a BrainFlow .csv file",
    "board_id": "alias of board",
    "keep_all_labels": "keep samples whose label the encoder cannot output (default False)",
}

_LAYOUTS = {
    "face": "a folder of class folders of images, a FER2013 .csv, a video file or a session directory",
    "speech": "a folder of WAVs (class sub-folders or EMO-DB names) or a session directory with audio",
    "eeg": "a folder of GU sub<S>t<T><E>.mat files, a session directory with eeg, or a BrainFlow .csv "
           "(with the board option)",
}

Reader = Callable[[], Iterator[Sample]]


def _has_children(folder: Path, suffixes: tuple[str, ...]) -> bool:
    return any(f.is_file() and f.suffix.lower() in suffixes for f in folder.iterdir())


def _class_folders(root: Path, suffixes: tuple[str, ...]) -> bool:
    return any(p.is_dir() and _has_children(p, suffixes) for p in root.iterdir())


def _is_session(path: Path, key: str) -> bool:
    """Whether ``path`` is a session directory; InputError when it is one without a ``key`` file."""
    if not (path.is_dir() and (path / SESSION_JSON).is_file()):
        return False
    session_with(path, key)
    return True


def _face_reader(path: Path, spec: EncoderSpec, o: Mapping[str, Any]) -> tuple[str, Reader] | None:
    params = spec.preprocessing
    if _is_session(path, "video"):
        video = load_session(path).path("video")
        return "session video", lambda: read_face_video(video, params, o.get("detector"), o.get("every_n", 1))
    if path.is_dir() and _class_folders(path, IMAGE_SUFFIXES):
        return "image class folders", lambda: read_face_folder(path, params, o.get("labels"))
    if path.is_file() and path.suffix.lower() == ".csv":
        return "FER2013 CSV", lambda: read_fer_csv(path, params, o.get("usage"))
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return "video file", lambda: read_face_video(path, params, o.get("detector"), o.get("every_n", 1),
                                                     o.get("label"))
    return None


def _speech_reader(path: Path, spec: EncoderSpec, o: Mapping[str, Any]) -> tuple[str, Reader] | None:
    params = spec.preprocessing
    if _is_session(path, "audio"):
        return "session audio", lambda: read_session_audio(path, params, o.get("window_s") or 2.0, o.get("hop_s"))
    if path.is_dir() and (_class_folders(path, WAV_SUFFIXES) or _has_children(path, WAV_SUFFIXES)):
        window_s = o.get("window_s")
        hop_s = o.get("hop_s") if window_s is not None else None  # whole files unless windows are asked for
        return "WAV folder", lambda: read_wav_folder(path, params, window_s, hop_s, o.get("labels"))
    return None


def _eeg_reader(path: Path, spec: EncoderSpec, o: Mapping[str, Any]) -> tuple[str, Reader] | None:
    params = spec.preprocessing
    hop_s = o.get("hop_s") or 2.0
    if _is_session(path, "eeg"):
        return "session EEG", lambda: read_session_eeg(path, params, hop_s)
    if path.is_dir() and any(is_gu_file(f.name) for f in path.iterdir()):
        return "GU .mat folder", lambda: read_gu_folder(path, params, hop_s)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        board = o.get("board")
        if board is None or board == "":
            board = o.get("board_id")  # board ids start at -1 (SYNTHETIC_BOARD) and 0 (CYTON_BOARD): test for None
        if board is None or board == "":
            raise InputError(f"{path}: a BrainFlow file needs the board option (a BoardIds name such as "
                             "SYNTHETIC_BOARD or CYTON_BOARD, or its number)")
        return "BrainFlow file", lambda: read_brainflow_file(path, board, params, hop_s, o.get("label"))
    return None


_DETECTORS = {"face": _face_reader, "speech": _speech_reader, "eeg": _eeg_reader}


def open_dataset(path: Path, spec: EncoderSpec, **options: Any) -> Iterator[Sample]:
    """Samples of the dataset at ``path`` prepared for ``spec`` (its preprocessing), in a reproducible order.

    Layout detection (first match wins):

    * any modality: a directory with ``session.json`` is a session; its
      ``video`` / ``audio`` / ``eeg`` file is read with the session's labels;
    * face: a directory with class sub-folders of images
      (:func:`read_face_folder`); a ``.csv`` file (FER2013 rows,
      :func:`read_fer_csv`); a video file (``.mp4 .avi .mov .mkv .webm .m4v``,
      :func:`read_face_video`);
    * speech: a directory with class sub-folders of WAVs, or WAVs with EMO-DB
      names (:func:`read_wav_folder`);
    * eeg: a directory with GU ``sub<S>t<T><E>.mat`` files
      (:func:`read_gu_folder`); a ``.csv``/``.tsv``/``.txt`` BrainFlow file with
      the ``board`` option (:func:`read_brainflow_file`).

    Options are listed in :data:`OPTIONS`; each layout ignores the ones that
    do not apply. Layout errors (missing path, nothing recognisable, unknown
    option) raise :class:`InputError` here, before the first sample. Each
    sample is checked against ``spec.inputs[0]`` (rank, fixed sizes, dtype);
    samples labelled with something the encoder cannot output (e.g. CK+
    ``contempt``, EMO-DB ``boredom`` for a 6-class model) are dropped unless
    ``keep_all_labels=True``; unlabelled samples are kept.
    """
    path = Path(path)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown dataset option(s) {', '.join(unknown)}; expected some of {', '.join(OPTIONS)}")
    if not path.exists():
        raise InputError(f"dataset {path} does not exist; expected {_LAYOUTS[spec.modality]}")
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(f"dataset folder {path} is empty; expected {_LAYOUTS[spec.modality]}")
    found = _DETECTORS[spec.modality](path, spec, options)
    if found is None:
        raise InputError(f"{path} is no {spec.modality} dataset layout edge-mer reads; expected "
                         f"{_LAYOUTS[spec.modality]}")
    layout, reader = found
    log.info("%s data %s: %s", spec.modality, path, layout)
    return _checked(reader(), spec, path, bool(options.get("keep_all_labels", False)))


def _expected_shape(spec: EncoderSpec) -> tuple[int | str, ...]:
    return tuple(spec.inputs[0].shape[1:])


def _check_sample(sample: Sample, spec: EncoderSpec, expected: tuple[int | str, ...]) -> None:
    array, tensor = sample.array, spec.inputs[0]
    fits = array.ndim == len(expected) and all(isinstance(e, str) or e == d for e, d in zip(expected, array.shape))
    if not fits:
        raise InputError(f"{sample.source}: preprocessed shape {list(array.shape)} does not fit input "
                         f"{tensor.name} {list(tensor.shape)} (batch axis first); check the encoder's preprocessing")
    if array.dtype != tensor.np_dtype:
        raise InputError(f"{sample.source}: preprocessed dtype {array.dtype} but input {tensor.name} is {tensor.dtype}")


def _checked(samples: Iterator[Sample], spec: EncoderSpec, path: Path, keep_all: bool) -> Iterator[Sample]:
    """``samples`` checked against the input tensor, without labels the encoder lacks (unless ``keep_all``)."""
    expected = _expected_shape(spec)
    outputs = {spec.label_map[label] for label in spec.labels}
    kept, dropped = 0, {}
    for sample in samples:
        _check_sample(sample, spec, expected)
        if not keep_all and sample.label is not None and outputs and sample.label not in outputs:
            dropped[sample.label] = dropped.get(sample.label, 0) + 1
            continue
        kept += 1
        yield sample
    if dropped:
        log.info("%s: dropped samples with labels the encoder lacks: %s", path, dropped)
    if kept == 0:
        log.warning("%s gave no usable samples for the %s encoder", path, spec.modality)


def _label_key(label: str | None) -> tuple[bool, str]:
    return (label is None, label or "")


def _allocate(counts: list[int], size: int) -> list[int]:
    """Per-stratum sample counts summing to ``size`` (< total): proportional, at least one each when possible."""
    total = sum(counts)
    quotas = [size * c / total for c in counts]
    alloc = [int(q) for q in quotas]
    if size >= len(counts):
        alloc = [max(a, 1) for a in alloc]
    while sum(alloc) > size:  # the minimum of one overshot: take back where the allocation most exceeds its quota
        i = max((j for j in range(len(alloc)) if alloc[j] > 1), key=lambda j: (alloc[j] - quotas[j], -j))
        alloc[i] -= 1
    while sum(alloc) < size:  # largest remainder first; ties go to the earlier label
        i = max((j for j in range(len(alloc)) if alloc[j] < counts[j]), key=lambda j: (quotas[j] - alloc[j], -j))
        alloc[i] += 1
    return alloc


def stratified_sample(samples: Iterable[Sample], size: int, seed: int = 0) -> list[Sample]:
    """``size`` samples drawn per label in proportion to the label counts (``size`` 0: all of them).

    Every label (None counts as one) gets at least one sample when ``size``
    allows; the remainder goes by largest fractional quota. Within a label the
    choice is ``numpy.random.default_rng(seed)``; the result keeps the input
    order, so the same samples, size and seed always give the same list.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputError(f"size must be an integer >= 0 (0 = all), got {size!r}")
    items = list(samples)
    if size == 0 or size >= len(items):
        return items
    strata: dict[str | None, list[int]] = {}
    for i, sample in enumerate(items):
        strata.setdefault(sample.label, []).append(i)
    keys = sorted(strata, key=_label_key)
    alloc = _allocate([len(strata[k]) for k in keys], size)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for key, n in zip(keys, alloc):
        members = strata[key]
        chosen.extend(members[j] for j in rng.choice(len(members), size=n, replace=False))
    return [items[i] for i in sorted(chosen)]


def split_by_group(samples: Iterable[Sample], groups: Iterable[str]) -> tuple[list[Sample], list[Sample]]:
    """``(samples of the named groups, all others)``, each in input order, e.g. to hold speakers out.

    Raises :class:`InputError` when ``groups`` is empty or names a group no
    sample has (the message lists the groups present).
    """
    wanted = set(groups)
    if not wanted:
        raise InputError("groups is empty; expected at least one speaker or subject")
    items = list(samples)
    present = {s.group for s in items if s.group is not None}
    missing = sorted(wanted - present)
    if missing:
        raise InputError(f"group(s) {', '.join(missing)} not in the samples; present: "
                         f"{', '.join(sorted(present)) or 'none (samples have no groups)'}")
    selected = [s for s in items if s.group in wanted]
    return selected, [s for s in items if s.group not in wanted]
