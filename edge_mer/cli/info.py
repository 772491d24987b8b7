"""Show versions, backends, sensors and the default bundle, or validate a bundle with --bundle."""
from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import logging
import platform
from pathlib import Path
from typing import Any

from edge_mer import __version__
from edge_mer.backends.registry import availability
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.cli.readiness import Part, readiness
from edge_mer.fusion.registry import rule_class
from edge_mer.sources.native_stderr import native_stderr_silenced as _native_stderr_silenced

log = logging.getLogger(__name__)

PACKAGES = ("numpy", "onnx", "onnxruntime", "opencv-python", "brainflow", "scipy", "tensorrt", "pycuda", "pyaudio")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="validate this bundle directory and print its summary only")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    from edge_mer.backends.onnxrt import onnxruntime_module  # telemetry off before onnxruntime loads

    return list(onnxruntime_module().get_available_providers())


def _cameras() -> list[str]:
    # Listing device nodes never opens a camera, so info cannot hang on a busy one.
    return sorted(glob.glob("/dev/video*"))


def _audio_inputs() -> list[str] | str:
    if importlib.util.find_spec("pyaudio") is None:
        return "pyaudio not installed (pip install 'edge-mer[audio]')"
    import pyaudio

    with _native_stderr_silenced():
        pa = pyaudio.PyAudio()
        try:
            return [f"{i}: {d['name']} ({int(d['maxInputChannels'])} ch, {int(d['defaultSampleRate'])} Hz)"
                    for i in range(pa.get_device_count())
                    if (d := pa.get_device_info_by_index(i))["maxInputChannels"] > 0]
        finally:
            pa.terminate()


def collect() -> dict[str, Any]:
    """Everything ``edge-mer info`` reports, as a JSON-ready dict."""
    bundle = load_bundle(Path(str(default_bundle_path())))
    parts = readiness()  # each check once: BrainFlow's library load is not free
    brainflow = parts["brainflow"]
    return {
        "edge_mer": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {name: _version(name) for name in PACKAGES},
        "backends": {name: reason or "available" for name, reason in availability().items()},
        "onnxruntime_providers": _ort_providers(),
        "cameras": _cameras(),
        "audio_inputs": _audio_inputs(),
        "brainflow": brainflow["detail"].removeprefix("native library ") if brainflow["ok"] else None,
        "readiness": parts,
        "default_bundle": bundle.summary(),
    }


def _print_text(info: dict[str, Any]) -> None:
    print(f"edge-mer {info['edge_mer']} on Python {info['python']} ({info['platform']})")
    print("packages: " + ", ".join(f"{k} {v or '-'}" for k, v in info["packages"].items()))
    print("backends: " + "; ".join(f"{k}: {v}" for k, v in info["backends"].items()))
    print("onnxruntime providers: " + (", ".join(info["onnxruntime_providers"]) or "none"))
    print("cameras: " + (", ".join(info["cameras"]) or "none visible"))
    audio = info["audio_inputs"]
    print("audio inputs: " + (audio if isinstance(audio, str) else (", ".join(audio) or "none visible")))
    print(f"brainflow: {info['brainflow'] or 'not installed or no native library'}")
    print(f"optional parts on {info['platform']}:")
    for part in info["readiness"].values():
        print(Part(**part).line())
    print("default " + info["default_bundle"])


def run(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        bundle = load_bundle(args.bundle)
        rule_class(bundle.manifest.fusion.rule)  # the manifest names a known rule (the loader cannot see fusion)
        if args.json:
            print(json.dumps({"bundle": str(bundle.root), "valid": True, "summary": bundle.summary()}))
        else:
            print(bundle.summary())
            print("bundle OK: manifest valid, every file present and matching its sha256, ONNX signatures match")
        return 0
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_text(info)
    return 0
