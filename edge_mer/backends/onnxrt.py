"""ONNX Runtime backend: the CPU default, and CUDA/TensorRT execution providers where present.

ONNX Runtime's telemetry is off: on Linux, onnxruntime records an event with
the interpreter's path, the OS and CPU in
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` as soon as it is imported,
unless ``ORT_DISABLE_TELEMETRY`` is set at that import. Importing this module
sets it (unless the user did: ``ORT_DISABLE_TELEMETRY=0`` keeps telemetry on);
the runtime imports onnxruntime only through this module, and the export
tool imports this module before onnxruntime. :func:`onnxruntime_module` also
calls ``onnxruntime.disable_telemetry_events()`` before sessions are created,
for the events sessions send where the build has them (e.g. Windows ETW).

The session reads the model from the path :func:`~edge_mer.bundle.load_bundle`
resolved and hashed (external data beside it), so it runs those files.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from edge_mer.backends.base import Backend, TensorSpec
from edge_mer.errors import BackendError

log = logging.getLogger(__name__)

# At import, not in onnxruntime_module(): the calibration readers and the export tools import onnxruntime
# themselves, and onnxruntime writes its telemetry database during that import. Child processes inherit it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

#: Preferred order when no providers are configured.
PROVIDER_ORDER: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def choose_providers(requested: tuple[str, ...], available: list[str]) -> list[str]:
    """The providers to ask for: the requested ones (all must exist) or the preferred available ones."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendError(f"onnxruntime provider {missing[0]!r} is not available here "
                               f"(available: {', '.join(available)})")
        return list(requested)
    return [p for p in PROVIDER_ORDER if p in available]


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise BackendError(f"tensor {arg.name!r} has type {arg.type}, which edge-mer does not handle")
    # ORT reports unnamed dynamic axes as None; name them so feeds can be checked for consistency.
    shape = tuple(d if isinstance(d, int) else (d or f"{arg.name}:{i}") for i, d in enumerate(arg.shape))
    return TensorSpec(arg.name, shape, dtype)


@functools.cache
def onnxruntime_module() -> ModuleType:
    """``onnxruntime``, imported with its telemetry events disabled (once per process)."""
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime


def ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's pybind exceptions (they derive from Exception directly, so catch exactly these)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (library messages can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OrtBackend(Backend):
    """Runs the model's file for the requested precision in an ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"

    @classmethod
    def availability(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    def _load(self) -> None:
        ort = onnxruntime_module()
        opts = self.options.onnxruntime
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.intra_op_threads
        so.inter_op_num_threads = opts.inter_op_threads
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts.graph_optimization]
        so.log_severity_level = 3  # ORT's warnings about unused initializers are noise to a device log
        providers = choose_providers(opts.providers, ort.get_available_providers())
        path = self.model.file.path
        self._errors = ort_errors()
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except self._errors as exc:
            raise BackendError(f"onnxruntime cannot load {path}: {first_line(exc)}") from None
        self._inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self._outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self._outputs]
        log.info("onnxruntime %s: %s on %s", self.model.name, path.name, ", ".join(self._session.get_providers()))

    @property
    def providers(self) -> list[str]:
        """The execution providers the loaded session actually uses."""
        if not self.loaded:
            raise BackendError("onnxruntime backend is not loaded; call load() first")
        return list(self._session.get_providers())

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self._output_names, dict(feeds))
        except self._errors as exc:
            raise BackendError(f"onnxruntime failed on {self.model.name!r}: {first_line(exc)}") from None
        return dict(zip(self._output_names, outputs))

    def _close(self) -> None:
        del self._session
