"""Writing bundle manifests (used by training recipes, the export tool and tests)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edge_mer.bundle.loader import MANIFEST, parse_manifest, sha256_file
from edge_mer.bundle.schema import FileEntry, Manifest
from edge_mer.config import to_dict


def file_entry(root: str | Path, relative: str) -> FileEntry:
    """A manifest entry for ``root/relative`` with its current sha256."""
    return FileEntry(path=relative, sha256=sha256_file(Path(root) / relative))


def manifest_json(manifest: Manifest) -> str:
    """The manifest as stable, human-diffable JSON."""
    return json.dumps(to_dict(manifest), indent=2, sort_keys=False) + "\n"


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
