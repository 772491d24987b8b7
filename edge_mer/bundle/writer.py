"""Writing bundle manifests (used by training recipes, the export tool and tests)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edge_mer.bundle.loader import MANIFEST, parse_manifest, sha256_file
from edge_mer.bundle.onnx_files import external_data_paths, inside, parse_model, read_bounded
from edge_mer.bundle.schema import FileEntry, Manifest
from edge_mer.config import to_dict
from edge_mer.errors import BundleError


def external_data_of(root: str | Path, relative: str) -> list[str]:
    """Bundle-relative paths of the external-data files the ONNX model at ``root/relative`` reads.

    A file that is not an ONNX model has none (the loader reports it when
    it loads the bundle); a location outside the model's directory is a
    :class:`BundleError`, so no manifest is written that the loader refuses.
    """
    root = Path(root).resolve()
    path = inside(root, relative)
    try:
        model = parse_model(read_bounded(path), path)
    except BundleError:
        return []
    return external_data_paths(model, relative, path)


def file_entry(root: str | Path, relative: str) -> FileEntry:
    """A manifest entry for ``root/relative`` with its current sha256, and those of its external-data files."""
    root = Path(root)
    extra = tuple(FileEntry(p, sha256_file(root / p)) for p in external_data_of(root, relative))
    return FileEntry(path=relative, sha256=sha256_file(root / relative), external_data=extra)


def _compact(data: Any) -> Any:
    # File entries without external data are written as {path, sha256}, as before the key existed,
    # so manifests that need no external data stay readable by older edge-mer releases.
    if isinstance(data, dict):
        out = {k: _compact(v) for k, v in data.items()}
        if {"path", "sha256"} <= set(out) and out.get("external_data") == []:
            del out["external_data"]
        return out
    if isinstance(data, list):
        return [_compact(v) for v in data]
    return data


def manifest_json(manifest: Manifest) -> str:
    """The manifest as stable, human-diffable JSON."""
    return json.dumps(_compact(to_dict(manifest)), indent=2, sort_keys=False) + "\n"


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``root`` atomically and return its path.

    The manifest is re-parsed first, so a writer can never produce a file the
    loader would refuse on schema grounds.
    """
    text = manifest_json(manifest)
    parse_manifest(json.loads(text))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST
