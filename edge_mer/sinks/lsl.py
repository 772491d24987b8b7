"""Lab Streaming Layer output: one string sample per decision, the decision's JSON.

The outlet is named ``LslConfig.name`` (default ``edge-mer``), has type
:data:`STREAM_TYPE` (``EmotionDecision``), one ``cf_string`` channel, an
irregular rate and ``LslConfig.source_id`` as source id (so a recording tool
such as LabRecorder reconnects to it after a daemon restart). Its ``desc``
carries ``<format>edge-mer-decision/1</format>``, the canonical labels under
``<labels><label>...</label></labels>`` and the one channel's description.
Each sample is stamped with ``pylsl.local_clock()`` at emission, so LSL's
clock synchronisation aligns decisions with the other streams of a recording
(EEG, markers); the decision's own ``t`` (daemon clock) stays in the JSON.

Getting liblsl (pylsl is a ctypes wrapper around the C library liblsl >= 1.16):

* Linux x86_64 with glibc >= 2.35 (Ubuntu 22.04+), Windows and macOS:
  ``pip install pylsl`` installs a platform wheel that bundles liblsl.
* Linux aarch64 (Jetson: JetPack 5 is Ubuntu 20.04, JetPack 6 Ubuntu 22.04)
  and older x86_64 distributions: pip installs the pure-Python wheel with
  *no* liblsl, and conda-forge's ``liblsl`` has no linux-aarch64 build. Build
  it on the device (CMake, a C++ compiler; a few minutes)::

      git clone --depth 1 https://github.com/sccn/liblsl && cd liblsl
      cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j4
      sudo cmake --install build && sudo ldconfig   # or: export PYLSL_LIB=$PWD/build/liblsl.so

  or install a matching package from https://github.com/sccn/liblsl/releases.
  On x86_64, ``conda install -c conda-forge liblsl`` also works.

pylsl is imported in ``open`` only; when it or liblsl is missing, ``open``
raises a one-line :class:`~edge_mer.errors.ConfigError` saying the above.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer.errors import ConfigError
from edge_mer.results import Decision
from edge_mer.sinks.base import Sink

log = logging.getLogger(__name__)

STREAM_TYPE = "EmotionDecision"
FORMAT = "edge-mer-decision/1"
LIBLSL_HELP = ("pip's pylsl bundles liblsl only for Linux x86_64 (glibc >= 2.35), Windows and macOS; "
               "elsewhere (e.g. Jetson/aarch64) build liblsl >= 1.16 from https://github.com/sccn/liblsl "
               "(cmake) or install a release package, then run ldconfig or set PYLSL_LIB=/path/to/liblsl.so")


@dataclass(frozen=True)
class LslConfig:
    """A Lab Streaming Layer outlet carrying each decision as one JSON string sample."""

    enabled: bool = False
    name: str = "edge-mer"
    source_id: str = "edge-mer-decisions"


def load_pylsl() -> ModuleType:
    """Import pylsl, or raise a one-line :class:`ConfigError` saying how to install it or liblsl."""
    try:
        return importlib.import_module("pylsl")
    except ImportError as exc:
        raise ConfigError(f"outputs.lsl.enabled needs the pylsl package: pip install pylsl ({exc})") from exc
    except (RuntimeError, OSError) as exc:
        # pylsl raises RuntimeError at import when liblsl is absent or cannot be loaded.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"outputs.lsl.enabled: pylsl cannot load liblsl ({first.rstrip('. ')}); "
                          f"{LIBLSL_HELP}") from exc


class LslSink(Sink):
    """Publishes every decision's JSON as one sample of an irregular-rate string stream."""

    kind: ClassVar[str] = "lsl"

    def __init__(self, config: LslConfig, labels: Sequence[str] = CANONICAL_LABELS) -> None:
        if not config.name:
            raise ConfigError("outputs.lsl.name: expected a non-empty stream name")
        self.config = config
        self.labels = tuple(labels)
        self.samples = 0
        self._pylsl: ModuleType | None = None
        self._outlet: Any = None

    def open(self) -> None:
        """Create the outlet; the stream is discoverable on the network once this returns."""
        if self._outlet is not None:
            return
        pylsl = load_pylsl()
        info = pylsl.StreamInfo(self.config.name, STREAM_TYPE, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                self.config.source_id)
        self._describe(info.desc())
        self._outlet = pylsl.StreamOutlet(info)
        self._pylsl = pylsl
        log.info("LSL outlet %r (type %s, source_id %r) open, liblsl %s", self.config.name, STREAM_TYPE,
                 self.config.source_id, pylsl.library_version())

    def _describe(self, desc: Any) -> None:
        desc.append_child_value("format", FORMAT)
        desc.append_child_value("manufacturer", "edge-mer")
        labels = desc.append_child("labels")
        for label in self.labels:
            labels.append_child_value("label", label)
        channel = desc.append_child("channels").append_child("channel")
        channel.append_child_value("label", "decision")
        channel.append_child_value("type", "JSON")
        channel.append_child_value("unit", "application/json")

    def emit(self, decision: Decision) -> None:
        """Push ``decision`` as one JSON string sample stamped with the local LSL clock."""
        if self._outlet is None or self._pylsl is None:
            raise RuntimeError("LslSink.emit() called before open() or after close()")
        self._outlet.push_sample([decision.json_text], self._pylsl.local_clock())
        self.samples += 1

    def wait_for_consumers(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until at least one inlet is connected; True if one is."""
        if self._outlet is None:
            raise RuntimeError("LslSink.wait_for_consumers() called before open()")
        return bool(self._outlet.wait_for_consumers(timeout))

    def close(self) -> None:
        """Destroy the outlet (connected inlets see the stream end). Idempotent."""
        outlet, self._outlet = self._outlet, None
        if outlet is not None:
            del outlet  # pylsl destroys the liblsl outlet when the last reference goes
