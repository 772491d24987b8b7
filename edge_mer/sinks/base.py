"""Sinks receive every :class:`~edge_mer.results.Decision` and the daemon's health."""
from __future__ import annotations

import abc
import re
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from edge_mer.errors import ConfigError
from edge_mer.results import Decision

#: The longest device id (one MQTT topic level, part of the queue's file name).
DEVICE_ID_MAX = 64


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

    def report(self) -> dict[str, Any] | None:
        """This output's own figures for /healthz (under ``outputs.<kind>``), or None when it has none."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release; idempotent."""

    def __enter__(self) -> Sink:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def local_device_id() -> str:
    """This host's name as a device id: characters outside ``[A-Za-z0-9._-]`` become ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:DEVICE_ID_MAX]
    return name or "edge-mer"


def check_device_id(device_id: str) -> None:
    """A device id is one MQTT topic level and a file name: 1..64 of ``[A-Za-z0-9._-]``; "" means the host name."""
    if device_id and not re.fullmatch(rf"[A-Za-z0-9._-]{{1,{DEVICE_ID_MAX}}}", device_id):
        raise ConfigError(f"device_id must be 1..{DEVICE_ID_MAX} of A-Z a-z 0-9 . _ - (or empty for the host "
                          f"name), got {device_id!r}")


@dataclass(frozen=True)
class DeviceInfo:
    """Who is publishing: the device id and what it runs (outputs that announce the device use it).

    ``precision`` is the configured choice (``auto`` or one precision), ``precisions`` what each
    modality's encoder runs at.
    """

    device_id: str
    bundle: str = ""
    precision: str = ""
    modalities: tuple[str, ...] = ()
    precisions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def local(cls) -> DeviceInfo:
        """This host, nothing else known."""
        return cls(local_device_id())

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "bundle": self.bundle, "precision": self.precision,
                "precisions": dict(self.precisions), "modalities": list(self.modalities)}
