"""The recorded-session format: a directory with ``session.json`` and up to three media files.

``session.json`` (format ``edge-mer-session/1``)::

    {"format": "edge-mer-session/1", "video": "video.avi", "audio": "audio.wav",
     "eeg": "eeg.csv", "eeg_sampling_rate": 128,
     "labels": [{"start": 0.0, "end": 4.0, "label": "happy"}],
     "recording": {"complete": true, "start_unix_s": 1714550000.25}}

Every key except ``format`` is optional; a file key set to ``null`` counts as
absent. Unknown keys (top level and inside a label) are accepted, ignored and
kept in :attr:`Session.extra` / :attr:`Label.extra`, so re-writing a loaded
session loses nothing. Times are seconds from the session start. Labels are
half-open intervals ``[start, end)`` that must not overlap (:meth:`Session.label_at`).

Sessions are untrusted. A file name is a path relative to the session
directory that stays inside it: absolute paths, ``..`` and symbolic links are
refused. ``eeg_sampling_rate`` is 1..100000 Hz; label times are 0..1e6 s
(``MAX_SESSION_S``); at most 100000 labels of at most 200 characters.
``session.json`` is read by :func:`edge_mer.config.read_json` (<= 4 MiB, <= 32 deep).

``recording`` (written by :class:`~edge_mer.sessions.record.SessionRecorder`;
optional, informational): ``complete`` is false while recording and true once
the recorder closed its files (a killed recording keeps false; its files end
where it stopped); ``start_unix_s`` is the wall-clock time of session time 0
(absent until the first chunk).

Media, as the replay sources read them (:mod:`edge_mer.sessions.replay`):

* ``video``: any file OpenCV can read; frame ``i`` is at ``i / fps``. Recordings
  are MJPEG in AVI (``video.avi``; recordings before it wrote ``video.mp4``).
* ``audio``: a WAV (or any file libsndfile reads), PCM or float, 4000..384000 Hz,
  mono or multi-channel (mixed down as :func:`edge_mer.preprocess.audio.to_mono` does).
* ``eeg``: CSV with a header row of channel names (10-20 names such as ``Fz``)
  and optionally a ``timestamp`` column in seconds from the session start; one
  row per sample. The sampling rate is ``eeg_sampling_rate`` or, when that is
  absent, derived from the timestamps; with neither, loading fails.

:func:`load_session` validates everything it can without decoding the media
(file locations, the EEG header: :mod:`edge_mer.sessions.eeg_csv`) and raises :class:`~edge_mer.errors.ConfigError`
with a one-line message naming the bad key, never quoting a media file's
content. :func:`write_session_json` writes the file atomically after checking
it with the same parser.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edge_mer.config import read_json
from edge_mer.errors import ConfigError
from edge_mer.sessions.eeg_csv import TIMESTAMP_COLUMN, read_eeg_header

FORMAT = "edge-mer-session/1"
SESSION_JSON = "session.json"
FILE_KEYS: dict[str, str] = {"video": "face", "audio": "speech", "eeg": "eeg"}  # key -> modality
EEG_RATE_HZ = (1, 100_000)  # allowed eeg_sampling_rate, inclusive
MAX_SESSION_S = 1e6  # ~11.6 days: a later time is a mistake (or an epoch time), not seconds from the start
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 200
#: A file system's limit on one name (NAME_MAX on Linux).
MAX_PART_BYTES = 255
MAX_NAME_CHARS = 1024  # a file name in session.json
_MAX_UNIX_S = 1e11  # recording.start_unix_s: year ~5138
_KNOWN_KEYS = ("format", *FILE_KEYS, "eeg_sampling_rate", "labels")
_LABEL_KEYS = ("start", "end", "label")


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 2**63 if isinstance(value, int) else math.isfinite(value)  # JSON ints have no bound


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Label:
    """Ground truth for ``[start, end)`` seconds of the session; ``extra`` keeps unknown keys."""

    start: float
    end: float
    label: str
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        where = f"label {_shown(self.label)}"
        if not isinstance(self.label, str) or not self.label.strip():
            raise ConfigError(f"{where}: expected a non-empty string")
        if len(self.label) > MAX_LABEL_CHARS or not self.label.isprintable():
            raise ConfigError(f"{where}: expected at most {MAX_LABEL_CHARS} printable characters")
        for name in ("start", "end"):
            value = getattr(self, name)
            if not _is_number(value):
                raise ConfigError(f"{where}: {name}={_shown(value)}, expected a finite number of seconds")
            if value > MAX_SESSION_S:
                raise ConfigError(f"{where}: {name}={value:g}, expected a time in 0..{MAX_SESSION_S:g} s")
        if self.start < 0:
            raise ConfigError(f"{where}: start={self.start}, expected a time >= 0 s")
        if self.end <= self.start:
            raise ConfigError(f"{where}: end={self.end} <= start={self.start}, expected end > start")

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label, **dict(self.extra)}


@dataclass(frozen=True)
class Session:
    """A parsed ``session.json``: the directory, the file names it references and its labels.

    ``video``/``audio``/``eeg`` are the names as written in the JSON (relative to
    ``root``) or None; :meth:`path` resolves them. ``eeg_sampling_rate`` keeps
    the JSON's number type (128 stays an int). Construct with
    :func:`load_session`; direct construction validates values but not files.
    """

    root: Path
    video: str | None = None
    audio: str | None = None
    eeg: str | None = None
    eeg_sampling_rate: float | None = None
    labels: tuple[Label, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    format: str = FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.format != FORMAT:
            raise ConfigError(f"format={_shown(self.format)}: expected {FORMAT!r}")
        for key in FILE_KEYS:
            _check_name(key, getattr(self, key))
        rate = self.eeg_sampling_rate
        low, high = EEG_RATE_HZ
        if rate is not None and (not _is_number(rate) or not low <= rate <= high):
            raise ConfigError(f"eeg_sampling_rate={_shown(rate)}: expected a number of Hz in {low}..{high}")
        _check_recording(self.extra.get("recording"))
        for i, item in enumerate(self.labels):
            if not isinstance(item, Label):
                raise ConfigError(f"labels[{i}]={_shown(item)}: expected a Label")
        ordered = sorted(self.labels, key=lambda lb: lb.start)
        for before, after in zip(ordered, ordered[1:]):
            if after.start < before.end:
                raise ConfigError(f"label {_shown(after.label)} [{after.start}, {after.end}) overlaps label "
                                  f"{_shown(before.label)} [{before.start}, {before.end}); expected disjoint intervals")
        object.__setattr__(self, "_starts", [lb.start for lb in ordered])
        object.__setattr__(self, "_ordered", tuple(ordered))

    def path(self, key: str) -> Path | None:
        """``root / name`` of ``"video"``, ``"audio"`` or ``"eeg"`` (names are relative); None when absent."""
        if key not in FILE_KEYS:
            raise ConfigError(f"session file key {key!r}: expected one of {', '.join(FILE_KEYS)}")
        name = getattr(self, key)
        return None if name is None else self.root / name

    def file(self, key: str) -> Path | None:
        """:meth:`path`, checked now: a regular file inside ``root`` reached through no symbolic link."""
        path = self.path(key)
        if path is None:
            return None
        name = getattr(self, key)
        where = f"{key}={_shown(name)}"
        step = self.root
        try:
            for part in PurePosixPath(name).parts:
                step = step / part
                if step.is_symlink():
                    raise ConfigError(f"{where}: {step} is a symbolic link; expected a regular file inside the "
                                      "session directory")
            inside = path.resolve().is_relative_to(self.root.resolve())
            regular = path.is_file()
        except (OSError, RuntimeError) as exc:  # a name the file system refuses, a symlink loop
            raise ConfigError(f"{where}: cannot be looked up ({type(exc).__name__}: "
                              f"{getattr(exc, 'strerror', None) or exc}); expected a file inside the session "
                              "directory") from None
        if not inside:
            raise ConfigError(f"{where}: resolves outside the session directory {self.root}")
        if not regular:
            raise ConfigError(f"{where}: file {path} does not exist (or is not a regular file)")
        return path

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities with a file, in the order face, speech, eeg."""
        return tuple(mod for key, mod in FILE_KEYS.items() if getattr(self, key) is not None)

    def label_at(self, t_s: float) -> str | None:
        """The label whose ``[start, end)`` contains ``t_s`` seconds, or None."""
        i = bisect.bisect_right(self._starts, t_s) - 1  # type: ignore[attr-defined]
        if i < 0:
            return None
        label = self._ordered[i]  # type: ignore[attr-defined]
        return label.label if t_s < label.end else None

    def to_json(self) -> dict[str, Any]:
        """The ``session.json`` mapping (known keys first, then the unknown keys kept from loading)."""
        out: dict[str, Any] = {"format": self.format}
        for key in FILE_KEYS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.eeg_sampling_rate is not None:
            out["eeg_sampling_rate"] = self.eeg_sampling_rate
        if self.labels:
            out["labels"] = [label.to_json() for label in self.labels]
        for key, value in self.extra.items():
            if key not in out:
                out[key] = value
        return out


