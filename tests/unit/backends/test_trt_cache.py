"""Engine cache keys, file names and atomic, checksummed cache files."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from edge_mer.backends.options import TrtOptions
from edge_mer.backends.tensorrt.cache import (MAGIC, EngineKey, engine_path, options_digest, profile_digest,
                                              read_blob, timing_cache_path, write_blob)
from edge_mer.backends.tensorrt.plan import build_plan
from edge_mer.backends.tensorrt.profiles import ShapeRange
from edge_mer.errors import BackendError

SHA = "ab" * 32
RANGES = (ShapeRange("face", (1, 1, 64, 64), (1, 1, 64, 64), (8, 1, 64, 64)),)


def _key(**changes: object) -> EngineKey:
    plan = build_plan("10.3.0", "fp16", ["fp32", "fp16"])
    key = EngineKey(
        model_name="face-encoder",
        model_sha256=SHA,
        precision="fp16",
        trt_version="10.3.0.30",
        gpu_name="Orin (nvgpu)",
        compute_capability="8.7",
        profile_digest=profile_digest(RANGES),
        options_digest=options_digest(plan, 1024, 3),
    )
    return dataclasses.replace(key, **changes)


def test_key_is_stable() -> None:
    assert _key().digest() == _key().digest()
    assert _key().file_name() == _key().file_name()
    assert profile_digest(RANGES) == profile_digest(tuple(RANGES))


@pytest.mark.parametrize(("field", "value"), [
    ("model_name", "speech-encoder"),
    ("model_sha256", "cd" * 32),
    ("precision", "int8"),
    ("trt_version", "10.3.0.31"),
    ("gpu_name", "NVIDIA H100"),
    ("compute_capability", "9.0"),
    ("profile_digest", profile_digest((ShapeRange("face", (1, 1, 64, 64), (2, 1, 64, 64), (8, 1, 64, 64)),))),
    ("options_digest", options_digest(build_plan("10.3.0", "fp16", ["fp32", "fp16"]), 2048, 3)),
])
def test_any_component_changes_the_file_name(field: str, value: str) -> None:
    assert _key(**{field: value}).file_name() != _key().file_name()


def test_options_digest_tracks_build_settings() -> None:
    fp16 = build_plan("10.3.0", "fp16", ["fp32", "fp16"])
    base = options_digest(fp16, 1024, 3)
    assert options_digest(fp16, 1024, 3) == base
    assert options_digest(fp16, 512, 3) != base
    assert options_digest(fp16, 1024, 4) != base
    assert options_digest(build_plan("10.3.0", "fp32", ["fp32"]), 1024, 3) != base
    assert options_digest(fp16, 1024, 3, {"x": 1}) != base
    # The same model file built for TensorRT 10 (creation flag) and 11 (default) never shares an engine name.
    assert options_digest(build_plan("11.0", "fp16", ["fp16"]), 1024, 3) != base


def test_profile_digest_tracks_every_shape() -> None:
    base = profile_digest(RANGES)
    assert profile_digest((ShapeRange("face", (1, 1, 64, 64), (1, 1, 64, 64), (16, 1, 64, 64)),)) != base
    assert profile_digest((ShapeRange("img", (1, 1, 64, 64), (1, 1, 64, 64), (8, 1, 64, 64)),)) != base


def test_file_name_is_readable_and_safe() -> None:
    name = _key().file_name()
    assert name.startswith("face-encoder-fp16-trt10.3.0.30-sm87-")
    assert name.endswith(".engine")
    assert "/" not in name and " " not in name
    assert engine_path(_key(), Path("/tmp/c")) == Path("/tmp/c") / name


def test_engine_path_under_resolved_cache_dir(tmp_path: Path) -> None:
    cache_dir = TrtOptions(cache_dir=tmp_path / "engines").resolved_cache_dir()
    assert engine_path(_key(), cache_dir).parent == tmp_path / "engines"


@pytest.mark.parametrize(("field", "value", "pattern"), [
    ("compute_capability", "sm87", "compute capability must look like '8.7'"),
    ("model_sha256", "xyz", "64 lowercase hex"),
    ("gpu_name", "", "gpu_name is empty"),
])
def test_key_validation(field: str, value: str, pattern: str) -> None:
    with pytest.raises(BackendError, match=pattern):
        _key(**{field: value})


def test_timing_cache_path_keyed_by_version_and_gpu(tmp_path: Path) -> None:
    path = timing_cache_path("10.3.0.30", "Orin (nvgpu)", "8.7", tmp_path)
    assert path.parent == tmp_path
    assert path.name.startswith("timing-trt10.3.0.30-orin-nvgpu-sm87-")
    assert path == timing_cache_path("10.3.0.30", "Orin (nvgpu)", "8.7", tmp_path)
    assert path != timing_cache_path("10.3.0.31", "Orin (nvgpu)", "8.7", tmp_path)
    assert path != timing_cache_path("10.3.0.30", "Orin", "8.7", tmp_path)
    assert path != timing_cache_path("10.3.0.30", "Orin (nvgpu)", "8.6", tmp_path)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "x.engine"
    payload = bytes(range(256)) * 10
    write_blob(path, payload)
    assert read_blob(path) == payload
    assert path.read_bytes().startswith(MAGIC)
    # Nothing temporary is left beside the file.
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.engine"]
    write_blob(path, b"second")
    assert read_blob(path) == b"second"


def test_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert read_blob(tmp_path / "nothing.engine") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_corrupt_file_is_logged_removed_and_reads_as_none(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          damage: str) -> None:
    path = tmp_path / "x.engine"
    write_blob(path, b"engine bytes " * 100)
    raw = path.read_bytes()
    corrupted = {
        "truncate": raw[:-7],
        "flip": raw[:-1] + bytes([raw[-1] ^ 0xFF]),
        "foreign": b"\x00plain TensorRT plan without our header",
        "empty": b"",
    }[damage]
    path.write_bytes(corrupted)
    with caplog.at_level(logging.WARNING, logger="edge_mer.backends.tensorrt.cache"):
        assert read_blob(path) is None
    assert "discarding corrupt cache file" in caplog.text
    assert not path.exists()


def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.engine"
    write_blob(path, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_blob(path, b"new")
    monkeypatch.undo()
    assert read_blob(path) == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.engine"]
