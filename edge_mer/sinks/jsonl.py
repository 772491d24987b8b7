"""JSON Lines output: one compact JSON object per decision, to stdout or a file.

``target`` is ``"-"`` for standard output (each line is flushed at once, and
stdout is never closed) or a file path opened in append mode, so restarting
the daemon extends the same log. The file is line-buffered: ``tail -f`` sees
every decision as it is written.

:attr:`Decision.json_text <edge_mer.results.Decision.json_text>` is the one
serialisation of a decision shared by every sink: compact separators, UTF-8
kept as is, and strict JSON (a non-finite float such as ``NaN`` becomes
``null`` instead of producing invalid JSON).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import ClassVar, TextIO

from edge_mer.errors import ConfigError
from edge_mer.results import Decision
from edge_mer.sinks.base import Sink

log = logging.getLogger(__name__)

STDOUT = "-"


class JsonlSink(Sink):
    """Writes each decision as one line of JSON to stdout (``"-"``) or appends it to a file."""

    kind: ClassVar[str] = "jsonl"

    def __init__(self, target: str) -> None:
        if not target:
            raise ConfigError("outputs.jsonl: expected '-' (stdout) or a file path, got an empty string")
        self.target = target
        self._stream: TextIO | None = None
        self._owned = False
        self.lines = 0

    def open(self) -> None:
        """Bind to stdout or open the file for appending; a missing directory is a :class:`ConfigError`."""
        if self._stream is not None:
            return
        if self.target == STDOUT:
            self._stream, self._owned = sys.stdout, False
            return
        path = Path(self.target).expanduser()
        if path.is_dir():
            raise ConfigError(f"outputs.jsonl: {str(path)!r} is a directory, expected a file path")
        if not path.parent.is_dir():
            raise ConfigError(f"outputs.jsonl: directory {str(path.parent)!r} does not exist "
                              f"(expected a file path in an existing directory, or '-' for stdout)")
        try:
            self._stream = path.open("a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise ConfigError(f"outputs.jsonl: cannot open {str(path)!r} for appending: "
                              f"{exc.strerror or exc}") from exc
        self._owned = True
        log.info("writing decisions to %s", path)

    def emit(self, decision: Decision) -> None:
        """Write ``decision`` as one line and flush it."""
        if self._stream is None:
            raise RuntimeError("JsonlSink.emit() called before open() or after close()")
        self._stream.write(decision.json_text + "\n")
        self._stream.flush()
        self.lines += 1

    def close(self) -> None:
        """Flush; close the file (never stdout). Idempotent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.flush()
            if self._owned:
                stream.close()
        except BrokenPipeError:
            pass  # stdout's reader left (`edge-mer run | head`): nothing is lost that anyone could read
        except OSError as exc:
            # Closing is cleanup: a full disk was already reported when writing failed.
            log.warning("closing %s failed: %s", self.target, exc)
            if self._owned and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()
