"""Bounded fuzz of the run configuration and of session files: a valid object or one line, nothing else.

Hypothesis builds run configurations from the real key tree of ``RunConfig``
(right keys with wrong or extreme values, unknown keys, wrong nesting) and
``session.json`` files (wrong types, huge and non-finite numbers, paths that
leave the directory). Every example is a fault case.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_mer.config import from_dict
from edge_mer.errors import EdgeMerError
from edge_mer.pipeline.config import RunConfig
from edge_mer.sessions import load_session

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1e-300, 1e300, 1e12, 65536, 10**20]),
    st.text(max_size=20), st.sampled_from(["", "0", "auto", "99999999999999999999", "../../etc", "/etc/passwd"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                                          inner, max_size=3),
                      max_leaves=6)


def _tree(cls: type) -> dict[str, Any]:
    """The key tree of a config dataclass: leaf fields map to None, nested dataclasses to their trees."""
    hints = typing.get_type_hints(cls)
    return {f.name: (_tree(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None)
            for f in dataclasses.fields(cls) if f.init}


RUN_KEYS = _tree(RunConfig)


@st.composite
def run_configs(draw: st.DrawFn, tree: dict[str, Any] = RUN_KEYS, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(sorted(tree)), max_size=4, unique=True)):
        sub = tree[key]
        if sub is not None and depth < 3 and draw(st.booleans()):
            out[key] = draw(run_configs(sub, depth + 1))
        else:
            out[key] = draw(VALUES)
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)  # an unknown key
    return out


def _one_line(exc: EdgeMerError) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 2000, text


@FUZZ
@given(data=run_configs())
def test_any_run_configuration_is_valid_or_one_line(data: dict[str, Any], fault_case) -> None:
    try:
        config = from_dict(RunConfig, data)
    except EdgeMerError as exc:
        _one_line(exc)
        fault_case("run config")
        return
    assert isinstance(config, RunConfig)
    assert math.isfinite(config.rate_hz) and math.isfinite(config.duration_s)
    fault_case("run config")


SESSION_KEYS = ("format", "video", "audio", "eeg", "eeg_sampling_rate", "labels", "origin", "extra")
PATHS = st.sampled_from(["video.mp4", "audio.wav", "eeg.csv", "../outside.wav", "/etc/passwd", "link.wav",
                         "sub/../audio.wav", "", ".", "nul\x00.wav", "a" * 300])
LABELS = st.lists(st.fixed_dictionaries({"start": SCALARS, "end": SCALARS, "label": SCALARS}), max_size=3)


@st.composite
def sessions(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"format": draw(st.sampled_from(["edge-mer-session/1", "edge-mer-session/1",
                                                             "edge-mer-session/9", 1]))}
    for key in draw(st.lists(st.sampled_from(SESSION_KEYS[1:]), max_size=5, unique=True)):
        if key in ("video", "audio", "eeg"):
            data[key] = draw(PATHS | SCALARS)
        elif key == "labels":
            data[key] = draw(LABELS | SCALARS)
        else:
            data[key] = draw(VALUES)
    return data


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with real media files beside session.json, and a symlink leaving it."""
    import shutil

    from edge_mer.sessions import demo_session_path

    root = tmp_path_factory.mktemp("fuzz-session")
    for name in ("video.mp4", "audio.wav", "eeg.csv"):
        shutil.copyfile(demo_session_path() / name, root / name)
    outside = root.parent / "outside.wav"
    shutil.copyfile(demo_session_path() / "audio.wav", outside)
    (root / "link.wav").symlink_to(outside)
    return root


@FUZZ
@given(data=sessions())
def test_any_session_file_is_valid_or_one_line(data: dict[str, Any], session_dir: Path, fault_case) -> None:
    (session_dir / "session.json").write_text(json.dumps(data, allow_nan=True))
    try:
        session = load_session(session_dir)
    except EdgeMerError as exc:
        _one_line(exc)
        assert "root:" not in str(exc)  # never a line of /etc/passwd
        fault_case("session file")
        return
    for key in ("video", "audio", "eeg"):
        path = session.path(key)
        if path is not None:  # whatever loads stays inside the session directory
            assert path.resolve().is_relative_to(session_dir.resolve()), (key, path)
    fault_case("session file")
