"""What ``edge-mer info`` says about each optional part: does it work here, and the one-line fix if not.

A Jetson (aarch64, JetPack 6, Python 3.10) is where these go wrong: the
PyPI ``brainflow`` wheel carries no Linux aarch64 libraries, ``pylsl``
carries no liblsl, the PyPI OpenCV has no GStreamer and shadows JetPack's,
and TensorRT and pycuda come from JetPack rather than PyPI.  Every check
imports lazily and never opens a device, so ``info`` cannot hang or fail
on a missing part.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edge_mer.backends.registry import backend_class
from edge_mer.preprocess.opencv import OPENCV_FIX

log = logging.getLogger(__name__)

JETSON_FIX = "README, section 'Jetson (JetPack 6, Python 3.10)'"


@dataclass(frozen=True)
class Part:
    """One optional part: whether it works here, what was found, and how to fix it when it does not."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        text = f"  {'ok     ' if self.ok else 'MISSING'} {self.name}: {self.detail}"
        return text + (f" -> fix: {self.fix}" if self.fix else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _backends(cv2: Any) -> dict[str, bool]:
    registry = getattr(cv2, "videoio_registry", None)
    names = ("GSTREAMER", "FFMPEG", "V4L2")
    if registry is None:
        return dict.fromkeys(names, False)
    return {n: bool(registry.hasBackend(getattr(cv2, f"CAP_{n}"))) for n in names}


def camera_kinds(backends: dict[str, bool]) -> dict[str, bool]:
    """Which ``face.camera.device`` kinds this OpenCV can open (see ``edge_mer.sources.camera``)."""
    v4l2, ffmpeg, gst = backends["V4L2"], backends["FFMPEG"], backends["GSTREAMER"]
    return {"index": v4l2 or gst, "node": v4l2 or gst, "file": ffmpeg or gst, "url": ffmpeg or gst,
            "pipeline": gst}


def check_opencv() -> Part:
    try:
        cv2 = importlib.import_module("cv2")
    except ImportError as exc:
        return Part("opencv", False, f"cv2 cannot be imported ({_first_line(exc)})", OPENCV_FIX)
    backends = _backends(cv2)
    kinds = camera_kinds(backends)
    works = ", ".join(k for k, ok in kinds.items() if ok) or "none"
    detail = (f"cv2 {cv2.__version__} from {getattr(cv2, '__file__', '?')}; GStreamer "
              f"{'yes' if backends['GSTREAMER'] else 'no'}, FFmpeg {'yes' if backends['FFMPEG'] else 'no'}, "
              f"V4L2 {'yes' if backends['V4L2'] else 'no'}; camera kinds: {works}")
    fix = None if backends["GSTREAMER"] else (
        "GStreamer pipelines (Jetson CSI cameras) need an OpenCV built with GStreamer: pip uninstall "
        "opencv-python; sudo apt install python3-opencv; use a --system-site-packages venv")
    return Part("opencv", True, detail, fix)


def check_brainflow() -> Part:
    fix = ("build BrainFlow's native libraries: git clone https://github.com/brainflow-dev/brainflow && cd "
           f"brainflow && python3 tools/build.py && pip install ./python_package ({JETSON_FIX})")
    if importlib.util.find_spec("brainflow") is None:
        return Part("brainflow", False, "not installed", "pip install brainflow")
    try:
        from brainflow.board_shim import BoardShim

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            version = BoardShim.get_version()
    except (OSError, ImportError, AttributeError) as exc:  # the wheel has no library for this CPU
        return Part("brainflow", False, f"native library missing ({_first_line(exc)})", fix)
    except Exception as exc:  # BrainFlowError and ctypes errors both mean: the library does not load
        return Part("brainflow", False, f"native library does not load ({_first_line(exc)})", fix)
    return Part("brainflow", True, f"native library {version}")


def check_liblsl() -> Part:
    fix = ("build liblsl (git clone https://github.com/sccn/liblsl && cd liblsl && cmake -B build && cmake "
           "--build build && sudo cmake --install build) and export PYLSL_LIB=/usr/local/lib/liblsl.so")
    if importlib.util.find_spec("pylsl") is None:
        return Part("liblsl", False, "pylsl not installed (only the LSL output needs it)", "pip install pylsl")
    try:
        import pylsl

        version = pylsl.library_version()
    except (RuntimeError, OSError, ImportError, AttributeError) as exc:
        return Part("liblsl", False, f"pylsl finds no liblsl ({_first_line(exc)})", fix)
    return Part("liblsl", True, f"liblsl {version / 100:.2f} via pylsl {getattr(pylsl, '__version__', '?')}")


def check_portaudio() -> Part:
    fix = "sudo apt install portaudio19-dev && pip install 'edge-mer[audio]' (or sudo apt install python3-pyaudio)"
    if importlib.util.find_spec("pyaudio") is None:
        return Part("pyaudio", False, "PyAudio not installed (only the live microphone needs it)", fix)
    try:
        import pyaudio

        version = pyaudio.get_portaudio_version_text()
    except (ImportError, OSError) as exc:
        return Part("pyaudio", False, f"PortAudio does not load ({_first_line(exc)})", fix)
    return Part("pyaudio", True, version)


def check_tensorrt() -> Part:
    reason = backend_class("tensorrt").availability()
    if reason is None:
        import tensorrt

        return Part("tensorrt", True, f"TensorRT {tensorrt.__version__} with a CUDA GPU")
    fix = ("on a Jetson JetPack 6 ships it: sudo apt install python3-libnvinfer and a --system-site-packages venv; "
           "elsewhere pip install 'edge-mer[jetson]' with a CUDA GPU")
    return Part("tensorrt", False, reason, fix)


def check_pycuda() -> Part:
    fix = "export PATH=/usr/local/cuda/bin:$PATH && pip install pycuda (it compiles against CUDA)"
    if importlib.util.find_spec("pycuda") is None:
        return Part("pycuda", False, "not installed (the tensorrt backend needs it)", fix)
    try:
        import pycuda.driver as cuda

        cuda.init()
        count = cuda.Device.count()
    except (ImportError, OSError) as exc:
        return Part("pycuda", False, f"cannot load ({_first_line(exc)})", fix)
    except Exception as exc:  # pycuda.driver.Error: the driver is there but unusable
        return Part("pycuda", False, f"CUDA driver not usable ({_first_line(exc)})", "check the NVIDIA driver")
    return Part("pycuda", count > 0, f"{count} CUDA device(s)", None if count else "no CUDA device found")


def check_tegrastats() -> Part:
    path = shutil.which("tegrastats")
    if path is None:
        return Part("tegrastats", False, "not on PATH (Jetson only: edge-mer bench reads board power from it)",
                    "on a Jetson: sudo apt install nvidia-l4t-tools; elsewhere power comes from RAPL or is skipped")
    return Part("tegrastats", True, path)


#: Part name -> its check, in the order ``info`` prints them; a new part is one function and one line.
CHECKS: dict[str, Callable[[], Part]] = {
    "opencv": check_opencv,
    "brainflow": check_brainflow,
    "liblsl": check_liblsl,
    "pyaudio": check_portaudio,
    "tensorrt": check_tensorrt,
    "pycuda": check_pycuda,
    "tegrastats": check_tegrastats,
}


def readiness() -> dict[str, dict[str, Any]]:
    """``{part: {"name", "ok", "detail", "fix"}}`` for every entry of :data:`CHECKS`."""
    return {name: asdict(check()) for name, check in CHECKS.items()}
