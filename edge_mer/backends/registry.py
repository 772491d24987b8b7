"""Backends by name, imported only when asked for.

The registry maps a name to ``"module:Class"`` so that listing or choosing a
backend never imports TensorRT, pycuda or onnxruntime up front.  A new
backend is one module plus one line in :data:`BACKENDS`.
"""
from __future__ import annotations

import importlib
import logging

from edge_mer.backends.base import Backend, ModelRef
from edge_mer.backends.options import BackendOptions
from edge_mer.errors import BackendError

log = logging.getLogger(__name__)

#: Backend name -> ``"module:Class"`` of its :class:`~edge_mer.backends.base.Backend`.
BACKENDS: dict[str, str] = {
    "onnxruntime": "edge_mer.backends.onnxrt:OrtBackend",
    "tensorrt": "edge_mer.backends.tensorrt:TensorRTBackend",
}
#: ``auto`` takes the first available backend in this order.
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "onnxruntime")


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``; an unknown name is a :class:`BackendError`."""
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join(("auto", *BACKENDS))
        raise BackendError(f"unknown backend {name!r} (expected one of: {known})") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def availability() -> dict[str, str | None]:
    """For each backend, None when it can run here, else why not."""
    return {name: backend_class(name).availability() for name in BACKENDS}


def resolve_backend_name(name: str) -> str:
    """Turn ``auto`` into a concrete backend and check the named one can run."""
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER:
            reason = backend_class(candidate).availability()
            if reason is None:
                return candidate
            reasons.append(f"{candidate}: {reason}")
            log.debug("auto backend: skipping %s (%s)", candidate, reason)
        raise BackendError("no backend can run here (" + "; ".join(reasons) + ")")
    reason = backend_class(name).availability()
    if reason is not None:
        raise BackendError(f"backend {name!r} is not available: {reason}")
    return name


def create_backend(model: ModelRef, options: BackendOptions | None = None) -> Backend:
    """An unloaded backend for ``model``, chosen by ``options.name`` (``auto`` by default)."""
    options = options or BackendOptions()
    name = resolve_backend_name(options.name)
    return backend_class(name)(model, options)
