"""What to build for a TensorRT version and a precision, decided without TensorRT.

Every build is strongly typed: the precision is the ONNX file's own (FP16
from the FP16 export, whose inputs and outputs stay float32; INT8 from the
Q/DQ export), and no precision builder flag is ever set.  TensorRT 10.12
deprecated the weak-typing flags (``BuilderFlag.FP16``, ``INT8``) and
TensorRT 11 removed them, while strongly typed networks build the same way
on TensorRT 10.3 (JetPack 6) and 11, so one rule serves every supported
version: on 10.x the network is created with ``STRONGLY_TYPED``, on 11 that
is the default and the (deprecated) flag is left out.  This module turns
that into a :class:`BuildPlan` so the rules are unit-tested on hosts
without TensorRT.
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
#: From this major on, networks are always strongly typed and the creation flag is deprecated.
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
    ``ModelRef.files``; ``creation_flag`` says whether ``create_network``
    must be given ``STRONGLY_TYPED`` (TensorRT 10.x) or not (11, where
    strong typing is the default and the flag deprecated).
    """

    trt_version: Version
    precision: str
    onnx_key: str
    creation_flag: bool

    def describe(self) -> str:
        """One line for logs and error messages."""
        version = ".".join(str(v) for v in self.trt_version)
        how = "STRONGLY_TYPED network flag" if self.creation_flag else "strongly typed by default"
        return f"TensorRT {version}, {self.precision} from the {self.onnx_key} ONNX file, {how}, no precision flags"


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
    plan = BuildPlan(version, precision, precision, creation_flag=major < STRONGLY_TYPED_MAJOR)
    if plan.onnx_key not in available:
        have = ", ".join(sorted(available)) or "none"
        raise BackendError(f"{_need_reason(plan)} but the bundle has no {plan.onnx_key} ONNX file (has: {have})")
    log.debug("build plan: %s", plan.describe())
    return plan


def _need_reason(plan: BuildPlan) -> str:
    version = ".".join(str(v) for v in plan.trt_version)
    if plan.precision == "fp16":
        return (f"TensorRT {version} builds strongly typed networks, so fp16 needs the fp16 export "
                "(edge-mer export writes it)")
    if plan.precision == "int8":
        return f"TensorRT {version} int8 needs an explicitly quantized (Q/DQ) export"
    return f"TensorRT {version} {plan.precision} is built from the {plan.onnx_key} export"
