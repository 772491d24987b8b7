"""The recorded-session format: a directory with ``session.json`` and up to three media files.

``session.json`` (format ``edge-mer-session/1``)::

    {"format": "edge-mer-session/1", "video": "video.mp4", "audio": "audio.wav",
     "eeg": "eeg.csv", "eeg_sampling_rate": 128,
     "labels": [{"start": 0.0, "end": 4.0, "label": "happy"}]}

Every key except ``format`` is optional; a file key set to ``null`` counts as
absent. Unknown keys (top level and inside a label) are accepted, ignored and
kept in :attr:`Session.extra` / :attr:`Label.extra`, so re-writing a loaded
session loses nothing. File names are paths relative to the session directory
(absolute paths are allowed but make the session non-portable). Times are
seconds from the session start.

Media, as the replay sources read them (:mod:`edge_mer.sessions.replay`):

* ``video``: any file OpenCV can read; frame ``i`` is at ``i / fps``.
* ``audio``: a WAV (or any file libsndfile reads), PCM or float, any rate, mono
  or multi-channel (mixed down as :func:`edge_mer.preprocess.audio.to_mono` does).
* ``eeg``: CSV with a header row of channel names (10-20 names such as ``Fz``)
  and optionally a ``timestamp`` column in seconds from the session start; one
  row per sample. The sampling rate is ``eeg_sampling_rate`` or, when that is
  absent, derived from the timestamps; with neither, loading fails.

Labels are half-open intervals ``[start, end)`` that must not overlap;
:meth:`Session.label_at` answers which label covers a time.

:func:`load_session` validates everything it can without decoding the media
(file existence, the EEG header) and raises :class:`~edge_mer.errors.ConfigError`
with a one-line message naming the bad value. :func:`write_session_json`
writes the file atomically after checking it with the same parser.
"""
from __future__ import annotations

import bisect
import csv
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_mer.errors import ConfigError
from edge_mer.numeric import is_number_text

FORMAT = "edge-mer-session/1"
SESSION_JSON = "session.json"
FILE_KEYS: dict[str, str] = {"video": "face", "audio": "speech", "eeg": "eeg"}  # key -> modality
TIMESTAMP_COLUMN = "timestamp"
_KNOWN_KEYS = ("format", *FILE_KEYS, "eeg_sampling_rate", "labels")
_LABEL_KEYS = ("start", "end", "label")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        where = f"label {self.label!r}"
        if not isinstance(self.label, str) or not self.label.strip():
            raise ConfigError(f"label {_shown(self.label)}: expected a non-empty string")
        for name in ("start", "end"):
            value = getattr(self, name)
            if not _is_number(value):
                raise ConfigError(f"{where}: {name}={_shown(value)}, expected a finite number of seconds")
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
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{key}={_shown(value)}: expected a file name relative to the session "
                                  "directory, or null")
        rate = self.eeg_sampling_rate
        if rate is not None and (not _is_number(rate) or rate <= 0):
            raise ConfigError(f"eeg_sampling_rate={_shown(rate)}: expected a number of Hz > 0")
        for i, item in enumerate(self.labels):
            if not isinstance(item, Label):
                raise ConfigError(f"labels[{i}]={_shown(item)}: expected a Label")
        ordered = sorted(self.labels, key=lambda lb: lb.start)
        for before, after in zip(ordered, ordered[1:]):
            if after.start < before.end:
                raise ConfigError(f"label {after.label!r} [{after.start}, {after.end}) overlaps label "
                                  f"{before.label!r} [{before.start}, {before.end}); expected disjoint intervals")
        object.__setattr__(self, "_starts", [lb.start for lb in ordered])
        object.__setattr__(self, "_ordered", tuple(ordered))

    def path(self, key: str) -> Path | None:
        """Absolute-or-root-relative path of ``"video"``, ``"audio"`` or ``"eeg"``; None when absent."""
        if key not in FILE_KEYS:
            raise ConfigError(f"session file key {key!r}: expected one of {', '.join(FILE_KEYS)}")
        name = getattr(self, key)
        return None if name is None else self.root / name

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
    extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    return Session(root=Path(root), video=data.get("video"), audio=data.get("audio"), eeg=data.get("eeg"),
                   eeg_sampling_rate=data.get("eeg_sampling_rate"),
                   labels=tuple(_parse_label(i, item) for i, item in enumerate(labels)), extra=extra)


def read_eeg_header(path: Path) -> tuple[tuple[str, ...], int | None]:
    """Channel names and the index of the ``timestamp`` column (or None) from an EEG CSV header."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"eeg file {path}: cannot read its header ({exc})") from None
    if not header:
        raise ConfigError(f"eeg file {path} is empty: expected a header row of channel names (e.g. Fz,Cz,Pz)")
    names = [name.strip() for name in header]
    ts = [i for i, name in enumerate(names) if name == TIMESTAMP_COLUMN]
    channels = tuple(name for name in names if name != TIMESTAMP_COLUMN)
    bad = [name for name in channels if not name or is_number_text(name)]
    if bad:
        raise ConfigError(f"eeg file {path}: header has {_shown(bad[0])} where a channel name is expected "
                          "(the first row must name the channels, e.g. Fz,Cz,Pz[,timestamp])")
    if not channels:
        raise ConfigError(f"eeg file {path}: header has no channel names, expected e.g. Fz,Cz,Pz[,timestamp]")
    if len(set(channels)) != len(channels):
        dup = next(name for name in channels if channels.count(name) > 1)
        raise ConfigError(f"eeg file {path}: channel {dup!r} appears twice in the header")
    if len(ts) > 1:
        raise ConfigError(f"eeg file {path}: {len(ts)} '{TIMESTAMP_COLUMN}' columns, expected at most one")
    return channels, (ts[0] if ts else None)


def demo_session_path() -> Path:
    """The demo session in the package: ~8 s of video, speech and synthetic-board EEG (see its SOURCES.md).

    ``edge-mer run`` replays it when no camera or microphone is found.
    """
    return Path(__file__).resolve().parent.parent / "assets" / "demo_session"


def load_session(directory: str | Path) -> Session:
    """Read and validate ``directory/session.json``; every referenced file must exist.

    Raises :class:`ConfigError` naming the problem: no directory or
    ``session.json``, invalid JSON, wrong ``format``, a bad key value, a
    referenced file that is missing, a label with ``end <= start``, a label
    that is not a string, overlapping labels, an EEG header without channel
    names, or EEG without both ``eeg_sampling_rate`` and a ``timestamp`` column.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"session directory {root} does not exist (expected a directory with {SESSION_JSON})")
    path = root / SESSION_JSON
    if not path.is_file():
        raise ConfigError(f"{path} is missing: a session directory needs {SESSION_JSON} "
                          f"(with at least {{\"format\": \"{FORMAT}\"}})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    session = parse_session(data, root)
    for key in FILE_KEYS:
        file = session.path(key)
        if file is not None and not file.is_file():
            raise ConfigError(f"{key}={getattr(session, key)!r}: file {file} does not exist")
    if session.eeg is not None:
        _, ts_col = read_eeg_header(session.path("eeg"))  # type: ignore[arg-type]
        if ts_col is None and session.eeg_sampling_rate is None:
            raise ConfigError(f"eeg={session.eeg!r} has no '{TIMESTAMP_COLUMN}' column and {SESSION_JSON} has no "
                              "eeg_sampling_rate: expected one of them to give the sampling rate")
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
