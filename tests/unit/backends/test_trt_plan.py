"""Build plans per TensorRT version and precision, network flags, and a TensorRT-free import."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest

from edge_mer.backends.options import TrtOptions
from edge_mer.backends.tensorrt import TensorRTBackend
from edge_mer.backends.tensorrt.builder import configure, network_flags
from edge_mer.backends.tensorrt.plan import build_plan, parse_version
from edge_mer.errors import BackendError

ALL_FILES = ("fp32", "fp16", "int8")


@pytest.mark.parametrize(("text", "expected"), [
    ("10.3.0", (10, 3, 0)),
    ("10.3.0.30", (10, 3, 0)),
    ("10.8", (10, 8, 0)),
    ("11", (11, 0, 0)),
    ("11.0.0.post1", (11, 0, 0)),
    (" 8.6.1 ", (8, 6, 1)),
])
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "v10.3", "."])
def test_parse_version_rejects_garbage(text: str) -> None:
    with pytest.raises(BackendError, match="TensorRT version"):
        parse_version(text)


@pytest.mark.parametrize("version", ["10.3.0", "10.3.0.26", "10.8", "10.13.2", "11.0", "11.0.0.7", "12.1.0"])
@pytest.mark.parametrize("precision", ALL_FILES)
def test_every_plan_is_strongly_typed_from_its_own_file(version: str, precision: str) -> None:
    plan = build_plan(version, precision, ALL_FILES)
    assert plan.onnx_key == precision
    assert plan.precision == precision
    # The creation flag exists (and is needed) on 10.x; 11 is strongly typed by default.
    assert plan.creation_flag is (parse_version(version)[0] < 11)
    assert "no precision flags" in plan.describe()


@pytest.mark.parametrize("version", ["10.3.0", "11.0"])
def test_fp16_without_fp16_file_is_refused_naming_it(version: str) -> None:
    with pytest.raises(BackendError) as info:
        build_plan(version, "fp16", ["fp32", "int8"])
    message = str(info.value)
    assert "no fp16 ONNX file" in message
    assert "has: fp32, int8" in message
    assert "strongly typed" in message
    assert "\n" not in message


def test_int8_without_qdq_file_is_refused() -> None:
    with pytest.raises(BackendError, match=r"Q/DQ.*no int8 ONNX file \(has: fp32\)"):
        build_plan("10.3.0", "int8", ["fp32"])


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0", (8, 6, 1)])
def test_trt_before_10_is_refused(version: object) -> None:
    with pytest.raises(BackendError, match=r"too old.*needs TensorRT >= 10\.0"):
        build_plan(version, "fp32", ALL_FILES)  # type: ignore[arg-type]


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(BackendError, match=r"unknown precision 'bf16' \(expected one of: fp32, fp16, int8\)"):
        build_plan("10.3.0", "bf16", ALL_FILES)


def test_version_tuple_is_accepted_and_described() -> None:
    plan = build_plan((10, 3, 0), "int8", ALL_FILES)
    assert plan.trt_version == (10, 3, 0)
    text = plan.describe()
    assert "TensorRT 10.3.0" in text and "int8 from the int8 ONNX file" in text and "STRONGLY_TYPED" in text


# --- how builder.py turns a plan into TensorRT calls, with a stand-in tensorrt module ---

def _fake_trt(strongly_typed_bit: int | None = 1, flags: tuple[str, ...] = ("FP16", "INT8")) -> types.SimpleNamespace:
    creation = types.SimpleNamespace()
    if strongly_typed_bit is not None:
        creation.STRONGLY_TYPED = strongly_typed_bit
    return types.SimpleNamespace(
        NetworkDefinitionCreationFlag=creation,
        BuilderFlag=types.SimpleNamespace(**{name: f"flag:{name}" for name in flags}),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="pool:workspace"),
    )


class _Config:
    def __init__(self) -> None:
        self.flags: list[str] = []
        self.pools: dict[str, int] = {}
        self.builder_optimization_level = -1

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size


def test_network_flags() -> None:
    trt = _fake_trt(strongly_typed_bit=1)
    # TensorRT 10.x: STRONGLY_TYPED is asked for at network creation, for every precision.
    for precision in ALL_FILES:
        assert network_flags(trt, build_plan("10.3.0", precision, ALL_FILES)) == 1 << 1
    # TensorRT 11 is strongly typed by default; its deprecated flag is not passed (nor needed).
    assert network_flags(trt, build_plan("11.0", "fp16", ALL_FILES)) == 0
    assert network_flags(_fake_trt(strongly_typed_bit=None), build_plan("11.0", "fp16", ALL_FILES)) == 0


def test_trt10_without_the_strongly_typed_flag_is_refused() -> None:
    with pytest.raises(BackendError, match="no NetworkDefinitionCreationFlag.STRONGLY_TYPED"):
        network_flags(_fake_trt(strongly_typed_bit=None), build_plan("10.3.0", "fp32", ALL_FILES))


@pytest.mark.parametrize("version", ["10.3.0", "11.0"])
@pytest.mark.parametrize("precision", ALL_FILES)
def test_configure_sets_workspace_and_level_and_never_a_precision_flag(version: str, precision: str) -> None:
    config = _Config()
    # The stand-in has no BuilderFlag members at all: any set_flag call would fail to find one.
    configure(_fake_trt(flags=()), config, TrtOptions(workspace_mib=256, builder_optimization_level=5))
    assert config.pools == {"pool:workspace": 256 << 20}
    assert config.builder_optimization_level == 5
    assert config.flags == []


# --- importing and availability on a host without TensorRT ---

def test_import_does_not_pull_tensorrt_or_pycuda() -> None:
    code = ("import sys, edge_mer.backends.tensorrt as t; "
            "print(t.TensorRTBackend.name, 'tensorrt' in sys.modules, 'pycuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["tensorrt", "False", "False"]


def test_availability_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    reason = TensorRTBackend.availability()
    assert isinstance(reason, str) and "tensorrt" in reason


def test_availability_refuses_old_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    assert TensorRTBackend.availability() == "TensorRT 8.6.1 is too old (need >= 10.0)"


def test_availability_without_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    reason = TensorRTBackend.availability()
    assert isinstance(reason, str) and reason.startswith("pycuda cannot be imported")


def test_availability_on_this_host_is_a_reason_string() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    reason = TensorRTBackend.availability()
    assert isinstance(reason, str) and reason.strip()
