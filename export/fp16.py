"""FP16 conversion with float32 inputs and outputs.

The conversion is ONNX Runtime's maintained converter
(``onnxruntime.transformers``: ``OnnxModel.convert_float_to_float16``; its
``float16`` module is ONNX Runtime's maintained copy of onnxconverter-common's,
shipped with onnxruntime, so no extra package is needed).  Inputs and outputs stay float32
(``keep_io_types``), so callers and the runtime's preprocessing do not
change; Cast nodes sit at the graph edges.

Ops kept in float32 (:data:`KEEP_FP32`, added to the converter's own
``DEFAULT_OP_BLOCK_LIST``): ``Softmax``, because the encoders' output is a
probability vector consumed by fusion, and float16 resolves only ~1e-3 near
1.0.  The speech model's mean/std pooling (ReduceMean, Sub, Mul, Div, Sqrt)
was measured in float16 and is not kept in float32: its largest intermediate
is ``var * n`` (about 1.2e2 for a 2 s window, growing linearly with the
window), far below float16's 65504 for any window under several minutes,
and on EMO-DB windows of 2, 10 and 30 s the probabilities' max |diff| to
float32 was 1.1-1.2e-3 whether the pooling ran in float16 or float32.
Pass ``keep_fp32`` to block more op types for another model.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from edge_mer_export.errors import ExportError
from edge_mer_export.onnx_checks import (check_rewritten, first_line, load_checked,
                                         max_difference, run_model, sample_feed, strip_unused_opsets)

log = logging.getLogger(__name__)

#: Op types left in float32 on top of the converter's DEFAULT_OP_BLOCK_LIST (see the module docstring).
KEEP_FP32: tuple[str, ...] = ("Softmax",)


def convert(model: onnx.ModelProto, keep_fp32: Sequence[str] = KEEP_FP32) -> onnx.ModelProto:
    """The float16 version of ``model`` (float32 I/O, ``keep_fp32`` op types in float32), topologically sorted."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    wrapped.convert_float_to_float16(use_symbolic_shape_infer=True, keep_io_types=True,
                                     op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep_fp32])
    # The converter appends its Cast nodes at the end of the node list; the checker needs graph order.
    wrapped.topological_sort(is_deterministic=True)
    converted = wrapped.model
    strip_unused_opsets(converted)
    return converted


def make_fp16(src: Path, dst: Path, *, keep_fp32: Sequence[str] = KEEP_FP32,
              dims: Mapping[str, int] | None = None) -> Path:
    """Write the float16 version of ``src`` to ``dst`` and return ``dst``.

    The result keeps ``src``'s input/output names, float32 dtypes and axes,
    passes ``onnx.checker`` (full check) and runs on ONNX Runtime's CPU
    provider with finite outputs on a seeded random input (``dims`` sizes its
    dynamic axes, as in :func:`~edge_mer_export.onnx_checks.prepare_model`).
    """
    src, dst = Path(src), Path(dst)
    model = load_checked(src)
    try:
        converted = convert(model, keep_fp32)
    except ImportError as exc:  # symbolic shape inference needs sympy
        raise ExportError(f"{src}: float16 conversion needs {exc.name or 'a missing package'}: {first_line(exc)}"
                          ) from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ExportError(f"{src}: float16 conversion failed: {first_line(exc)}") from None
    check_rewritten(model, converted, src, "float16")
    feed = sample_feed(model, dims)
    reference, candidate = run_model(model, feed), run_model(converted, feed)
    name, diff = max_difference(reference, candidate)
    if not np.isfinite(diff):
        raise ExportError(f"{src}: the float16 model's output {name!r} is not finite on a random input; "
                          "block the overflowing op types with keep_fp32")
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(dst))
    log.info("fp16 %s -> %s: max |diff| %.2g on a random input (%s); float32 kept for %s", src.name, dst, diff,
             name, ", ".join(keep_fp32) or "nothing extra")
    return dst
