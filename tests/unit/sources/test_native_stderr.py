"""native_stderr_silenced: real writes to file descriptor 2, as C libraries make them, captured by pytest's capfd."""
from __future__ import annotations

import logging
import os
import threading

import pytest

from edge_mer.sources.native_stderr import native_stderr_silenced


def _native_write(text: str) -> None:
    os.write(2, text.encode())  # below sys.stderr, like PortAudio's fprintf(stderr, ...)


def test_fd2_writes_are_dropped_inside_and_kept_outside(capfd: pytest.CaptureFixture[str]) -> None:
    with native_stderr_silenced():
        _native_write("ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM sysdefault\n")
    _native_write("after\n")
    assert capfd.readouterr().err == "after\n"


def test_nested_and_overlapping_blocks_restore_fd2_once_all_end(capfd: pytest.CaptureFixture[str]) -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with native_stderr_silenced():
            inside.set()
            leave.wait(5.0)
            _native_write("other thread, silenced\n")

    thread = threading.Thread(target=other)
    with native_stderr_silenced():
        thread.start()
        assert inside.wait(5.0)
        with native_stderr_silenced():
            _native_write("nested\n")
    _native_write("main thread done while the other is still silenced\n")  # dropped: one block is open
    leave.set()
    thread.join(5.0)
    _native_write("restored\n")
    assert capfd.readouterr().err == "restored\n"


def test_a_debug_logger_sees_the_native_output(capfd: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("edge_mer.sources.test_native_stderr")
    logger.setLevel(logging.DEBUG)
    try:
        with native_stderr_silenced(logger):
            _native_write("jack server is not running or cannot be started\n")
        logger.setLevel(logging.INFO)
        with native_stderr_silenced(logger):
            _native_write("dropped\n")
    finally:
        logger.setLevel(logging.NOTSET)
    assert capfd.readouterr().err == "jack server is not running or cannot be started\n"
