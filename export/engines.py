"""TensorRT steps of an export: engines (``--engines``) and the TensorRT 10 implicit-INT8 calibration cache.

Both need TensorRT and a GPU, which export hosts often lack: then they are
skipped and the report says so. Engines are normally built on the device by
the runtime's tensorrt backend at first run; ONNX is what travels.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_mer.backends.options import BackendOptions, TrtOptions
from edge_mer.backends.registry import backend_class, create_backend
from edge_mer.bundle import load_bundle
from edge_mer.bundle.loader import Bundle
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.feeds import bundle_refs

log = logging.getLogger(__name__)


def tensorrt_reason() -> str | None:
    """None when TensorRT can build here, else why not."""
    return backend_class("tensorrt").availability()


def build_engines(bundle_dir: Path, encoders: Sequence[str]) -> str:
    """Build and cache an engine per model and precision; returns a one-line summary for the report.

    The models are the ``encoders``, the detectors and the fusion head, each
    with the optimisation profile a default run feeds it
    (:func:`~edge_mer.pipeline.feeds.bundle_refs`), so a daemon with the
    default configuration finds these engines in the cache.
    """
    reason = tensorrt_reason()
    if reason is not None:
        message = f"skipped: {reason}; the device builds its engines at first run"
        log.warning("engines %s", message)
        return message
    bundle = load_bundle(bundle_dir)
    options = BackendOptions(name="tensorrt", tensorrt=TrtOptions(cache_dir=bundle_dir / "engines"))
    built = []
    for ref in bundle_refs(bundle, RunConfig(), encoders):
        with create_backend(ref, options) as backend:
            built.append(f"{ref.name}/{ref.precision}: {backend.engine_path.name}")
    return "built " + ", ".join(built)


def write_implicit_cache(bundle_dir: Path, source: Bundle, encoder: str, feeds: Sequence[dict[str, np.ndarray]]
                         ) -> str:
    """On TensorRT 10.x, an implicit-INT8 calibration cache for ``encoder`` beside its fp32 file in ``bundle_dir``."""
    reason = tensorrt_reason()
    if reason is not None:
        return f"skipped: {reason}"
    import tensorrt as trt

    from edge_mer_calibration.trt_support import implicit_calibration_supported

    if not implicit_calibration_supported(trt.__version__):
        return f"skipped: TensorRT {trt.__version__} has no implicit INT8 calibrators (removed in 11)"
    from edge_mer_calibration.trt_calibrator import write_calibration_cache

    fp32 = source.encoder(encoder).models["fp32"].path
    cache = (bundle_dir / fp32).with_suffix(".int8.calib")
    write_calibration_cache(bundle_dir / fp32, list(feeds), cache)
    return f"written {cache.relative_to(bundle_dir)}"
