"""TensorRT 10.x implicit INT8 calibration from prepared feed dicts (imports tensorrt and pycuda).

Import this module only where :func:`edge_mer_calibration.trt_support.implicit_calibration_supported`
is true for the installed TensorRT: TensorRT 11 removed the implicit
calibrators (``IInt8EntropyCalibrator2``, ``IBuilderConfig.int8_calibrator``,
``BuilderFlag.INT8``) in favour of explicit Q/DQ quantization, and they are
deprecated since 10.1. Networks are explicit-batch in TensorRT 10, so the
shape of each calibration batch is the calibration profile's, and
:meth:`EntropyCalibrator.get_batch_size` only reports the batch size used.

Device buffers live in the device's primary CUDA context (the one the CUDA
runtime, and hence the TensorRT builder, works in), pushed only around
allocation, copies and release, as the runtime's TensorRT backend does.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from edge_mer.backends.tensorrt.builder import make_logger, parse_onnx
from edge_mer.errors import BackendError, InputError
from edge_mer_calibration.trt_support import calibration_batches, implicit_calibration_supported

log = logging.getLogger(__name__)


class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
    """Serves feed dicts to TensorRT's entropy calibration, batch by batch, and keeps the cache at ``cache_path``.

    ``feeds`` are re-cut into batches of exactly ``batch_size`` samples
    (:func:`calibration_batches`); each input gets one device buffer that
    every batch is copied into. With ``use_cache`` an existing cache file is
    handed to TensorRT, which then skips calibration. Use as a context
    manager (or call :meth:`free`) to release the device memory.
    """

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]], cache_path: str | Path, batch_size: int = 1,
                 use_cache: bool = True, device: int = 0) -> None:
        trt.IInt8EntropyCalibrator2.__init__(self)
        if not implicit_calibration_supported(trt.__version__):
            raise BackendError(f"TensorRT {trt.__version__} has no implicit INT8 calibrators (removed in 11); "
                               "use an explicitly quantized (Q/DQ) ONNX file")
        self.batches = calibration_batches(feeds, batch_size)
        self._batch_size = batch_size  # not batch_size: the TensorRT base class has that name as a property
        self.cache_path = Path(cache_path)
        self.use_cache = use_cache
        self.served = 0
        self.error: str | None = None
        cuda.init()
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            self._buffers: dict[str, Any] | None = {name: cuda.mem_alloc(array.nbytes)
                                             for name, array in self.batches[0].items()}
        finally:
            self._ctx.pop()

    def get_batch_size(self) -> int:
        """Samples per calibration batch."""
        return self._batch_size

    def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
        """Device pointers holding the next batch, one per name in ``names``; None when all were served.

        TensorRT calls this from C++ code that must not see a Python exception
        (it would terminate the process), so failures are kept in :attr:`error`
        and end the calibration instead.
        """
        if self.served >= len(self.batches) or self._buffers is None or self.error is not None:
            return None
        batch = self.batches[self.served]
        missing = [name for name in names if name not in batch]
        if missing:
            return self._fail(f"TensorRT asked for input(s) {missing}; the calibration feeds hold {sorted(batch)}")
        try:
            self._ctx.push()
            try:
                for name in names:
                    cuda.memcpy_htod(self._buffers[name], batch[name])
            finally:
                self._ctx.pop()
        except cuda.Error as exc:
            return self._fail(f"copying calibration batch {self.served} to the GPU failed ({exc})")
        self.served += 1
        return [int(self._buffers[name]) for name in names]

    def _fail(self, message: str) -> None:
        self.error = message
        log.error("INT8 calibration: %s", message)
        return None

    def read_calibration_cache(self) -> bytes | None:
        """The cache file's bytes when ``use_cache`` and it exists (TensorRT then skips calibration), else None."""
        if not (self.use_cache and self.cache_path.is_file()):
            return None
        try:
            data = self.cache_path.read_bytes()
        except OSError as exc:
            log.warning("cannot read the INT8 calibration cache %s (%s); calibrating", self.cache_path, exc)
            return None
        log.info("using the INT8 calibration cache %s", self.cache_path)
        return data

    def write_calibration_cache(self, cache: Any) -> None:
        """Write TensorRT's calibration table to ``cache_path`` atomically (plain bytes, as trtexec reads them)."""
        data = bytes(cache)
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.cache_path.name}.", suffix=".tmp",
                                       dir=self.cache_path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.cache_path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:  # raising here would terminate the process (called from TensorRT's C++ side)
            self._fail(f"cannot write the calibration cache {self.cache_path} ({exc.strerror or exc})")
            return
        log.info("wrote the INT8 calibration cache %s (%d bytes, %d batches)", self.cache_path, len(data),
                 self.served)

    def free(self) -> None:
        """Release the device buffers (idempotent)."""
        if self._buffers is None:
            return
        self._ctx.push()
        try:
            for buffer in self._buffers.values():
                buffer.free()
        finally:
            self._ctx.pop()
        self._buffers = None

    def __enter__(self) -> EntropyCalibrator:
        return self

    def __exit__(self, *_: object) -> None:
        self.free()


def _calibration_profile(builder: Any, network: Any, batch: Mapping[str, np.ndarray]) -> Any:
    """An optimisation profile whose min = opt = max is the calibration batch shape of every input."""
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in batch:
            raise InputError(f"network input {tensor.name!r} has no calibration data (feeds hold {sorted(batch)})")
        shape = tuple(batch[tensor.name].shape)
        declared = tuple(tensor.shape)
        if len(declared) != len(shape) or any(d not in (-1, s) for d, s in zip(declared, shape)):
            raise InputError(f"calibration batch for {tensor.name!r} is {list(shape)}, the network declares "
                             f"{list(declared)}")
        profile.set_shape(tensor.name, shape, shape, shape)
    return profile


def write_calibration_cache(onnx_path: str | Path, feeds: Sequence[Mapping[str, np.ndarray]],
                            cache_path: str | Path, batch_size: int = 1, workspace_mib: int = 1024) -> Path:
    """Calibrate ``onnx_path`` for implicit INT8 on ``feeds`` and write TensorRT's cache to ``cache_path``.

    Builds an INT8 engine once (always calibrating afresh: an existing cache
    is replaced) and discards it; the cache is what a TensorRT 10 build with
    ``BuilderFlag.INT8`` reuses. Raises :class:`BackendError` when the build
    or the calibration fails.
    """
    onnx_path, cache_path = Path(onnx_path), Path(cache_path)
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = parse_onnx(trt, network, logger, onnx_path)  # noqa: F841  (owns the weights during the build)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.set_flag(trt.BuilderFlag.INT8)
    with EntropyCalibrator(feeds, cache_path, batch_size, use_cache=False) as calibrator:
        profile = _calibration_profile(builder, network, calibrator.batches[0])
        if config.add_optimization_profile(profile) < 0:
            raise BackendError(f"TensorRT rejected the calibration profile for {onnx_path.name}")
        config.set_calibration_profile(profile)
        config.int8_calibrator = calibrator
        engine = builder.build_serialized_network(network, config)
        if calibrator.error is not None:
            raise BackendError(f"INT8 calibration of {onnx_path.name} failed: {calibrator.error}")
        if engine is None:
            raise BackendError(f"TensorRT could not build an INT8 engine for {onnx_path.name} (see its log)")
        served = calibrator.served
    if not cache_path.is_file():
        raise BackendError(f"TensorRT built {onnx_path.name} but wrote no calibration cache to {cache_path}")
    log.info("%s: calibrated on %d batches of %d; cache %s", onnx_path.name, served, batch_size, cache_path)
    return cache_path