def _check_name(key: str, value: object) -> None:
    """A file key's value: None, or a relative path that stays inside the session directory."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={_shown(value)}: expected a file name relative to the session directory, or null")
    parts = PurePosixPath(value).parts
    if (len(value) > MAX_NAME_CHARS or not value.isprintable() or PurePosixPath(value).is_absolute() or ".." in parts
            or any(len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES for part in parts)):
        raise ConfigError(f"{key}={_shown(value)}: expected a file name inside the session directory (no absolute "
                          f"path, no '..', no control characters, at most {MAX_NAME_CHARS} characters and "
                          f"{MAX_PART_BYTES} bytes per name)")


def _check_recording(value: object) -> None:
    """The recorder's ``recording`` object, when present: ``complete`` a bool, ``start_unix_s`` a time."""
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(f"recording={_shown(value)}: expected an object such as {{\"complete\": true}}")
    complete, start = (value or {}).get("complete"), (value or {}).get("start_unix_s")
    if complete is not None and not isinstance(complete, bool):
        raise ConfigError(f"recording.complete={_shown(complete)}: expected true or false")
    if start is not None and (not _is_number(start) or not 0 <= start <= _MAX_UNIX_S):
        raise ConfigError(f"recording.start_unix_s={_shown(start)}: expected seconds since 1970 in 0..{_MAX_UNIX_S:g}")


