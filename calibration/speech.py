"""Speech readers: WAV folders (class sub-folders or EMO-DB names) and session audio, through AudioPreprocessor.

Every array comes from :meth:`edge_mer.preprocess.audio.AudioPreprocessor.process`,
the daemon's own speech preprocessing. The samples handed to it are the ones
the runtime sources deliver for the same file:

* WAV folders: 16-bit PCM is read with soundfile as int16 (24/32-bit PCM as
  int32), the samples a microphone hands over; :func:`~edge_mer.preprocess.audio.to_mono`
  scales them by 1/32768 (1/2**31) into float32, which is exactly what the WAV
  and replay sources deliver (libsndfile reads PCM as float64 with the same
  scale, and a float32 of those values survives ``to_mono`` unchanged), so
  the features are byte-identical. Other encodings (float, 8-bit, compressed)
  are read as float64, as the sources read them.
* Sessions: the audio is decoded by the daemon's
  :class:`~edge_mer.sessions.replay.AudioReplaySource` itself (which reads
  through :class:`~edge_mer.sources.wav.SoundFileReader`, as the WAV source does).

Windows the preprocessor refuses (:class:`~edge_mer.preprocess.base.Invalid`:
silence, too short) are skipped and counted in the log.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import soundfile

from edge_mer.errors import ConfigError, InputError, SensorError
from edge_mer.preprocess.audio import AudioParams, AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.sessions.format import load_session
from edge_mer.sessions.replay import AudioReplaySource
from edge_mer_calibration.samples import Sample, session_with

log = logging.getLogger(__name__)

WAV_SUFFIXES = (".wav", ".flac")

#: EMO-DB's emotion letter (6th character of ``SSTTTEV.wav``) -> canonical label.
EMODB_LETTERS: dict[str, str] = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy",
                                 "T": "sad", "N": "neutral"}

#: Class folder names of common speech-emotion datasets (EMO-DB exports, RAVDESS/TESS/CREMA-D
#: sorted by class) -> canonical labels. ``boredom`` is EMO-DB's extra class, kept by name.
FOLDER_LABELS: dict[str, str] = {
    "anger": "angry", "angry": "angry", "ang": "angry", "wut": "angry",
    "boredom": "boredom", "bored": "boredom", "langeweile": "boredom",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "ekel": "disgust",
    "fear": "fear", "fearful": "fear", "fea": "fear", "angst": "fear",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy", "freude": "happy",
    "sad": "sad", "sadness": "sad", "trauer": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "neutral": "neutral", "neu": "neutral",
}

_EMODB_NAME = re.compile(r"^(?P<speaker>\d{2})[a-z]\d{2}(?P<emotion>[WLEAFTN])[a-z]\.wav$")
#: Subtypes read as integers (the samples a PCM microphone delivers); everything else as float64.
_INT_SUBTYPES = {"PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32"}


def emodb_parts(name: str) -> tuple[str, str] | None:
    """``(speaker, canonical label)`` of an EMO-DB file name such as ``03a01Fa.wav``, or None."""
    match = _EMODB_NAME.match(name)
    return (match["speaker"], EMODB_LETTERS[match["emotion"]]) if match else None


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """Samples (``[n]`` or ``[n, channels]``) and rate of a sound file; int16/int32 for PCM (see module doc)."""
    try:
        info = soundfile.info(str(path))
        dtype = _INT_SUBTYPES.get(info.subtype, "float64")
        data, rate = soundfile.read(str(path), dtype=dtype)
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError derives from RuntimeError
        raise InputError(f"cannot read sound file {path} ({exc}); expected a WAV file") from None
    return data, int(rate)


def _windows(n: int, rate: int, window_s: float | None, hop_s: float | None) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges: the whole signal, or ``window_s`` windows every ``hop_s``."""
    if window_s is None:
        return [(0, n)]
    size = int(round(window_s * rate))
    step = int(round((hop_s if hop_s is not None else window_s) * rate))
    if size < 1 or step < 1:
        raise InputError(f"window_s={window_s} / hop_s={hop_s} give no samples at {rate} Hz")
    return [(start, start + size) for start in range(0, n - size + 1, step)]


def _check_timing(window_s: float | None, hop_s: float | None) -> None:
    if window_s is not None and not window_s > 0:
        raise InputError(f"window_s must be > 0 seconds or None (whole files), got {window_s}")
    if hop_s is not None and not hop_s > 0:
        raise InputError(f"hop_s must be > 0 seconds or None, got {hop_s}")


