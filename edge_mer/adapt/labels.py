"""The labels of a session for ``edge-mer adapt``: what the user felt when, on the session clock.

One format in three spellings, all parsed into the session's own
:class:`~edge_mer.sessions.format.Label` (half-open ``[start, end)`` seconds
from the session start, at most 200 printable characters of label, segments
disjoint):

* the ``labels`` list of ``session.json`` (``[{"start": 0.0, "end": 4.0, "label": "happy"}]``);
* ``--labels FILE.json``: that list, or an object with a ``labels`` key
  (a whole ``session.json`` is accepted too);
* ``--labels FILE.csv``: a header ``start_s,end_s,label`` and one segment a row.

A labels file replaces whatever ``session.json`` holds. Every label must be
a canonical label or a label the bundle's encoders map to (``boredom`` with
the default bundle). Files are at most :data:`MAX_LABELS_BYTES`; errors are one
line naming the file, the line or index, the value and what was expected.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer.bundle.loader import Bundle
from edge_mer.config import MAX_JSON_BYTES, read_json, read_text
from edge_mer.errors import ConfigError
from edge_mer.sessions.format import FORMAT, MAX_LABELS, Label, Session, parse_session

log = logging.getLogger(__name__)

MAX_LABELS_BYTES = MAX_JSON_BYTES
CSV_HEADER = ("start_s", "end_s", "label")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def known_labels(bundle: Bundle) -> tuple[str, ...]:
    """The labels a session may use with ``bundle``: canonical ones, then the bundle's own."""
    extra = sorted({t for e in bundle.manifest.encoders.values() for t in e.label_map.values()} - set(CANONICAL_LABELS))
    return (*CANONICAL_LABELS, *extra)


def _read_text(path: Path) -> str:
    # utf-8-sig: a spreadsheet's CSV export often starts with a byte-order mark.
    return read_text(path, "labels file", max_bytes=MAX_LABELS_BYTES, encoding="utf-8-sig")


def _seconds(path: Path, line: int, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"labels file {path} line {line}: {key}={_shown(text)}, expected a finite number of seconds")
    return value


def read_csv_labels(path: Path) -> tuple[Label, ...]:
    """The segments of a ``start_s,end_s,label`` CSV file."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise ConfigError(f"labels file {path} line 1: header {_shown(header and ','.join(header))}, expected "
                              f"{','.join(CSV_HEADER)}")
        labels = []
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(CSV_HEADER):
                raise ConfigError(f"labels file {path} line {line}: {len(row)} values, expected 3 "
                                  f"({','.join(CSV_HEADER)})")
            if len(labels) >= MAX_LABELS:
                raise ConfigError(f"labels file {path}: more than {MAX_LABELS} segments")
            start, end = (_seconds(path, line, k, v) for k, v in zip(CSV_HEADER[:2], row[:2]))
            try:
                labels.append(Label(start, end, row[2].strip()))
            except ConfigError as exc:
                raise ConfigError(f"labels file {path} line {line}: {exc}") from None
    except csv.Error as exc:
        raise ConfigError(f"labels file {path} line {reader.line_num}: not valid CSV ({exc})") from None
    return tuple(labels)


def read_json_labels(path: Path) -> tuple[Label, ...]:
    """The segments of a JSON labels file: a list, ``{"labels": [...]}`` or a whole ``session.json``."""
    data = read_json(path, "labels file", ConfigError, max_bytes=MAX_LABELS_BYTES)
    if isinstance(data, dict):
        extra = sorted(set(data) - {"labels"})
        if "format" not in data and extra:
            raise ConfigError(f"labels file {path}: unknown key {_shown(extra[0])}, expected only \"labels\" "
                              "(or a session.json)")
        if "labels" not in data:
            raise ConfigError(f"labels file {path}: no \"labels\" key, expected {{\"labels\": [{{\"start\": 0.0, "
                              "\"end\": 4.0, \"label\": \"happy\"}}, ...]}}")
        data = data["labels"]
    if not isinstance(data, list):
        raise ConfigError(f"labels file {path}: expected a list of {{start, end, label}} objects, got "
                          f"{type(data).__name__}")
    try:
        return parse_session({"format": FORMAT, "labels": data}, path.parent).labels
    except ConfigError as exc:
        raise ConfigError(f"labels file {path}: {exc}") from None


def read_labels_file(path: Path) -> tuple[Label, ...]:
    """The segments of a ``.csv`` or ``.json`` labels file (see the module doc)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_labels(path)
    if suffix == ".json":
        return read_json_labels(path)
    raise ConfigError(f"labels file {path}: expected a .csv (start_s,end_s,label) or .json file, got "
                      f"{_shown(path.suffix or 'no suffix')}")


def check_labels(labels: Sequence[Label], known: Iterable[str], session: Session, where: str) -> tuple[Label, ...]:
    """``labels`` checked against ``known`` labels and for overlaps (as the session format checks them)."""
    known = tuple(known)
    if not labels:
        raise ConfigError(f"{where} has no labels; adaptation needs labelled segments (a labels list or "
                          "--labels FILE with start_s,end_s,label rows)")
    for label in labels:
        if label.label not in known:
            raise ConfigError(f"{where}: label {_shown(label.label)} at {label.start:g}..{label.end:g} s is not "
                              f"known; expected one of {', '.join(known)}")
    try:
        dataclasses.replace(session, labels=tuple(labels))  # the session's own overlap check
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return tuple(sorted(labels, key=lambda lb: lb.start))


def session_labels(session: Session, labels_file: Path | None, bundle: Bundle) -> tuple[tuple[Label, ...], str]:
    """The session's labelled segments and where they came from (``labels_file`` wins over session.json)."""
    if labels_file is not None:
        if session.labels:
            log.info("labels from %s replace the %d segments of session.json", labels_file, len(session.labels))
        where = f"labels file {labels_file}"
        return check_labels(read_labels_file(labels_file), known_labels(bundle), session, where), str(labels_file)
    where = f"session {session.root}"
    return check_labels(session.labels, known_labels(bundle), session, where), "session.json"
