"""What machine a benchmark ran on: CPU model and cores, OS, accelerator and library versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

_PACKAGES = ("edge-mer", "numpy", "onnxruntime", "opencv-python", "brainflow", "tensorrt")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what the platform module knows
    return platform.processor() or platform.machine()


def device_model() -> str | None:
    """The board's model on embedded Linux (a Jetson names itself here), else None."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_info() -> dict[str, Any]:
    """A JSON-ready description of this host."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": allowed,
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "device_model": device_model(),
        "python": platform.python_version(),
        "packages": {name: v for name in _PACKAGES if (v := _version(name)) is not None},
    }
