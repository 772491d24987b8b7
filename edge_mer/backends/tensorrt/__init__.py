"""Native TensorRT backend (TensorRT >= 10 with pycuda).

Importing this package never imports ``tensorrt`` or ``pycuda``; they are
loaded when a backend is checked with ``availability()`` or loaded, so the
package can be listed and unit-tested on hosts without a GPU.

Modules: :mod:`.plan` (which ONNX file, typing and flags per TensorRT
version), :mod:`.profiles` (optimisation-profile shapes), :mod:`.cache`
(engine cache keys and atomic files), :mod:`.builder` (the engine build) and
:mod:`.runtime` (:class:`TensorRTBackend`).
"""
from __future__ import annotations

import logging

from edge_mer.backends.tensorrt.runtime import TensorRTBackend

log = logging.getLogger(__name__)

__all__ = ["TensorRTBackend"]