def _parse_label(i: int, item: object) -> Label:
    if not isinstance(item, Mapping):
        raise ConfigError(f"labels[{i}]={_shown(item)}: expected an object with start, end and label")
    missing = [k for k in _LABEL_KEYS if k not in item]
    if missing:
        raise ConfigError(f"labels[{i}] lacks {', '.join(missing)}: expected start, end (seconds) and label")
    label = item["label"]
    if not isinstance(label, str):
        raise ConfigError(f"labels[{i}].label={_shown(label)}: expected a string such as 'happy', "
                          f"got {type(label).__name__}")
    for key in ("start", "end"):
        if not _is_number(item[key]):
            raise ConfigError(f"labels[{i}].{key}={_shown(item[key])}: expected a finite number of seconds")
    extra = {k: v for k, v in item.items() if k not in _LABEL_KEYS}
    try:
        return Label(item["start"], item["end"], label, extra)
    except ConfigError as exc:
        raise ConfigError(f"labels[{i}]: {exc}") from None


def parse_session(data: object, root: str | Path) -> Session:
    """Validate a parsed ``session.json`` mapping (values only, not files) into a :class:`Session`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{SESSION_JSON}: expected a JSON object, got {type(data).__name__}")
    if "format" not in data:
        raise ConfigError(f"{SESSION_JSON} has no 'format' key: expected \"format\": {json.dumps(FORMAT)}")
    if data["format"] != FORMAT:
        raise ConfigError(f"format={_shown(data['format'])}: expected {FORMAT!r}")
    labels = data.get("labels")
    if labels is None:
        labels = []
    if not isinstance(labels, list):
        raise ConfigError(f"labels={_shown(labels)}: expected a list of {{start, end, label}} objects")
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"labels: {len(labels)} labels, expected at most {MAX_LABELS}")
    extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    return Session(root=Path(root), video=data.get("video"), audio=data.get("audio"), eeg=data.get("eeg"),
                   eeg_sampling_rate=data.get("eeg_sampling_rate"),
                   labels=tuple(_parse_label(i, item) for i, item in enumerate(labels)), extra=extra)


def demo_session_path() -> Path:
    """The demo session in the package: ~8 s of video, speech and synthetic-board EEG (see its SOURCES.md).

    ``edge-mer run`` replays it when no camera or microphone is found.
    """
    return Path(__file__).resolve().parent.parent / "assets" / "demo_session"


def load_session(directory: str | Path) -> Session:
    """Read and validate ``directory/session.json``; every referenced file must exist.

    Raises :class:`ConfigError` naming the problem: no directory or
    ``session.json``, invalid JSON, wrong ``format``, a bad key value, a
    referenced file that is missing, outside the directory or a symbolic link,
    a number out of its range, a label with ``end <= start``, a label that is
    not a string, overlapping labels, an EEG header without channel names, or
    EEG without both ``eeg_sampling_rate`` and a ``timestamp`` column.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"session directory {root} does not exist (expected a directory with {SESSION_JSON})")
    path = root / SESSION_JSON
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link: expected a regular file inside the session directory")
    if not path.is_file():
        raise ConfigError(f"{path} is missing: a session directory needs {SESSION_JSON} "
                          f"(with at least {{\"format\": \"{FORMAT}\"}})")
    data = read_json(path, SESSION_JSON, ConfigError)
    session = parse_session(data, root)
    for key in FILE_KEYS:
        session.file(key)
    if session.eeg is not None:
        _, ts_col = read_eeg_header(session.path("eeg"))  # type: ignore[arg-type]
        if ts_col is None and session.eeg_sampling_rate is None:
            raise ConfigError(f"eeg={_shown(session.eeg)} has no '{TIMESTAMP_COLUMN}' column and {SESSION_JSON} has "
                              "no eeg_sampling_rate: expected one of them to give the sampling rate")
    return session


