"""Backend options: frozen dataclasses, one table per backend in the TOML config."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_mer.config import require

GraphOptimization = Literal["disable", "basic", "extended", "all"]


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime session options.

    ``providers`` empty means: TensorRT, then CUDA execution providers where the
    installed onnxruntime has them, then the CPU.  Thread counts of 0 let ONNX
    Runtime choose (one per physical core). One intra-op thread is the
    default: the encoders are small enough that a thread pool's hand-offs
    and spinning cost more than they save (``edge-mer bench --compare``
    measures both).
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 0
    providers: tuple[str, ...] = ()
    graph_optimization: GraphOptimization = "all"

    def __post_init__(self) -> None:
        require(0 <= self.intra_op_threads <= 256, f"intra_op_threads must be in 0..256, got {self.intra_op_threads}")
        require(0 <= self.inter_op_threads <= 256, f"inter_op_threads must be in 0..256, got {self.inter_op_threads}")


@dataclass(frozen=True)
class TrtOptions:
    """Native TensorRT build and run options.

    Optimisation profiles come from what the run feeds (``ModelRef.dim_ranges``,
    derived by the pipeline from its configuration).  ``dynamic_dims`` overrides
    that range for one dimension name, e.g. ``{"T": (101, 201, 401)}`` to narrow
    log-mel frames to 1..4 s; it must still hold the size the run feeds.
    Batch symbols with no derived range (a model used outside the pipeline)
    take ``(1, opt_batch, max_batch)``.
    ``cache_dir`` None means ``$XDG_CACHE_HOME/edge-mer/engines`` (resolved when
    used, never at import).
    """

    cache_dir: Path | None = None
    workspace_mib: int = 1024
    device: int = 0
    builder_optimization_level: int = 3
    batch_symbols: tuple[str, ...] = ("N", "batch", "batch_size")
    opt_batch: int = 1
    max_batch: int = 8
    dynamic_dims: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    timing_cache: bool = True

    def __post_init__(self) -> None:
        require(0 < self.workspace_mib <= 1 << 20, f"workspace_mib must be in 1..{1 << 20}, got {self.workspace_mib}")
        require(0 <= self.device <= 64, f"device must be in 0..64, got {self.device}")
        require(0 <= self.builder_optimization_level <= 5,
                f"builder_optimization_level must be in 0..5, got {self.builder_optimization_level}")
        require(1 <= self.opt_batch <= self.max_batch <= 4096, f"need 1 <= opt_batch <= max_batch <= 4096, "
                                                               f"got opt_batch={self.opt_batch} max_batch={self.max_batch}")
        for name, rng in self.dynamic_dims.items():
            lo, opt, hi = rng
            require(1 <= lo <= opt <= hi <= 1 << 20,
                    f"dynamic_dims.{name} must satisfy 1 <= min <= opt <= max <= {1 << 20}, got {list(rng)}")

    def resolved_cache_dir(self) -> Path:
        """The engine cache directory, with the XDG default applied."""
        if self.cache_dir is not None:
            return self.cache_dir.expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "edge-mer" / "engines"


@dataclass(frozen=True)
class BackendOptions:
    """Which backend runs the encoders (``auto`` prefers TensorRT on a GPU) and its options."""

    name: str = "auto"
    onnxruntime: OrtOptions = dataclasses.field(default_factory=OrtOptions)
    tensorrt: TrtOptions = dataclasses.field(default_factory=TrtOptions)
