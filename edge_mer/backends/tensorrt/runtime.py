"""The native TensorRT backend: cached engines, pinned buffers, one CUDA stream.

``tensorrt`` and ``pycuda`` are imported inside methods so that importing
this module (and listing backends) works on hosts without them.  The CUDA
context is the device's *primary* context, pushed only around each load,
inference and close: TensorRT uses the CUDA runtime, which also works in the
primary context, and a context that is never left pushed lets any thread
call :meth:`infer` and leaves nothing on the stack at interpreter exit.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_mer.backends.base import Backend, ModelFile, ModelRef, TensorSpec
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.tensorrt.builder import build_engine, make_logger
from edge_mer.backends.tensorrt.cache import (EngineKey, discard, engine_path, options_digest, profile_digest,
                                              read_blob, timing_cache_path, write_blob)
from edge_mer.backends.tensorrt.plan import MIN_MAJOR, BuildPlan, build_plan, parse_version
from edge_mer.backends.tensorrt.profiles import ShapeRange, onnx_io_specs, profile_shapes, with_symbols
from edge_mer.errors import BackendError, InputError

log = logging.getLogger(__name__)


@dataclass
class _Buffer:
    """A page-locked host array and a device allocation of the same size, reused across calls."""

    host: np.ndarray
    device: Any


def _free_host(host: np.ndarray) -> None:
    # pagelocked_empty arrays are views of a HostAllocation; freeing it now, with the
    # context pushed, avoids pycuda freeing it later from a thread with no context.
    free = getattr(host.base, "free", None)
    if free is not None:
        free()


class TensorRTBackend(Backend):
    """Runs one encoder with a TensorRT engine built from its ONNX file and cached on disk.

    After :meth:`load`, :attr:`engine_path` is the cache file and
    :attr:`engine_from_cache` says whether it was reused or built now.
    """

    name: ClassVar[str] = "tensorrt"

    def __init__(self, model: ModelRef, options: BackendOptions | None = None) -> None:
        super().__init__(model, options)
        self.engine_path: Path | None = None
        self.engine_from_cache = False
        self.plan: BuildPlan | None = None
        self._cuda_ctx: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, _Buffer] = {}
        self._ranges: dict[str, ShapeRange] = {}
        self._lock = threading.Lock()

    @classmethod
    def availability(cls) -> str | None:
        """None when TensorRT >= 10, pycuda and a CUDA device are present, else why not."""
        try:
            import tensorrt as trt
        except (ImportError, OSError) as exc:
            return f"the tensorrt Python package cannot be imported ({exc})"
        version = str(getattr(trt, "__version__", ""))
        try:
            major = parse_version(version)[0]
        except BackendError:
            return f"cannot read the TensorRT version {version!r}"
        if major < MIN_MAJOR:
            return f"TensorRT {version} is too old (need >= {MIN_MAJOR}.0)"
        try:
            import pycuda.driver as cuda
        except (ImportError, OSError) as exc:
            return f"pycuda cannot be imported ({exc})"
        try:
            cuda.init()
            count = cuda.Device.count()
        except cuda.Error as exc:
            return f"the CUDA driver is not usable ({exc})"
        return None if count > 0 else "no CUDA device found"

    @contextlib.contextmanager
    def _cuda(self) -> Iterator[None]:
        """Make this backend's CUDA context current for the duration of the block."""
        self._cuda_ctx.push()
        try:
            yield
        finally:
            self._cuda_ctx.pop()

    def _load(self) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        opts = self.options.tensorrt
        plan = build_plan(trt.__version__, self.model.precision, self.model.files)
        model_file = self.model.files[plan.onnx_key]
        onnx_inputs, onnx_outputs = onnx_io_specs(model_file.path)
        ranges = profile_shapes(onnx_inputs, opts, self.model.dim_ranges)
        device = _cuda_device(cuda, opts.device)
        try:
            self._cuda_ctx = device.retain_primary_context()
        except cuda.Error as exc:
            raise BackendError(f"cannot use CUDA device {opts.device} ({exc})") from None
        loaded = False
        try:
            with self._cuda():
                self._logger = make_logger(trt)
                self._runtime = trt.Runtime(self._logger)
                self._engine = self._engine_for(device, plan, model_file, ranges)
                self._context = self._engine.create_execution_context()
                if self._context is None:
                    raise BackendError(f"TensorRT cannot create an execution context for {self.model.name!r} "
                                       "(out of GPU memory?)")
                self._stream = cuda.Stream()
                inputs, outputs = self._io_specs(trt, onnx_inputs, onnx_outputs)
            self._inputs, self._outputs = inputs, outputs
            self.plan = plan
            self._ranges = {r.name: r for r in ranges}
            loaded = True
        finally:
            if not loaded:
                self._release()

    def _engine_key(self, device: Any, plan: BuildPlan, model_file: ModelFile,
                    ranges: tuple[ShapeRange, ...]) -> EngineKey:
        import tensorrt as trt

        opts = self.options.tensorrt
        major, minor = device.compute_capability()
        return EngineKey(
            model_name=self.model.name,
            # The bundle's manifest sha256, checked when the bundle was verified: hashing
            # a large model again on every load would cost seconds on a Jetson.
            model_sha256=model_file.sha256.lower(),
            precision=plan.precision,
            trt_version=str(trt.__version__),
            gpu_name=str(device.name()),
            compute_capability=f"{major}.{minor}",
            profile_digest=profile_digest(ranges),
            options_digest=options_digest(plan, opts.workspace_mib, opts.builder_optimization_level),
        )

    def _engine_for(self, device: Any, plan: BuildPlan, model_file: ModelFile,
                    ranges: tuple[ShapeRange, ...]) -> Any:
        """Deserialize the cached engine, or build, cache and deserialize a new one."""
        opts = self.options.tensorrt
        key = self._engine_key(device, plan, model_file, ranges)
        cache_dir = opts.resolved_cache_dir()
        path = engine_path(key, cache_dir)
        self.engine_path = path
        data = read_blob(path)
        if data is not None:
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is not None:
                log.info("%s: using cached TensorRT engine %s", self.model.name, path)
                self.engine_from_cache = True
                return engine
            log.warning("%s: cached engine %s does not deserialize; rebuilding", self.model.name, path)
            discard(path)
        timing = (timing_cache_path(key.trt_version, key.gpu_name, key.compute_capability, cache_dir)
                  if opts.timing_cache else None)
        data = build_engine(model_file.path, plan, ranges, opts, timing_cache=timing, logger=self._logger)
        try:
            write_blob(path, data)
        except OSError as exc:
            log.warning("%s: cannot cache the engine at %s (%s); it will be rebuilt next time",
                        self.model.name, path, exc.strerror or exc)
        self.engine_from_cache = False
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendError(f"TensorRT built an engine for {self.model.name!r} but cannot deserialize it")
        return engine

    def _io_specs(self, trt: Any, onnx_inputs: tuple[TensorSpec, ...],
                  onnx_outputs: tuple[TensorSpec, ...]) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Input and output specs from the engine, dynamic axes named as in the ONNX file."""
        symbolic = {s.name: s.shape for s in (*onnx_inputs, *onnx_outputs)}
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            trt_dtype = self._engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype)).name
            except TypeError:
                raise BackendError(f"tensor {name!r} has TensorRT type {trt_dtype} with no numpy equivalent") from None
            shape = with_symbols(name, tuple(self._engine.get_tensor_shape(name)), symbolic.get(name))
            spec = TensorSpec(name, shape, dtype)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(spec)
            else:
                outputs.append(spec)
        return tuple(inputs), tuple(outputs)

    def _buffer(self, cuda: Any, name: str, dtype: np.dtype, count: int) -> _Buffer:
        """The buffers for tensor ``name``, grown (never shrunk) to hold ``count`` elements."""
        buf = self._buffers.get(name)
        if buf is None or buf.host.size < count:
            if buf is not None:
                buf.device.free()
                _free_host(buf.host)
            host = cuda.pagelocked_empty(max(count, 1), dtype)
            buf = _Buffer(host, cuda.mem_alloc(host.nbytes))
            self._buffers[name] = buf
            log.debug("%s: %s buffer grown to %d bytes", self.model.name, name, host.nbytes)
        return buf

    def _stage_input(self, cuda: Any, spec: TensorSpec, value: np.ndarray) -> None:
        array = np.ascontiguousarray(value)
        rng = self._ranges.get(spec.name)
        if rng is not None and not rng.contains(array.shape):
            raise InputError(f"input {spec.name!r}: shape {list(array.shape)} is outside the engine profile "
                             f"({rng.describe()}); widen backend.tensorrt.dynamic_dims or the run setting it comes from")
        if not self._context.set_input_shape(spec.name, array.shape):
            raise InputError(f"input {spec.name!r}: TensorRT refused shape {list(array.shape)}, "
                             f"expected {spec.describe()}")
        buf = self._buffer(cuda, spec.name, array.dtype, array.size)
        host = buf.host[:array.size]
        host[...] = array.reshape(-1)
        cuda.memcpy_htod_async(buf.device, host, self._stream)
        self._context.set_tensor_address(spec.name, int(buf.device))

    def _stage_output(self, cuda: Any, spec: TensorSpec) -> tuple[int, ...]:
        shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
        if any(d < 0 for d in shape):
            raise BackendError(f"output {spec.name!r} has a data-dependent shape {list(shape)}, "
                               "which the tensorrt backend does not support")
        buf = self._buffer(cuda, spec.name, np.dtype(spec.dtype), math.prod(shape))
        self._context.set_tensor_address(spec.name, int(buf.device))
        return shape

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pycuda.driver as cuda

        with self._lock, self._cuda():
            for spec in self.input_specs:
                self._stage_input(cuda, spec, feeds[spec.name])
            shapes = {spec.name: self._stage_output(cuda, spec) for spec in self.output_specs}
            if not self._context.execute_async_v3(self._stream.handle):
                raise BackendError(f"TensorRT inference failed for {self.model.name!r}; see the TensorRT log")
            for name, shape in shapes.items():
                count = math.prod(shape)
                if count:
                    buf = self._buffers[name]
                    cuda.memcpy_dtoh_async(buf.host[:count], buf.device, self._stream)
            self._stream.synchronize()
            # Copies: the pinned buffers are reused by the next call.
            return {name: self._buffers[name].host[:math.prod(shape)].reshape(shape).copy()
                    for name, shape in shapes.items()}

    def _close(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        """Free buffers, context, engine and runtime in the CUDA context, then let the context go."""
        ctx = self._cuda_ctx
        if ctx is None:
            return
        try:
            with self._cuda():
                for buf in self._buffers.values():
                    buf.device.free()
                    _free_host(buf.host)
                self._buffers.clear()
                # Order matters: a context must go before its engine, the engine before its runtime.
                self._context = None
                self._engine = None
                self._runtime = None
                self._stream = None
        finally:
            self._cuda_ctx = None
            self._ranges = {}
            _detach(ctx)


def _cuda_device(cuda: Any, index: int) -> Any:
    """``pycuda.driver.Device(index)`` after initialising the driver, as a BackendError when absent."""
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        raise BackendError(f"the CUDA driver is not usable ({exc})") from None
    if not 0 <= index < count:
        have = f"0..{count - 1}" if count else "none"
        raise BackendError(f"CUDA device {index} does not exist (TensorRT option device; this host has: {have})")
    return cuda.Device(index)


def _detach(ctx: Any) -> None:
    # Drops this backend's reference to the primary context; the driver frees it with the last one.
    import pycuda.driver as cuda

    try:
        ctx.detach()
    except cuda.Error as exc:
        log.warning("releasing the CUDA context failed: %s", exc)
