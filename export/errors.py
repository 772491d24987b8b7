"""Errors raised by the export tool; both are :class:`~edge_mer.errors.EdgeMerError`, printed as one line."""
from __future__ import annotations

from edge_mer.errors import EdgeMerError


class ExportError(EdgeMerError):
    """A model cannot be prepared, converted or quantized (the message names the file and the reason)."""


class QdqLintError(ExportError):
    """A Q/DQ model breaks a rule TensorRT's explicit INT8 quantization depends on (the message names the nodes)."""
