"""Sinks receive every :class:`~edge_mer.results.Decision` and the daemon's health."""
from __future__ import annotations

import abc
from types import TracebackType
from typing import Any, ClassVar

from edge_mer.results import Decision


class Sink(abc.ABC):
    """Where decisions go. ``emit`` is called from the scheduler thread and must not block for long."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def open(self) -> None:
        """Start serving or open the file; raises :class:`~edge_mer.errors.EdgeMerError` with a clear message."""

    @abc.abstractmethod
    def emit(self, decision: Decision) -> None:
        """Deliver one decision (:meth:`Decision.to_json` / ``json_text`` is its wire format)."""

    def health(self, status: dict[str, Any]) -> None:
        """Receive the daemon's health (per-source state, counters); sinks that serve it keep the latest."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release; idempotent."""

    def __enter__(self) -> Sink:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
