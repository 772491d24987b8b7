"""What TensorRT implicit INT8 calibration needs, decided without TensorRT (unit-tested on any host).

TensorRT 10.x still has the implicit-quantization calibrators
(``IInt8EntropyCalibrator2`` and friends, deprecated since 10.1 in favour of
explicit Q/DQ quantization): the builder runs the network on calibration
batches and writes a calibration cache. TensorRT 11 removed them, together
with ``BuilderFlag.INT8`` and ``IBuilderConfig.int8_calibrator``; there INT8
comes only from Q/DQ nodes in the ONNX file (what the ONNX Runtime
quantization path produces). :mod:`edge_mer_calibration.trt_calibrator`
imports TensorRT at module level, so import it only where
:func:`implicit_calibration_supported` is true.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from edge_mer.backends.tensorrt.plan import MIN_MAJOR, parse_version
from edge_mer.errors import InputError

log = logging.getLogger(__name__)

#: The first TensorRT major release without implicit INT8 calibrators.
IMPLICIT_REMOVED_MAJOR = 11


def implicit_calibration_supported(trt_version: str) -> bool:
    """Whether this project can run implicit INT8 calibration with TensorRT ``trt_version``.

    True for 10.x (the oldest release the runtime supports, ``MIN_MAJOR``, up
    to the last one with calibrators); False for 11 and later, and for
    releases older than the runtime supports. A version that cannot be read
    raises :class:`~edge_mer.errors.BackendError`.
    """
    major = parse_version(trt_version)[0]
    return MIN_MAJOR <= major < IMPLICIT_REMOVED_MAJOR


def _stack(feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every input's arrays concatenated along the batch axis, checked for one name set, shape and float dtype."""
    names = sorted(feeds[0])
    stacked: dict[str, np.ndarray] = {}
    for i, feed in enumerate(feeds):
        if sorted(feed) != names:
            raise InputError(f"calibration feed {i} names inputs {sorted(feed)}, feed 0 names {names}")
    for name in names:
        arrays = [np.asarray(feed[name]) for feed in feeds]
        for i, array in enumerate(arrays):
            if array.ndim < 1 or array.shape[1:] != arrays[0].shape[1:]:
                raise InputError(f"calibration feed {i}: {name} has shape {list(array.shape)}, feed 0 has "
                                 f"{list(arrays[0].shape)}; expected one shape after the batch axis")
            if array.dtype.kind != "f":
                raise InputError(f"calibration feed {i}: {name} is {array.dtype}; expected floating point data")
        stacked[name] = np.concatenate(arrays, axis=0)
    sizes = {name: a.shape[0] for name, a in stacked.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"calibration inputs hold different numbers of samples: {sizes}")
    return stacked


def calibration_batches(feeds: Sequence[Mapping[str, np.ndarray]], batch_size: int) -> list[dict[str, np.ndarray]]:
    """The feeds re-cut into batches of exactly ``batch_size`` samples, C-contiguous float32, in order.

    TensorRT copies a fixed number of bytes per input for every batch, so a
    last partial batch is dropped (and logged). Raises :class:`InputError`
    when there is no full batch, or when feeds disagree on names or shapes.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if len(feeds) == 0:
        raise InputError("no calibration feeds; expected at least one {input name: array} dict")
    stacked = _stack(feeds)
    total = next(iter(stacked.values())).shape[0]
    full = total // batch_size
    if full == 0:
        raise InputError(f"{total} calibration samples are fewer than one batch of {batch_size}")
    if total % batch_size:
        log.info("calibration: last %d of %d samples dropped (batches of %d)", total % batch_size, total, batch_size)
    return [{name: np.ascontiguousarray(array[i * batch_size:(i + 1) * batch_size], dtype=np.float32)
             for name, array in stacked.items()} for i in range(full)]