def write_session_json(directory: str | Path, session: Session | None = None, *, video: str | None = None,
                       audio: str | None = None, eeg: str | None = None, eeg_sampling_rate: float | None = None,
                       labels: Iterable[Label | Mapping[str, Any]] = (),
                       extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``directory/session.json`` atomically (temporary file, fsync, rename); return its path.

    Pass either a :class:`Session` (its :meth:`~Session.to_json`, unknown keys
    included) or the keyword fields (file names relative to ``directory``;
    labels as :class:`Label` or ``{start, end, label}`` mappings). The text is
    re-parsed first, so a writer cannot produce a file :func:`load_session`
    refuses on value grounds; whether the files exist is not checked here.
    """
    root = Path(directory)
    if session is not None:
        if any(v is not None for v in (video, audio, eeg, eeg_sampling_rate, extra)) or tuple(labels):
            raise ConfigError("write_session_json: pass either a Session or keyword fields, not both")
        data = session.to_json()
    else:
        data = {"format": FORMAT}
        for key, value in (("video", video), ("audio", audio), ("eeg", eeg),
                           ("eeg_sampling_rate", eeg_sampling_rate)):
            if value is not None:
                data[key] = str(value) if key in FILE_KEYS else value
        items = [lb.to_json() if isinstance(lb, Label) else dict(lb) for lb in labels]
        if items:
            data["labels"] = items
        for key, value in (extra or {}).items():
            if key in _KNOWN_KEYS:
                raise ConfigError(f"write_session_json: extra key {key!r} is a known key; pass it by name")
            data[key] = value
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{SESSION_JSON}: a value cannot be written as JSON ({exc})") from None
    parse_session(json.loads(text), root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{SESSION_JSON}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # open(.., "x"): honours the umask
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, root / SESSION_JSON)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return root / SESSION_JSON
