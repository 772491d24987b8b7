"""session.json: parsing, validation errors, label lookup and atomic re-writing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_mer.errors import ConfigError
from edge_mer.sessions import FORMAT, Label, Session, load_session, write_session_json
from edge_mer.sessions.eeg_csv import read_eeg_header


def _session_dir(root: Path, data: object, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "session.json").write_text(data if isinstance(data, str) else json.dumps(data))
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


FILES = {"video.mp4": "not decoded by load_session", "audio.wav": "x", "eeg.csv": "Fz,Cz,Pz\n1,2,3\n"}


def test_full_session_loads(tmp_path: Path) -> None:
    data = {"format": FORMAT, "video": "video.mp4", "audio": "audio.wav", "eeg": "eeg.csv",
            "eeg_sampling_rate": 128, "labels": [{"start": 0.0, "end": 4.0, "label": "happy"}]}
    session = load_session(_session_dir(tmp_path / "s", data, FILES))
    assert session.root == tmp_path / "s"
    assert (session.video, session.audio, session.eeg) == ("video.mp4", "audio.wav", "eeg.csv")
    assert session.path("audio") == tmp_path / "s" / "audio.wav"
    assert session.eeg_sampling_rate == 128 and isinstance(session.eeg_sampling_rate, int)
    assert session.labels == (Label(0.0, 4.0, "happy"),)
    assert session.modalities == ("face", "speech", "eeg")
    assert session.to_json() == data


def test_only_format_is_required_and_null_files_are_absent(tmp_path: Path) -> None:
    session = load_session(_session_dir(tmp_path, {"format": FORMAT, "video": None}))
    assert session.modalities == () and session.labels == () and session.path("video") is None
    assert session.label_at(0.0) is None


def test_eeg_with_timestamp_column_needs_no_rate(tmp_path: Path) -> None:
    files = {"eeg.csv": "timestamp,Fz,Cz\n0.0,1,2\n0.004,1,2\n"}
    session = load_session(_session_dir(tmp_path, {"format": FORMAT, "eeg": "eeg.csv"}, files))
    assert session.eeg_sampling_rate is None
    assert read_eeg_header(session.path("eeg")) == (("Fz", "Cz"), 0)


def test_unknown_keys_are_kept_when_rewriting(tmp_path: Path) -> None:
    data = {"format": FORMAT, "subject": {"id": 7}, "audio": "audio.wav",
            "labels": [{"start": 1, "end": 2.5, "label": "sad", "annotator": "A"}]}
    session = load_session(_session_dir(tmp_path / "a", data, {"audio.wav": "x"}))
    assert session.extra == {"subject": {"id": 7}}
    assert session.labels[0].extra == {"annotator": "A"}
    out = write_session_json(tmp_path / "a", session)
    assert json.loads(out.read_text()) == data
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_write_session_json_from_fields_round_trips(tmp_path: Path) -> None:
    path = write_session_json(tmp_path / "new", eeg="eeg.csv", eeg_sampling_rate=250,
                              labels=[Label(0, 2, "neutral"), {"start": 2, "end": 3, "label": "happy"}],
                              extra={"note": "x"})
    (tmp_path / "new" / "eeg.csv").write_text("Fz\n1\n")
    assert json.loads(path.read_text()) == {
        "format": FORMAT, "eeg": "eeg.csv", "eeg_sampling_rate": 250,
        "labels": [{"start": 0, "end": 2, "label": "neutral"}, {"start": 2, "end": 3, "label": "happy"}],
        "note": "x"}
    assert load_session(tmp_path / "new").label_at(2.0) == "happy"


def test_write_session_json_refuses_invalid_values_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="end=1.0 <= start=2.0"):
        write_session_json(tmp_path, labels=[{"start": 2.0, "end": 1.0, "label": "sad"}])
    with pytest.raises(ConfigError, match="known key"):
        write_session_json(tmp_path, extra={"video": "v.mp4"})
    assert list(tmp_path.iterdir()) == []


def test_label_at_uses_half_open_intervals(tmp_path: Path) -> None:
    labels = [{"start": 4.0, "end": 6.0, "label": "sad"}, {"start": 0.0, "end": 2.0, "label": "happy"},
              {"start": 2.0, "end": 3.0, "label": "neutral"}]
    session = load_session(_session_dir(tmp_path, {"format": FORMAT, "labels": labels}))
    expected = {-0.1: None, 0.0: "happy", 1.999: "happy", 2.0: "neutral", 2.9: "neutral", 3.0: None,
                3.5: None, 4.0: "sad", 5.99: "sad", 6.0: None, 100.0: None}
    assert {t: session.label_at(t) for t in expected} == expected


@pytest.mark.parametrize(("data", "files", "match"), [
    ({"format": "edge-mer-session/2"}, {}, r"format='edge-mer-session/2': expected 'edge-mer-session/1'"),
    ({"video": "video.mp4"}, {}, "has no 'format' key"),
    ("[1, 2]", {}, "expected a JSON object, got list"),
    ('{"format": ', {}, "is not valid JSON: .* at line 1"),
    ({"format": FORMAT, "video": "video.mp4"}, {}, r"video='video.mp4': file .*video.mp4 does not exist"),
    ({"format": FORMAT, "audio": 3}, {}, "audio=3: expected a file name"),
    ({"format": FORMAT, "labels": [{"start": 4.0, "end": 4.0, "label": "sad"}]}, {},
     r"labels\[0\]: label 'sad': end=4.0 <= start=4.0"),
    ({"format": FORMAT, "labels": [{"start": 5, "end": 4, "label": "sad"}]}, {}, "end=4 <= start=5"),
    ({"format": FORMAT, "labels": [{"start": 0, "end": 1, "label": 3}]}, {},
     r"labels\[0\].label=3: expected a string such as 'happy', got int"),
    ({"format": FORMAT, "labels": [{"start": 0, "end": 1, "label": ""}]}, {}, "expected a non-empty string"),
    ({"format": FORMAT, "labels": [{"start": 0, "end": 1}]}, {}, r"labels\[0\] lacks label"),
    ({"format": FORMAT, "labels": [{"start": "0", "end": 1, "label": "sad"}]}, {},
     r"labels\[0\].start='0': expected a finite number"),
    ({"format": FORMAT, "labels": [{"start": -1, "end": 1, "label": "sad"}]}, {}, "start=-1, expected a time >= 0"),
    ({"format": FORMAT, "labels": ["happy"]}, {}, r"labels\[0\]='happy': expected an object"),
    ({"format": FORMAT, "labels": {"start": 0}}, {}, "labels=.*expected a list"),
    ({"format": FORMAT, "labels": [{"start": 0, "end": 2, "label": "a"}, {"start": 1, "end": 3, "label": "b"}]},
     {}, "label 'b' .* overlaps label 'a'"),
    ({"format": FORMAT, "eeg_sampling_rate": 0}, {}, r"eeg_sampling_rate=0: expected a number of Hz in 1\.\.100000"),
    ({"format": FORMAT, "eeg_sampling_rate": True}, {}, "eeg_sampling_rate=True"),
    ({"format": FORMAT, "eeg_sampling_rate": "128"}, {}, "eeg_sampling_rate='128'"),
    ({"format": FORMAT, "eeg": "eeg.csv"}, {"eeg.csv": "Fz,Cz\n1,2\n"},
     "no 'timestamp' column and session.json has no eeg_sampling_rate"),
    ({"format": FORMAT, "eeg": "eeg.csv", "eeg_sampling_rate": 128}, {"eeg.csv": "1.5,2\n"},
     "line 1: column 1 of 2 is a number where a channel name is expected"),
    ({"format": FORMAT, "eeg": "eeg.csv", "eeg_sampling_rate": 128}, {"eeg.csv": "Fz,Fz\n"},
     "line 1: columns 1 and 2 name the same channel"),
    ({"format": FORMAT, "eeg": "eeg.csv", "eeg_sampling_rate": 128}, {"eeg.csv": ""}, "is empty"),
])
def test_invalid_sessions_are_refused_with_one_line_messages(tmp_path: Path, data: object, files: dict[str, str],
                                                            match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_session(_session_dir(tmp_path, data, files))
    assert "\n" not in str(info.value)


def test_missing_directory_and_session_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_session(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"session.json is missing"):
        load_session(tmp_path)


def test_session_and_label_are_frozen_and_validate_directly(tmp_path: Path) -> None:
    session = Session(tmp_path, audio="a.wav", labels=(Label(0, 1, "happy"),))
    with pytest.raises(AttributeError):
        session.audio = "b.wav"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="end=0 <= start=1"):
        Label(1, 0, "happy")
    with pytest.raises(ConfigError, match="session file key 'face'"):
        session.path("face")


@pytest.mark.parametrize("name", ["../x.wav", "a/../../x.wav", "/etc/passwd", "a\0b", "x" * 1025])
def test_file_names_must_stay_inside_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="audio=.*expected a file name inside the session directory") as info:
        Session(tmp_path, audio=name)
    assert "\n" not in str(info.value)


def test_file_checks_symlinks_and_location_each_time(tmp_path: Path) -> None:
    root = _session_dir(tmp_path / "s", {"format": FORMAT, "audio": "sub/a.wav"}, {})
    (root / "sub").mkdir()
    (root / "sub" / "a.wav").write_text("x")
    session = load_session(root)
    assert session.file("audio") == root / "sub" / "a.wav" and session.file("video") is None
    (root / "sub" / "a.wav").unlink()
    (root / "sub" / "a.wav").symlink_to(tmp_path / "elsewhere.wav")
    with pytest.raises(ConfigError, match=r"audio='sub/a.wav': .* is a symbolic link"):
        session.file("audio")
