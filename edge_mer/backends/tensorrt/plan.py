"""What to build for a TensorRT version and a precision, decided without TensorRT.

TensorRT 10 networks are weakly typed by default: precision is chosen with
builder flags (``FP16``, ``INT8``) and INT8 comes from the Q/DQ nodes of an
explicitly quantized ONNX file.  TensorRT 11 removed those flags and every
network is strongly typed, so precision must already be in the ONNX file:
FP16 needs an FP16 (mixed-precision) export.  This module turns that into a
:class:`BuildPlan` so the rules are unit-tested on hosts without TensorRT;
flags are plain names that :mod:`edge_mer.backends.tensorrt.builder` looks
up on ``tensorrt.BuilderFlag``.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from edge_mer.errors import BackendError
from edge_mer.names import PRECISIONS

log = logging.getLogger(__name__)

#: The first TensorRT major release whose Python API (tensor names,
#: ``execute_async_v3``, memory pools) this backend uses.
MIN_MAJOR = 10
#: From this major on, networks are always strongly typed and precision flags are gone.
STRONGLY_TYPED_MAJOR = 11

Version = tuple[int, int, int]

_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: str) -> Version:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``; missing minor/patch count as 0.

    Build numbers and suffixes after the patch are ignored: engines are keyed
    on the full version string elsewhere, this is only for choosing a plan.
    """
    if not isinstance(text, str):
        raise BackendError(f"TensorRT version must be a string like '10.3.0', got {text!r}")
    match = _VERSION_RE.match(text)
    if match is None:
        raise BackendError(f"cannot read TensorRT version {text!r} (expected a version like '10.3.0')")
    major, minor, patch = (int(g) if g is not None else 0 for g in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class BuildPlan:
    """How to build one engine.

    ``onnx_key`` is the precision key of the ONNX file to parse in
    ``ModelRef.files``; ``builder_flags`` are ``tensorrt.BuilderFlag`` member
    names; ``strongly_typed`` asks for a strongly typed network.
    """

    trt_version: Version
    precision: str
    onnx_key: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]

    def describe(self) -> str:
        """One line for logs and error messages."""
        version = ".".join(str(v) for v in self.trt_version)
        flags = "+".join(self.builder_flags) or "none"
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        return (f"TensorRT {version}, {self.precision} from the {self.onnx_key} ONNX file, "
                f"{typing}, builder flags: {flags}")


def build_plan(trt_version: str | Version, precision: str, files_available: Iterable[str]) -> BuildPlan:
    """Choose the ONNX file, network typing and builder flags.

    ``files_available`` are the precision keys of the bundle's files (e.g. the
    keys of ``ModelRef.files``).  Raises :class:`BackendError` for TensorRT
    older than 10, an unknown precision, or when the file the plan needs is
    not in the bundle.
    """
    version = parse_version(trt_version) if isinstance(trt_version, str) else tuple(trt_version)
    if len(version) != 3 or not all(isinstance(v, int) for v in version):
        raise BackendError(f"TensorRT version must be (major, minor, patch), got {trt_version!r}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r} (expected one of: {', '.join(PRECISIONS)})")
    major = version[0]
    if major < MIN_MAJOR:
        shown = ".".join(str(v) for v in version)
        raise BackendError(f"TensorRT {shown} is too old: the tensorrt backend needs TensorRT >= {MIN_MAJOR}.0 "
                           "(the name-based tensor API); use the onnxruntime backend or upgrade JetPack")
    available = frozenset(files_available)
    if major >= STRONGLY_TYPED_MAJOR:
        plan = _strongly_typed_plan(version, precision)
    else:
        plan = _weakly_typed_plan(version, precision)
    if plan.onnx_key not in available:
        have = ", ".join(sorted(available)) or "none"
        raise BackendError(f"{_need_reason(plan)} but the bundle has no {plan.onnx_key} ONNX file (has: {have})")
    log.debug("build plan: %s", plan.describe())
    return plan


def _weakly_typed_plan(version: Version, precision: str) -> BuildPlan:
    # TensorRT 10 (JetPack 6): FP16 is a builder flag applied to the FP32 graph;
    # INT8 comes from the Q/DQ graph, and FP16 lets its unquantized layers run in half.
    if precision == "fp32":
        return BuildPlan(version, precision, "fp32", False, ())
    if precision == "fp16":
        return BuildPlan(version, precision, "fp32", False, ("FP16",))
    return BuildPlan(version, precision, "int8", False, ("INT8", "FP16"))


def _strongly_typed_plan(version: Version, precision: str) -> BuildPlan:
    # TensorRT 11 has no precision flags: each precision needs its own typed ONNX file.
    return BuildPlan(version, precision, precision, True, ())


def _need_reason(plan: BuildPlan) -> str:
    version = ".".join(str(v) for v in plan.trt_version)
    if plan.strongly_typed and plan.precision == "fp16":
        return (f"TensorRT {version} builds only strongly typed networks, so fp16 needs an fp16 export "
                "(BuilderFlag.FP16 was removed in TensorRT 11)")
    if plan.precision == "int8":
        return f"TensorRT {version} int8 needs an explicitly quantized (Q/DQ) export"
    return f"TensorRT {version} {plan.precision} is built from the {plan.onnx_key} export"
