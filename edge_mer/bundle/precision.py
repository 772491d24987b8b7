"""The one place ``auto`` precision is resolved, for encoders and fusion heads alike."""
from __future__ import annotations

from collections.abc import Mapping

from edge_mer.bundle.schema import DetectorSpec, EncoderSpec, FileEntry, FusionHead, PrecisionReport
from edge_mer.errors import BundleError
from edge_mer.names import AUTO, Precision

#: On ONNX Runtime a lower precision replaces fp32 only when it measured at least this much faster: gate
#: timings on a shared host move by several percent between runs, and fp32 is the reference.
AUTO_MARGIN = 0.10
#: On TensorRT, host CPU timings say nothing about the GPU: prefer the lowest precision that passed.
TRT_PREFERENCE: tuple[Precision, ...] = ("int8", "fp16", "fp32")
_TENSORRT = "tensorrt"


def passed_precisions(models: Mapping[str, FileEntry], reports: Mapping[str, PrecisionReport]) -> list[str]:
    """The precisions that may run: fp32 always, the others when their export gate passed."""
    return [p for p in models if p == "fp32" or (p in reports and reports[p].passed)]


def resolve_precision(name: str, spec: EncoderSpec | FusionHead | DetectorSpec, requested: str, backend: str) -> str:
    """The precision to run encoder ``name`` (or a fusion head, ``spec``) at on ``backend``.

    ``auto`` picks, among precisions that passed the export gate (fp32 always
    counts), the one with the lowest measured CPU latency for ONNX Runtime (so
    INT8 is never chosen where it measured slower than FP32; and fp32 unless
    the fastest measured at least :data:`AUTO_MARGIN` faster), and the lowest
    passed precision for TensorRT. A model without gate results runs fp32.
    Asking for a precision the bundle lacks, or one that failed its gate, is
    a one-line error.
    """
    what = ("fusion head" if isinstance(spec, FusionHead) else
            f"detector {name!r}" if isinstance(spec, DetectorSpec) else f"encoder {name!r}")
    models, reports = spec.models, spec.precisions
    if requested == AUTO:
        passed = passed_precisions(models, reports)
        if backend == _TENSORRT:
            return next(p for p in TRT_PREFERENCE if p in passed)
        timed = [p for p in passed if p in reports and reports[p].cpu_latency_ms is not None]
        if not timed:
            return "fp32"
        fastest = min(timed, key=lambda p: reports[p].cpu_latency_ms)
        fp32 = reports["fp32"].cpu_latency_ms if "fp32" in timed else None
        if fp32 is not None and reports[fastest].cpu_latency_ms > (1.0 - AUTO_MARGIN) * fp32:
            return "fp32"  # within the noise of the gate's timing: keep the reference
        return fastest
    if requested in reports and not reports[requested].passed:
        raise BundleError(f"{what}: {requested} failed its export gate ({reports[requested].reason}); "
                          "choose another --precision or auto")
    if requested not in models:
        raise BundleError(f"{what} has no {requested} model in this bundle (has: {', '.join(models)}); "
                          "export one with edge-mer export or choose --precision auto")
    return requested
