"""Build a serialized TensorRT engine from an ONNX file.

``tensorrt`` is imported inside the functions so that importing this module
never needs TensorRT.  The build follows a :class:`BuildPlan`: the network is
always strongly typed (the ``STRONGLY_TYPED`` creation flag on TensorRT 10.x,
the default on 11) and no precision builder flag is set, so no build touches
the flags TensorRT 10.12 deprecated and 11 removed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mer.backends.options import TrtOptions
from edge_mer.backends.tensorrt.cache import read_blob, write_blob
from edge_mer.backends.tensorrt.plan import BuildPlan
from edge_mer.backends.tensorrt.profiles import ShapeRange
from edge_mer.errors import BackendError

log = logging.getLogger(__name__)

#: Parser errors shown in the one-line message; the TensorRT log has the rest.
_MAX_PARSER_ERRORS = 3


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that prints warnings and errors (TensorRT's own stderr logger)."""
    return trt.Logger(trt.Logger.WARNING)


def network_flags(trt: Any, plan: BuildPlan) -> int:
    """The ``create_network`` bit mask for ``plan``.

    EXPLICIT_BATCH is never set: TensorRT 10 ignores it (networks are always
    explicit batch).  TensorRT 10.x gets STRONGLY_TYPED; TensorRT 11 builds
    strongly typed networks by default (its flag is deprecated and ignored),
    so it gets 0.
    """
    if not plan.creation_flag:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise BackendError("this TensorRT has no NetworkDefinitionCreationFlag.STRONGLY_TYPED "
                           f"(needed from 10.0 on; {plan.describe()})")
    return 1 << int(flag)


def _parser_error_text(error: Any) -> str:
    desc = " ".join(str(error.desc()).split())
    node = error.node()
    # node() is -1 when the error is not tied to one node (e.g. a graph-level problem).
    return f"{desc} (node {node})" if isinstance(node, int) and node >= 0 else desc


def parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    """Parse ``onnx_path`` into ``network``; returns the parser, which must outlive the build.

    The parser owns the weights the network points to, so it is returned
    for the caller to keep until ``build_serialized_network`` is done.
    """
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weight files relative to the model's directory.
    if parser.parse_from_file(str(onnx_path)):
        return parser
    count = parser.num_errors
    texts = [_parser_error_text(parser.get_error(i)) for i in range(min(count, _MAX_PARSER_ERRORS))]
    more = f" (+{count - len(texts)} more)" if count > len(texts) else ""
    raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(texts) or 'no error given'}{more}")


def add_profile(builder: Any, network: Any, config: Any, ranges: Sequence[ShapeRange]) -> None:
    """Add one optimisation profile covering every network input."""
    by_name = {r.name: r for r in ranges}
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rng = by_name.get(tensor.name)
        if rng is None:
            raise BackendError(f"network input {tensor.name!r} has no profile shape (have: {', '.join(by_name)})")
        if len(tensor.shape) != len(rng.min):
            raise BackendError(f"network input {tensor.name!r} has rank {len(tensor.shape)} "
                               f"but its profile has rank {len(rng.min)} ({rng.describe()})")
        profile.set_shape(tensor.name, rng.min, rng.opt, rng.max)
    if config.add_optimization_profile(profile) < 0:
        raise BackendError("TensorRT rejected the optimisation profile: "
                           + "; ".join(r.describe() for r in ranges))


def configure(trt: Any, config: Any, options: TrtOptions) -> None:
    """Workspace limit and optimisation level; precision comes from the typed ONNX file, not from flags."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.builder_optimization_level


def attach_timing_cache(config: Any, path: Path | None) -> Any:
    """Load the timing cache at ``path`` (empty if missing or corrupt) into ``config``."""
    if path is None:
        return None
    data = read_blob(path) or b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("TensorRT refused the timing cache %s; building without it", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def save_timing_cache(config: Any, path: Path | None) -> None:
    """Write the (updated) timing cache back; failure only costs the next build time."""
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    try:
        write_blob(path, bytes(cache.serialize()))
    except OSError as exc:
        log.warning("cannot save the timing cache to %s (%s)", path, exc.strerror or exc)


def build_engine(onnx_path: Path, plan: BuildPlan, ranges: Sequence[ShapeRange], options: TrtOptions,
                 timing_cache: Path | None = None, logger: Any = None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine as ``plan`` says.

    ``timing_cache`` is where the builder's timing cache is read and saved
    (None disables it).  Raises :class:`BackendError` when parsing or the
    build fails.  Needs a current CUDA context on the target device.
    """
    import tensorrt as trt

    if logger is None:
        logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = parse_onnx(trt, network, logger, Path(onnx_path))
    config = builder.create_builder_config()
    configure(trt, config, options)
    add_profile(builder, network, config, ranges)
    attach_timing_cache(config, timing_cache)
    log.info("building TensorRT engine from %s (%s); this can take minutes", Path(onnx_path).name,
             plan.describe())
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from {Path(onnx_path).name} ({plan.describe()}); "
                           "see the TensorRT messages above")
    save_timing_cache(config, timing_cache)
    data = bytes(serialized)
    log.info("built %s in %.1f s (%d bytes)", Path(onnx_path).name, time.monotonic() - started, len(data))
    del parser  # only now: the network borrowed its weights until the build finished
    return data
