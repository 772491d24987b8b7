"""The backend protocol: load, input specs, ``infer(feeds)``, close.

Public methods validate names, shapes, dtypes and values, then call the
``_``-prefixed implementation, so every backend refuses bad feeds with the
same one-line :class:`~edge_mer.errors.InputError`.
"""
from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import numpy as np

from edge_mer.backends.options import BackendOptions
from edge_mer.errors import BackendError, InputError

log = logging.getLogger(__name__)

Dim = int | str  # a fixed size, or the name of a dynamic axis
#: The largest size a dynamic axis may be fed (as ``TrtOptions.dynamic_dims`` allows).
MAX_FEED_DIM = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints fixed, strings dynamic) and numpy dtype name of one tensor."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"


@dataclass(frozen=True)
class ModelFile:
    """One model file and the sha256 its bundle promises."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class ModelRef:
    """What a backend is asked to run: a precision, the model's files per precision, and its feed sizes.

    A backend reads ``files[precision]``.  ``dim_ranges`` gives, for dynamic
    axis names, the (min, opt, max) sizes the caller will feed (the pipeline
    derives them from its configuration); backends that compile for fixed
    ranges (TensorRT) build their optimisation profile from them.
    """

    name: str
    precision: str
    files: Mapping[str, ModelFile]
    dim_ranges: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in self.files:
            have = ", ".join(sorted(self.files)) or "none"
            raise BackendError(f"model {self.name!r} has no {self.precision} file (has: {have})")
        for axis, rng in self.dim_ranges.items():
            if (len(rng) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in rng)
                    or not 1 <= rng[0] <= rng[1] <= rng[2] <= MAX_FEED_DIM):
                raise BackendError(f"model {self.name!r}: feed range of axis {axis!r} is {list(rng)}; "
                                   f"expected [min, opt, max] with 1 <= min <= opt <= max <= {MAX_FEED_DIM}")

    @property
    def file(self) -> ModelFile:
        return self.files[self.precision]


def validate_feeds(specs: tuple[TensorSpec, ...], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`InputError` unless ``feeds`` match ``specs`` exactly.

    Checks names (no missing, no extra), that values are numpy arrays of the
    spec's dtype and rank, fixed dimensions, that one dynamic dimension name
    has one size across all inputs, and that float inputs are finite.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a mapping of input name to array, got {type(feeds).__name__}")
    names = [s.name for s in specs]
    extra = sorted(set(feeds) - set(names))
    if extra:
        raise InputError(f"unknown input {extra[0]!r} (model inputs: {', '.join(names)})")
    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(f"missing input {spec.name!r} (model inputs: {', '.join(names)})")
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"input {spec.name!r}: expected a numpy array, got {type(value).__name__}")
        if value.dtype != np.dtype(spec.dtype):
            raise InputError(f"input {spec.name!r}: dtype {value.dtype}, expected {spec.dtype}")
        if value.ndim != len(spec.shape):
            raise InputError(
                f"input {spec.name!r}: shape {list(value.shape)} has rank {value.ndim}, expected {spec.describe()}")
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
            if isinstance(want, int) and want >= 0 and got != want:
                raise InputError(
                    f"input {spec.name!r}: shape {list(value.shape)} has {got} on axis {axis}, expected {spec.describe()}")
            if isinstance(want, str):
                seen = bound.setdefault(want, (got, spec.name))
                if seen[0] != got:
                    raise InputError(f"input {spec.name!r}: dimension {want!r} is {got} here but {seen[0]} in input {seen[1]!r}")
            if got == 0:
                raise InputError(f"input {spec.name!r}: shape {list(value.shape)} is empty on axis {axis}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InputError(f"input {spec.name!r}: contains NaN or Inf")


class Backend(abc.ABC):
    """An inference engine for one model.

    Use as a context manager, or call :meth:`load` and :meth:`close`.
    Subclasses implement ``_load``, ``_infer`` and ``_close`` and set
    ``_inputs``/``_outputs`` in ``_load``.
    """

    name: ClassVar[str]

    def __init__(self, model: ModelRef, options: BackendOptions | None = None) -> None:
        self.model = model
        self.options = options or BackendOptions()
        self._inputs: tuple[TensorSpec, ...] | None = None
        self._outputs: tuple[TensorSpec, ...] | None = None

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> str | None:
        """None when this backend can run here, else the reason it cannot."""

    @property
    def loaded(self) -> bool:
        return self._inputs is not None

    def load(self) -> Backend:
        """Create the inference session or engine (idempotent)."""
        if not self.loaded:
            self._load()
            log.debug("%s loaded %s (%s)", self.name, self.model.name, self.model.precision)
        return self

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        if self._inputs is None:
            raise BackendError(f"{self.name} backend for {self.model.name!r} is not loaded; call load() first")
        return self._inputs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        if self._outputs is None:
            raise BackendError(f"{self.name} backend for {self.model.name!r} is not loaded; call load() first")
        return self._outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against :attr:`input_specs`, run, and return outputs by name."""
        validate_feeds(self.input_specs, feeds)
        return self._infer(feeds)

    def close(self) -> None:
        """Release the session or engine; the backend may be loaded again."""
        if self.loaded:
            self._close()
            self._inputs = self._outputs = None

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
