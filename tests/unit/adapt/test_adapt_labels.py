"""The labels of a session for adaptation: session.json, CSV and JSON files, strictly validated."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_mer.adapt.labels import known_labels, read_labels_file, session_labels
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.errors import ConfigError
from edge_mer.sessions.format import Label, Session


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def _labels(session: Session, path: Path | None, bundle) -> list[tuple[float, float, str]]:
    labels, _ = session_labels(session, path, bundle)
    return [(lb.start, lb.end, lb.label) for lb in labels]


def test_known_labels_are_canonical_then_the_bundles_own(bundle) -> None:
    assert known_labels(bundle)[:7] == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert "boredom" in known_labels(bundle)


def test_csv_json_and_session_json_spell_the_same_labels(bundle, tmp_path: Path) -> None:
    expected = [(0.0, 4.0, "happy"), (4.0, 9.5, "boredom")]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("start_s,end_s,label\n4.0,9.5,boredom\n\n0,4,happy\n")
    items = [{"start": s, "end": e, "label": lb} for s, e, lb in expected]
    as_list, as_object = tmp_path / "list.json", tmp_path / "object.json"
    as_list.write_text(json.dumps(items))
    as_object.write_text(json.dumps({"labels": items}))
    session = Session(tmp_path)
    for path in (csv_file, as_list, as_object):
        assert _labels(session, path, bundle) == expected
    assert _labels(Session(tmp_path, labels=tuple(Label(*x) for x in expected)), None, bundle) == expected


def test_a_labels_file_replaces_session_json_labels(bundle, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("start_s,end_s,label\n0,3,sad\n")
    session = Session(tmp_path, labels=(Label(0.0, 4.0, "happy"),))
    labels, origin = session_labels(session, path, bundle)
    assert [lb.label for lb in labels] == ["sad"] and origin == str(path)


BAD_CSV = {
    "header": ("start,end,label\n0,1,happy\n", "line 1: header 'start,end,label', expected start_s,end_s,label"),
    "empty": ("", "line 1: header None, expected start_s,end_s,label"),
    "not a number": ("start_s,end_s,label\n0,abc,happy\n", "line 2: end_s='abc', expected a finite number"),
    "nan": ("start_s,end_s,label\nnan,1,happy\n", "line 2: start_s='nan', expected a finite number"),
    "columns": ("start_s,end_s,label\n0,1\n", "line 2: 2 values, expected 3"),
    "end before start": ("start_s,end_s,label\n0,1,happy\n5,2,sad\n", "line 3: label 'sad': end=2.0 <= start=5.0"),
    "negative": ("start_s,end_s,label\n-1,2,happy\n", "start=-1.0, expected a time >= 0 s"),
    "epoch time": ("start_s,end_s,label\n1714550000,1714550004,happy\n", "expected a time in 0..1e+06 s"),
    "unknown": ("start_s,end_s,label\n0,1,elated\n", "label 'elated' at 0..1 s is not known; expected one of angry"),
    "overlap": ("start_s,end_s,label\n0,5,happy\n4,8,sad\n", "overlaps label 'happy'"),
    "no rows": ("start_s,end_s,label\n", "has no labels"),
    "control": ("start_s,end_s,label\n0,1,ha\x07ppy\n", "expected at most 200 printable characters"),
}


@pytest.mark.parametrize("name", sorted(BAD_CSV))
def test_bad_csv_labels_are_one_line_errors(name: str, bundle, tmp_path: Path) -> None:
    text, expected = BAD_CSV[name]
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        session_labels(Session(tmp_path), path, bundle)
    message = str(exc.value)
    assert expected in message and "\n" not in message and str(path) in message


BAD_JSON = {
    "not a list": ('{"labels": 5}', "expected a list of {start, end, label} objects, got int"),
    "no labels key": ('{"segments": []}', "unknown key 'segments'"),
    "missing end": ('[{"start": 0, "label": "happy"}]', "labels[0] lacks end"),
    "string time": ('[{"start": "0", "end": 1, "label": "happy"}]', "labels[0].start='0': expected a finite number"),
    "label type": ('[{"start": 0, "end": 1, "label": 3}]', "labels[0].label=3: expected a string"),
    "invalid json": ('[{"start": 0,', "is not valid JSON"),
    "deep": ("[" * 100 + "]" * 100, "nests deeper than 32 levels"),
}


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_bad_json_labels_are_one_line_errors(name: str, bundle, tmp_path: Path) -> None:
    text, expected = BAD_JSON[name]
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        session_labels(Session(tmp_path), path, bundle)
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_files_are_bounded_and_typed_by_suffix(tmp_path: Path) -> None:
    from edge_mer.adapt.labels import MAX_LABELS_BYTES

    with pytest.raises(ConfigError, match=r"expected a \.csv"):
        read_labels_file(tmp_path / "labels.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        read_labels_file(tmp_path / "missing.csv")
    path = tmp_path / "big.csv"
    path.write_text("start_s,end_s,label\n" + "0,1,happy\n" * (MAX_LABELS_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=f"bytes is more than the {MAX_LABELS_BYTES} this file may have"):
        read_labels_file(path)
    (tmp_path / "latin1.csv").write_bytes(b"start_s,end_s,label\n0,1,h\xe9\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_labels_file(tmp_path / "latin1.csv")
