"""Shared fixtures: paths to ../shared, markers that skip what this host lacks."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _trt_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed on this host"
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed on this host"
    from edge_mer.backends.registry import backend_class

    return backend_class("tensorrt").availability()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    trt_reason = None
    for item in items:
        if "trt" in item.keywords:
            trt_reason = trt_reason or _trt_skip_reason() or ""
            if trt_reason:
                item.add_marker(pytest.mark.skip(reason=trt_reason))
        if "hardware" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="no camera, microphone or EEG board on this host"))
        if "shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"{SHARED} is absent (tests read real data from ../shared)"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared directory beside the project (tests using it carry the ``shared`` marker)."""
    return SHARED
