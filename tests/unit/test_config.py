from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from edge_mer.config import from_dict, read_toml, require, to_dict
from edge_mer.errors import ConfigError, EdgeMerError


@dataclass(frozen=True)
class Inner:
    rate_hz: float = 2.0
    mode: Literal["a", "b"] = "a"
    dims: tuple[int, ...] = ()
    path: Path | None = None

    def __post_init__(self) -> None:
        require(self.rate_hz > 0, f"rate_hz must be > 0, got {self.rate_hz}")


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float] = field(default_factory=dict)
    pair: tuple[int, int] = (1, 2)
    count: int | None = None


def test_builds_nested_frozen_dataclasses_with_widening_int_to_float() -> None:
    cfg = from_dict(Outer, {"name": "x", "inner": {"rate_hz": 5, "dims": [1, 2], "path": "/tmp"},
                            "weights": {"face": 1}, "pair": [3, 4]})
    assert cfg == Outer("x", Inner(5.0, "a", (1, 2), Path("/tmp")), {"face": 1.0}, (3, 4))
    assert isinstance(cfg.inner.rate_hz, float)
    assert to_dict(cfg)["inner"] == {"rate_hz": 5.0, "mode": "a", "dims": [1, 2], "path": "/tmp"}


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "inner": {"rat_hz": 1}}, "unknown key inner.rat_hz (known keys here: dims, mode, path, rate_hz)"),
    ({"name": "x", "inner": {"rate_hz": "fast"}}, "inner.rate_hz: expected a number, got 'fast'"),
    ({"name": "x", "inner": {"rate_hz": True}}, "inner.rate_hz: expected a number, got True"),
    ({"name": "x", "inner": {"mode": "c"}}, "inner.mode: expected one of 'a', 'b', got 'c'"),
    ({"name": "x", "inner": {"dims": [1, "2"]}}, "inner.dims[1]: expected an integer, got '2'"),
    ({"name": "x", "count": 1.5}, "count: expected an integer, got 1.5"),
    ({"name": "x", "pair": [1]}, "pair: expected an array of 2 items, got 1"),
    ({"name": "x", "weights": {"face": "heavy"}}, "weights.face: expected a number, got 'heavy'"),
    ({}, "missing required key name"),
    ({"name": "x", "inner": {"rate_hz": -1}}, "inner: rate_hz must be > 0, got -1.0"),
])
def test_errors_name_the_key_and_the_expectation(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data)
    assert str(info.value) == message
    assert isinstance(info.value, EdgeMerError)


def test_read_toml_reports_file_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('name = "dev"\n[inner]\nrate_hz = 10\nmode = "b"\n')
    assert from_dict(Outer, read_toml(good)).inner == Inner(10.0, "b")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "absent.toml")
