"""Hostile session directories: files outside the directory, echoed contents, numbers out of range, deep JSON,
3 Hz audio, recording into an existing directory. Every refusal is one line naming the key, never a traceback,
through the API and through `edge-mer run` (exit 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_mer.errors import ConfigError, SensorError
from edge_mer.sessions import FORMAT, AudioReplaySource, SessionRecorder, load_session
from edge_mer.sessions.format import demo_session_path

SECRET = "s3cr3t-token-4242"
DEMO = demo_session_path()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, check=False)


def _one_line_exit_2(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in last, result.stderr
    return last


def _session(root: Path, data: dict, files: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root / "session.json").write_text(json.dumps({"format": FORMAT, **data}))
    return root


def _refused(root: Path, *expected: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_session(root)
    message = str(info.value)
    assert "\n" not in message
    for text in expected:
        assert text in message, message
    return message


# -- files resolve only inside the session directory -----------------------------------------------------------

def _outside_files(tmp_path: Path) -> dict[str, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.avi").write_bytes((DEMO / "video.mp4").read_bytes())
    sf.write(outside / "a.wav", np.zeros(16000, np.float32), 16000)
    (outside / "eeg.csv").write_text(f"Fz,Cz\n1,2\n# {SECRET}\n")
    return {"video": outside / "x.avi", "audio": outside / "a.wav", "eeg": outside / "eeg.csv"}


@pytest.mark.parametrize("how", ["dotdot", "absolute", "file_symlink", "dir_symlink", "inside_symlink"])
@pytest.mark.parametrize("key", ["video", "audio", "eeg"])
def test_files_outside_the_session_directory_are_refused(tmp_path: Path, key: str, how: str) -> None:
    target = _outside_files(tmp_path)[key]
    root = tmp_path / "sessions" / "s"
    root.mkdir(parents=True)
    if how == "dotdot":
        name = f"../../outside/{target.name}"
    elif how == "absolute":
        name = str(target)
    elif how == "file_symlink":
        name = f"linked{target.suffix}"
        (root / name).symlink_to(target)
    elif how == "dir_symlink":
        (root / "media").symlink_to(target.parent)
        name = f"media/{target.name}"
    else:  # a link to a file that is inside: refused too, the directory must hold the file itself
        (root / f"real{target.suffix}").write_bytes(target.read_bytes())
        (root / f"alias{target.suffix}").symlink_to(root / f"real{target.suffix}")
        name = f"alias{target.suffix}"
    extra = {"eeg_sampling_rate": 128} if key == "eeg" else {}
    _session(root, {key: name, **extra})
    message = _refused(root, f"{key}=")
    assert SECRET not in message
    result = _run("--replay", str(root), "--fast", cwd=tmp_path)
    assert SECRET not in result.stdout + result.stderr
    _one_line_exit_2(result, f"{key}=")


def test_session_json_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = _session(tmp_path / "real", {})
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "session.json").symlink_to(real / "session.json")
    _refused(tmp_path / "s", "session.json is a symbolic link")


def test_etc_passwd_as_eeg_is_refused_without_quoting_it(tmp_path: Path) -> None:
    root = _session(tmp_path / "s", {"eeg": "/etc/passwd", "eeg_sampling_rate": 128})
    first_line = Path("/etc/passwd").read_text().splitlines()[0]
    message = _refused(root, "eeg='/etc/passwd'", "inside the session directory")
    assert first_line not in message
    result = _run("--replay", str(root), "--fast", cwd=tmp_path)
    assert first_line not in result.stdout + result.stderr
    _one_line_exit_2(result, "eeg='/etc/passwd'")


@pytest.mark.parametrize(("text", "expected"), [
    (f"{SECRET}:x:0:0:root:/root:/bin/bash\n1\n", "line 1: column 1 is not a channel name"),
    (f"Fz,{SECRET}=1\n1,2\n", "line 1: column 2 is not a channel name"),
    ("Fz,Fz\n1,2\n", "line 1: columns 1 and 2 name the same channel"),
    ("Fz,1.5\n1,2\n", "line 1: column 2 of 2 is a number"),
    ("Fz," + "C" * 70_000 + "\n1,2\n", "line 1: longer than 65536 bytes"),
    ("Fz,Cz\n1," + "9" * 70_000 + "\n", "line 2: longer than 65536 characters"),
])
def test_eeg_errors_name_the_line_and_column_never_the_text(tmp_path: Path, text: str, expected: str) -> None:
    root = _session(tmp_path / "s", {"eeg": "eeg.csv", "eeg_sampling_rate": 128}, {"eeg.csv": text.encode()})
    try:
        load_session(root)
    except ConfigError as exc:
        message = str(exc)
    else:  # the header is fine: the row is refused by the replay source
        from edge_mer.sessions import EegReplaySource

        with pytest.raises(SensorError) as info, EegReplaySource(root, pace=False) as source:
            list(source)
        message = str(info.value)
    assert expected in message and "\n" not in message
    assert SECRET not in message and "CCCC" not in message and "9999" not in message


@pytest.mark.parametrize(("row", "expected"), [
    (f"1,{SECRET}\n", "line 2 column 2: not a number"),
    ("1,2,3\n", "line 2: 3 values, expected 2"),
    ("1e300,2\n", "line 2: the timestamp looks like an epoch time"),
    ("nan,2\n", "line 2: the timestamp is not finite"),
    ("0.5,2\n0.25,3\n", "line 3: the timestamp is earlier than the previous row's"),
])
def test_bad_eeg_rows_are_one_line_sensor_errors_without_their_text(tmp_path: Path, row: str, expected: str) -> None:
    root = _session(tmp_path / "s", {"eeg": "eeg.csv"}, {"eeg.csv": f"timestamp,Fz\n{row}".encode()})
    from edge_mer.sessions import EegReplaySource

    with pytest.raises(SensorError) as info, EegReplaySource(root, pace=False) as source:
        list(source)
    assert expected in str(info.value) and SECRET not in str(info.value) and "\n" not in str(info.value)


# -- numbers are range-checked ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "expected"), [
    ({"eeg_sampling_rate": 1e9}, "eeg_sampling_rate=1000000000.0: expected a number of Hz in 1..100000"),
    ({"eeg_sampling_rate": 1e-300}, "eeg_sampling_rate=1e-300: expected a number of Hz in 1..100000"),
    ({"eeg_sampling_rate": -128}, "eeg_sampling_rate=-128"),
    ({"eeg_sampling_rate": 10**400}, "eeg_sampling_rate=1000"),
    ({"labels": [{"start": 0, "end": 10**400, "label": "happy"}]}, "labels[0].end=1000"),
    ({"labels": [{"start": 0, "end": 1e300, "label": "happy"}]}, "end=1e+300, expected a time in 0..1e+06 s"),
    ({"labels": [{"start": 1e300, "end": 2e300, "label": "happy"}]}, "start=1e+300, expected a time in 0..1e+06 s"),
    ({"labels": [{"start": -1, "end": 1, "label": "happy"}]}, "start=-1, expected a time >= 0"),
    ({"labels": [{"start": 0, "end": 1, "label": "x" * 500}]}, "expected at most 200 printable characters"),
    ({"recording": {"complete": "yes"}}, "recording.complete='yes': expected true or false"),
    ({"recording": {"start_unix_s": -5}}, "recording.start_unix_s=-5"),
    ({"recording": [1]}, "recording=[1]: expected an object"),
])
def test_numbers_out_of_range_are_one_line_errors(tmp_path: Path, data: dict, expected: str) -> None:
    files = {"eeg.csv": b"Fz,Cz\n1,2\n"}
    root = _session(tmp_path / "s", {"eeg": "eeg.csv", "eeg_sampling_rate": 128, **data}, files)
    _refused(root, expected)


def test_a_number_with_too_many_digits_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "session.json").write_text(f'{{"format": "{FORMAT}", "eeg_sampling_rate": 1{"0" * 5000}}}')
    _refused(tmp_path, "holds a number too long to read")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(tmp_path: Path, token: str) -> None:
    (tmp_path / "eeg.csv").write_text("Fz\n1\n")
    (tmp_path / "session.json").write_text(f'{{"format": "{FORMAT}", "eeg": "eeg.csv", "eeg_sampling_rate": {token}}}')
    _refused(tmp_path, "eeg_sampling_rate=")
    (tmp_path / "session.json").write_text(
        f'{{"format": "{FORMAT}", "labels": [{{"start": 0, "end": {token}, "label": "sad"}}]}}')
    _refused(tmp_path, "labels[0].end=")


@pytest.mark.parametrize("rate", ["1e9", "1e-300"])
def test_extreme_eeg_rates_through_the_daemon_are_one_line(tmp_path: Path, rate: str) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "eeg.csv").write_text("Fz,Cz\n" + "1,2\n" * 50)
    (root / "session.json").write_text(f'{{"format": "{FORMAT}", "eeg": "eeg.csv", "eeg_sampling_rate": {rate}}}')
    _one_line_exit_2(_run("--replay", str(root), "--fast", cwd=tmp_path), "eeg_sampling_rate=", "1..100000")


def test_deeply_nested_and_huge_session_json_are_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "session.json").write_text(f'{{"format": "{FORMAT}", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    _refused(deep, "nests deeper than 32 levels")
    _one_line_exit_2(_run("--replay", str(deep), "--fast", cwd=tmp_path), "nests deeper than")
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "session.json").write_text(json.dumps({"format": FORMAT, "x": "y" * (5 * 1024 * 1024)}))
    _refused(huge, "bytes is more than the")


# -- audio at an impossible rate ----------------------------------------------------------------------------------

def test_a_3_hz_audio_file_is_refused_at_open(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    sf.write(root / "audio.wav", np.zeros(30, np.float32), 3)
    (root / "session.json").write_text(json.dumps({"format": FORMAT, "audio": "audio.wav"}))
    with pytest.raises(SensorError, match="sample rate 3 Hz, expected 4000..384000 Hz") as info:
        AudioReplaySource(root, pace=False).open()
    assert "\n" not in str(info.value)
    _one_line_exit_2(_run("--replay", str(root), "--fast", cwd=tmp_path), "sample rate 3 Hz")


# -- recording refuses an existing path -------------------------------------------------------------------------

@pytest.mark.parametrize("via", ["flag", "toml"])
def test_recording_into_an_existing_directory_is_refused(tmp_path: Path, via: str) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    args = ["--camera", str(DEMO / "video.mp4"), "--no-speech", "--no-eeg", "--duration-s", "1"]
    if via == "flag":
        args += ["--record", str(existing)]
    else:
        (tmp_path / "run.toml").write_text(f"record = {json.dumps(str(existing))}\n")
        args += ["--config", str(tmp_path / "run.toml")]
    _one_line_exit_2(_run(*args, cwd=tmp_path), f"record directory {existing} already exists")
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]
    with pytest.raises(ConfigError, match="already exists"):
        SessionRecorder(existing)
    assert os.listdir(existing) == ["keep.txt"]