def _wav_files(root: Path, labels: Mapping[str, str]) -> list[tuple[Path, str, str | None]]:
    """``(file, label, group)`` for class sub-folders, else for EMO-DB-named files directly in ``root``."""
    folders = sorted(p for p in root.iterdir() if p.is_dir()
                     and any(f.suffix.lower() in WAV_SUFFIXES for f in p.iterdir()))
    found: list[tuple[Path, str, str | None]] = []
    if folders:
        for folder in folders:
            label = labels.get(folder.name.lower())
            if label is None:
                log.info("skipping %s: no label mapping for folder %r", folder, folder.name)
                continue
            for path in sorted(f for f in folder.iterdir() if f.suffix.lower() in WAV_SUFFIXES):
                parts = emodb_parts(path.name)
                found.append((path, label, parts[0] if parts else None))
        return found
    files = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in WAV_SUFFIXES)
    named = [(f, emodb_parts(f.name)) for f in files]
    found = [(f, parts[1], parts[0]) for f, parts in named if parts is not None]
    if len(found) < len(files):
        log.info("%s: %d sound files without an EMO-DB name (SSTTTEV.wav) skipped", root, len(files) - len(found))
    return found


def read_wav_folder(root: str | Path, params: AudioParams, window_s: float | None = None,
                    hop_s: float | None = None, labels: Mapping[str, str] | None = None) -> Iterator[Sample]:
    """Labelled speech features from a folder of sound files, in sorted order.

    Layouts: ``root/<class>/*.wav`` (folder names mapped through ``labels``,
    default :data:`FOLDER_LABELS`, case-insensitive; unmapped folders skipped),
    or EMO-DB files directly in ``root`` (label from the 6th character,
    :data:`EMODB_LETTERS`). ``group`` is the EMO-DB speaker (first two
    characters) when the name follows EMO-DB, else None.

    Without ``window_s`` each file is one sample (the whole file); with it,
    files are cut into ``window_s`` windows every ``hop_s`` (default
    ``window_s``) as the daemon's ring buffer would hand them over; files
    shorter than one window give nothing. ``source`` is ``<path>`` or
    ``<path>@<start seconds>``.
    """
    root = Path(root)
    _check_timing(window_s, hop_s)
    if not root.is_dir():
        raise InputError(f"WAV folder {root} does not exist")
    files = _wav_files(root, {k.lower(): v for k, v in (labels or FOLDER_LABELS).items()})
    if not files:
        raise InputError(f"no labelled sound files in {root}; expected {root}/<class>/*.wav or EMO-DB names "
                         "(SSTTTEV.wav, 6th character one of W L E A F T N)")
    pre = AudioPreprocessor(params)
    skipped: Counter[str] = Counter()
    kept = 0
    for path, label, group in files:
        data, rate = read_pcm(path)
        spans = _windows(data.shape[0], rate, window_s, hop_s)
        if not spans:
            skipped["shorter than window_s"] += 1
        for start, end in spans:
            features = pre.process(data[start:end], rate)
            if isinstance(features, Invalid):
                skipped[features.reason] += 1
                continue
            kept += 1
            source = str(path) if window_s is None else f"{path}@{start / rate:g}"
            yield Sample(features, label, source, group)
    log.info("%s: %d speech samples from %d files; skipped: %s", root, kept, len(files),
             dict(skipped) or "none")


def session_audio(session_dir: str | Path) -> tuple[np.ndarray, int]:
    """A session's audio as the daemon's replay source delivers it: float32 mono at the file's rate."""
    try:
        session = load_session(session_dir)
        source = AudioReplaySource(session, pace=False)
        with source:
            chunks = [chunk.data for chunk in source]
    except (ConfigError, SensorError) as exc:
        raise InputError(f"session {session_dir}: {exc}") from None
    if not chunks:
        raise InputError(f"session {session_dir}: its audio file holds no samples")
    return np.concatenate(chunks), source.rate


def read_session_audio(session_dir: str | Path, params: AudioParams, window_s: float = 2.0,
                       hop_s: float | None = None) -> Iterator[Sample]:
    """Labelled windows of a session's audio: ``window_s`` every ``hop_s`` (default ``window_s``).

    The samples are those the daemon's replay source delivers; each window is
    labelled by :meth:`Session.label_at` at its newest sample's time (the
    time the daemon stamps it with), and windows there without a label are
    skipped. ``group`` is the session directory name; ``source`` is
    ``<audio path>@<start seconds>``.
    """
    _check_timing(window_s, hop_s)
    root = Path(session_dir)
    session = session_with(root, "audio")
    samples, rate = session_audio(root)
    pre = AudioPreprocessor(params)
    skipped: Counter[str] = Counter()
    for start, end in _windows(samples.shape[0], rate, window_s, hop_s):
        label = session.label_at((end - 1) / rate)
        if label is None:
            skipped["no label"] += 1
            continue
        features = pre.process(samples[start:end], rate)
        if isinstance(features, Invalid):
            skipped[features.reason] += 1
            continue
        yield Sample(features, label, f"{session.path('audio')}@{start / rate:g}", root.name)
    log.info("%s: speech windows skipped: %s", root, dict(skipped) or "none")
