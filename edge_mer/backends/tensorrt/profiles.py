"""Optimisation-profile shapes for dynamic inputs, and the ONNX names of dynamic axes.

TensorRT needs a (min, opt, max) shape for every input with a dynamic axis
before it can build.  Each axis name takes, in this order: the configured
``TrtOptions.dynamic_dims`` entry (a config narrowing or widening one axis),
the range the caller will feed (``ModelRef.dim_ranges``, which the pipeline
derives from its configuration: faces per frame, speech window lengths),
and for batch symbols ``(1, opt_batch, max_batch)``.  An axis with none is
an error naming the input, the axis and the option to set, because guessing
a range would either waste memory or build an engine that refuses real
inputs later.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.backends.base import Dim, TensorSpec
from edge_mer.backends.options import TrtOptions
from edge_mer.errors import BackendError

log = logging.getLogger(__name__)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """The (min, opt, max) shapes of one input in one optimisation profile."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    def contains(self, shape: Sequence[int]) -> bool:
        """True when ``shape`` has this rank and lies between min and max on every axis."""
        return len(shape) == len(self.min) and all(
            lo <= int(d) <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def describe(self) -> str:
        return f"{self.name} min {list(self.min)} opt {list(self.opt)} max {list(self.max)}"


Range = tuple[int, int, int]


def dim_range(spec: TensorSpec, axis: int, dim: Dim, options: TrtOptions,
              fed: Mapping[str, Range] | None = None) -> Range:
    """(min, opt, max) of one axis; fixed sizes give (d, d, d).  ``fed`` is ``ModelRef.dim_ranges``."""
    if isinstance(dim, str):
        # An explicit range wins, so a config can tune one symbol alone.
        if dim in options.dynamic_dims:
            lo, opt, hi = options.dynamic_dims[dim]
            if fed and dim in fed and not lo <= fed[dim][1] <= hi:
                # A narrowed profile must still hold what this run feeds, or every call would fail later.
                raise BackendError(
                    f"input {spec.name!r} axis {axis}: dynamic_dims.{dim} = {[lo, opt, hi]} leaves out the size "
                    f"{fed[dim][1]} this run feeds (derived range {list(fed[dim])}); widen it or remove it")
            return int(lo), int(opt), int(hi)
        if fed and dim in fed:
            lo, opt, hi = fed[dim]
            return int(lo), int(opt), int(hi)
        if dim in options.batch_symbols:
            return 1, options.opt_batch, options.max_batch
        raise BackendError(
            f"input {spec.name!r} axis {axis} is the dynamic dimension {dim!r} with no range; "
            f"set the TensorRT option dynamic_dims.{dim} = [min, opt, max] (or add {dim!r} to batch_symbols)")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise BackendError(f"input {spec.name!r} axis {axis}: dimension {dim!r} is neither a size nor a name")
    if dim < 0:
        raise BackendError(
            f"input {spec.name!r} axis {axis} is dynamic (-1) but has no name in the ONNX file; "
            "export it with a named dynamic axis and set the TensorRT option dynamic_dims.<name> = [min, opt, max]")
    size = int(dim)
    return size, size, size


def profile_shapes(inputs: Sequence[TensorSpec], options: TrtOptions,
                   fed: Mapping[str, Range] | None = None) -> tuple[ShapeRange, ...]:
    """One :class:`ShapeRange` per input, in input order, for a single optimisation profile."""
    ranges = []
    for spec in inputs:
        per_axis = [dim_range(spec, axis, dim, options, fed) for axis, dim in enumerate(spec.shape)]
        ranges.append(ShapeRange(
            name=spec.name,
            min=tuple(r[0] for r in per_axis),
            opt=tuple(r[1] for r in per_axis),
            max=tuple(r[2] for r in per_axis),
        ))
        log.debug("profile %s", ranges[-1].describe())
    return tuple(ranges)


def with_symbols(tensor: str, shape: Sequence[int], names: Sequence[Dim] | None) -> tuple[Dim, ...]:
    """Replace the dynamic (-1) dims of an engine shape by the ONNX names of those axes.

    ``names`` is the ONNX shape of the same tensor.  An axis ONNX leaves
    unnamed becomes ``"<tensor>:<axis>"``, as the onnxruntime backend names it,
    so both backends describe the same model with the same specs.
    """
    dims = [int(d) for d in shape]
    if names is None or len(names) != len(dims):
        names = [-1] * len(dims)
    return tuple(d if d >= 0 else (n if isinstance(n, str) else f"{tensor}:{axis}")
                 for axis, (d, n) in enumerate(zip(dims, names)))


def _value_info_spec(value: object) -> TensorSpec:
    import onnx.helper  # deferred: only the TensorRT load path needs onnx parsed

    tensor_type = value.type.tensor_type  # type: ignore[attr-defined]
    dims: list[Dim] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(str(d.dim_param))
        else:
            dims.append(-1)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    except (KeyError, TypeError, ValueError):
        # The engine reports the real IO dtype; this spec only lends axis names.
        dtype = "unknown"
    return TensorSpec(value.name, tuple(dims), dtype)  # type: ignore[attr-defined]


def onnx_io_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Graph inputs and outputs of an ONNX file, dynamic axes by name (or -1 when unnamed).

    Weights are not loaded: only the graph's value infos are read.
    Initializers listed as graph inputs (old IR versions) are skipped.
    """
    import onnx  # deferred: see _value_info_spec
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise BackendError(f"cannot read ONNX file {path}: {exc.strerror or exc}") from None
    except (DecodeError, ValueError) as exc:
        raise BackendError(f"{path} is not a valid ONNX file: {exc}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_value_info_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_value_info_spec(v) for v in model.graph.output)
    return inputs, outputs
