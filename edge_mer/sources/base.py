"""Sources: context managers yielding timestamped chunks on one monotonic clock.

Every source, live or replayed, yields :class:`Chunk` objects whose ``t_ns`` is
on the daemon's clock (``time.monotonic_ns()`` live; the session clock in
nanoseconds from the session start when replaying fast). The device's own
timestamps, frame counters and similar go in ``meta``.
"""
from __future__ import annotations

import abc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from edge_mer.names import Modality

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Chunk:
    """One delivery from a sensor.

    ``t_ns`` is the daemon-clock time of the chunk's *newest* sample. ``data``:
    video, one uint8 frame HxWx3 (BGR) or HxW; audio, float32 samples ``[n]``
    (mono, already mixed down) in [-1, 1]; EEG, float64 ``[channels, n]`` in the
    board's units (microvolts for BrainFlow boards).
    """

    t_ns: int
    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamInfo:
    """What a source delivers: modality, rate (fps or Hz), and EEG channel names."""

    modality: Modality
    rate: float
    channel_names: tuple[str, ...] = ()
    description: str = ""


class Source(abc.ABC):
    """A sensor or file that yields :class:`Chunk` objects until closed or exhausted.

    Use ``with source: for chunk in source: ...``. Iteration ends when the
    source is exhausted (a file ends) or closed from another thread; a live
    sensor that fails raises :class:`~edge_mer.errors.SensorError` after its
    reconnection attempts are spent. :attr:`info` is valid after ``open``.
    """

    kind: ClassVar[str]

    def __init__(self) -> None:
        self._info: StreamInfo | None = None

    @property
    def info(self) -> StreamInfo:
        if self._info is None:
            from edge_mer.errors import SensorError

            raise SensorError(f"{self.kind} source is not open")
        return self._info

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device or file and set :attr:`_info`; raises SensorError naming the device."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; idempotent; makes a running iteration end promptly (within ~0.5 s)."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Chunk]: ...

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
