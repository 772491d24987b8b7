"""Model bundles: a manifest plus ONNX files, validated and hashed on load."""
from pathlib import Path

from edge_mer.bundle.loader import Bundle, load_bundle
from edge_mer.bundle.labels import CANONICAL_LABELS

__all__ = ["Bundle", "CANONICAL_LABELS", "load_bundle", "default_bundle_path"]


def default_bundle_path() -> Path:
    """The directory of the default bundle shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "assets" / "default_bundle"
