"""Keeping native libraries quiet: their C code writes straight to file descriptor 2.

PortAudio probing ALSA and JACK on a host without sound cards prints dozens
of lines (``ALSA lib confmisc.c:855:(parse_card) cannot find card '0'``,
``jack server is not running``) that Python's ``sys.stderr`` never sees, so
only pointing fd 2 at ``/dev/null`` around those calls keeps them off the
terminal. The redirection is process-wide: keep the silenced blocks to the
native calls themselves (milliseconds), never around code that logs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # silenced blocks in progress, on any thread
_saved_fd: int | None = None  # the real fd 2 while _depth > 0


def _silence() -> None:
    global _depth, _saved_fd
    with _lock:
        if _depth == 0:
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                _saved_fd = os.dup(2)
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
        _depth += 1


def _restore() -> None:
    global _depth, _saved_fd
    with _lock:
        _depth -= 1
        if _depth == 0 and _saved_fd is not None:
            os.dup2(_saved_fd, 2)
            os.close(_saved_fd)
            _saved_fd = None


@contextlib.contextmanager
def native_stderr_silenced(logger: logging.Logger | None = None) -> Iterator[None]:
    """File descriptor 2 goes to ``/dev/null`` inside the block; restored on exit.

    Nested and concurrent blocks (a camera and a microphone reconnecting on
    their own threads) share one redirection, undone when the last one ends.
    With a ``logger`` that is enabled for DEBUG nothing is silenced, so
    ``--log-level DEBUG`` shows the native libraries' own output.
    """
    if logger is not None and logger.isEnabledFor(logging.DEBUG):
        yield
        return
    _silence()
    try:
        yield
    finally:
        _restore()
