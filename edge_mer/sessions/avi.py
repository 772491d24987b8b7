"""A small MJPEG-in-AVI (AVI 1.0) writer for the session recorder's ``video.avi``.

:class:`MjpegAviWriter` hands every frame to the operating system with one
unbuffered write, so a recording killed mid-way leaves a file that FFmpeg
(OpenCV's file backend) plays to its last complete frame; :func:`write_all`
is the unbuffered write it uses (the recorder's EEG CSV uses it too). OpenCV
is imported when the first frame is encoded, not with this module.
"""
from __future__ import annotations

import array
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edge_mer.errors import SensorError

JPEG_QUALITY = 90
_RIFF_MAX = 2**32 - 1  # AVI 1.0 sizes and index offsets are 32-bit


def write_all(fh: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (a raw write may take only part of it)."""
    view = memoryview(data)
    while view:
        written = fh.write(view)
        if not written:
            raise OSError(f"writing {getattr(fh, 'name', 'a file')} made no progress")
        view = view[written:]


class MjpegAviWriter:
    """MJPEG frames in an AVI 1.0 file, each handed to the operating system with one write as it comes.

    Until :meth:`close` appends the ``idx1`` index and patches the header, its
    sizes and frame count are 0 ("unknown"): a killed process leaves an AVI
    that FFmpeg (OpenCV's file backend) reads to its last complete frame. A
    file over 4 GiB keeps the unknown sizes (32-bit fields).
    """

    def __init__(self, path: Path, size: tuple[int, int], fps: float, quality: int = JPEG_QUALITY) -> None:
        self.path, self.size, self.fps, self.quality = path, size, fps, quality
        self._offsets, self._sizes = array.array("Q"), array.array("Q")
        self._movi = 4  # bytes of the 'movi' list so far: its fourcc, then the chunks
        self._jpeg = b""
        try:
            self._file: BinaryIO | None = open(path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
            write_all(self._file, self._header(0, 0, 0))
        except OSError as exc:
            raise SensorError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _header(self, frames: int, riff: int, movi: int) -> bytes:
        width, height = self.size
        rate = max(1, round(self.fps * 1000))  # dwRate / dwScale (1000) = fps
        avih = struct.pack("<14I", round(1e6 / self.fps), 0, 0, 0x10 if frames else 0, frames, 0, 1, 0,
                           width, height, 0, 0, 0, 0)
        strh = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", 0, 0, 0, 0, 1000, rate, 0, frames, 0,
                           0xFFFFFFFF, 0, 0, 0, width, height)
        strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
        strl = _riff_list(b"strl", _riff_chunk(b"strh", strh) + _riff_chunk(b"strf", strf))
        hdrl = _riff_list(b"hdrl", _riff_chunk(b"avih", avih) + strl)
        return b"RIFF" + struct.pack("<I", riff) + b"AVI " + hdrl + b"LIST" + struct.pack("<I", movi) + b"movi"

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return len(self._offsets)

    def write(self, frame: np.ndarray) -> None:
        """Append ``frame`` (BGR uint8 of :attr:`size`)."""
        import cv2

        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise SensorError(f"cannot encode a {self.size[0]}x{self.size[1]} frame as JPEG for {self.path}")
        self._jpeg = jpeg.tobytes()
        self.repeat()

    def repeat(self) -> None:
        """Append the previous frame again (its JPEG, not encoded again)."""
        if self._file is None or not self._jpeg:
            raise SensorError(f"video writer for {self.path} is closed or has no frame to repeat")
        chunk = _riff_chunk(b"00dc", self._jpeg)
        write_all(self._file, chunk)
        self._offsets.append(self._movi)
        self._sizes.append(len(self._jpeg))
        self._movi += len(chunk)

    def close(self) -> None:
        """Append the index and patch the header's sizes and counts (idempotent)."""
        if self._file is None:
            return
        fh, self._file = self._file, None
        try:
            head = len(self._header(0, 0, 0)) - 4  # up to and including the movi list's size field
            riff = head - 8 + self._movi + 8 + 16 * self.frames
            if riff <= _RIFF_MAX:
                index = b"".join(struct.pack("<4sIII", b"00dc", 0x10, offset, size)
                                 for offset, size in zip(self._offsets, self._sizes))
                write_all(fh, b"idx1" + struct.pack("<I", len(index)) + index)
                fh.seek(0)
                write_all(fh, self._header(self.frames, riff, self._movi))
        finally:
            fh.close()


def _riff_chunk(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def _riff_list(kind: bytes, data: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(data) + 4) + kind + data
