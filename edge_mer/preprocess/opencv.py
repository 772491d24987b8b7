"""OpenCV, imported when first needed, with a one-line fix when it is missing.

OpenCV is an extra (``edge-mer[opencv]``): on a Jetson the PyPI wheel would
shadow JetPack's GStreamer-enabled build, which a ``--system-site-packages``
virtual environment sees instead.  Speech- and EEG-only runs need neither.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from edge_mer.errors import ConfigError

#: What to do when cv2 cannot be imported (also shown by ``edge-mer info``).
OPENCV_FIX = ("pip install 'edge-mer[opencv]' (on a Jetson: sudo apt install python3-opencv and a "
              "--system-site-packages venv, README 'Jetson')")


def opencv() -> ModuleType:
    """The ``cv2`` module; a :class:`ConfigError` naming the fix when none is importable."""
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        raise ConfigError(f"OpenCV (cv2) is needed for faces and video but cannot be imported ({exc}); "
                          f"{OPENCV_FIX}") from None


class _OpenCV:
    """Stands in for the ``cv2`` module in modules that use it: the real one is imported at first use.

    A module can then say ``from edge_mer.preprocess.opencv import cv2`` at
    the top and still import on a host without OpenCV; the first call that
    needs it raises the :func:`opencv` error instead of an ImportError at
    import time.
    """

    def __getattr__(self, name: str) -> object:
        # Called only for names not yet looked up: each is kept on the instance, so per-frame
        # calls (cv2.resize) are plain attribute reads after the first.
        value = getattr(opencv(), name)
        setattr(self, name, value)
        return value


cv2 = _OpenCV()
