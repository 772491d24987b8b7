"""Writing an adaptation as a bundle overlay (:mod:`edge_mer.bundle.overlay`) with its report.

The overlay names its base (``"default"`` for the bundle shipped in the
package, else the base's path relative to the overlay directory) with the
sha256 of the base's ``manifest.json``, and holds only what changed: the
per-user heads (``user/<encoder>-<sha256[:12]>.onnx``, whole encoder entries)
and the per-user temperatures (``calibrations``), plus ``adapt_report.json``.

Everything is written into a staging directory beside ``out`` and loaded
from there as a bundle before anything under ``out`` changes. ``out`` must be
new, empty, or an earlier overlay; an earlier overlay is replaced file by
file with ``manifest.json`` last (one ``os.replace``, so a reader sees the old
overlay or the new one, whole), then the files only the old manifest named
are removed. Nothing else under ``out`` is ever deleted.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import MANIFEST, Bundle, load_bundle, sha256_file
from edge_mer.bundle.onnx_files import inside
from edge_mer.bundle.overlay import DEFAULT_BASE, OVERLAY_FORMAT, is_overlay
from edge_mer.bundle.schema import check_relative_path
from edge_mer.config import read_json
from edge_mer.errors import ConfigError, EdgeMerError

log = logging.getLogger(__name__)

REPORT = "adapt_report.json"


def base_reference(base: Bundle, out: Path) -> dict[str, str]:
    """The overlay's ``base`` table for ``base``, as seen from the overlay directory ``out``."""
    if base.overlay is not None:
        raise ConfigError(f"bundle {base.root} is an overlay; adapt from a full bundle (its base, "
                          f"{base.overlay.base_root})")
    shipped = base.root == default_bundle_path().resolve()
    where = DEFAULT_BASE if shipped else os.path.relpath(base.root, out.resolve())
    return {"bundle": where, "manifest_sha256": sha256_file(base.root / MANIFEST), "name": base.manifest.name,
            "version": base.manifest.version}


def check_out(out: Path) -> set[str] | None:
    """The files an earlier overlay in ``out`` names (and its report); None when ``out`` is new or empty.

    Anything else in ``out`` is refused: adapt never writes beside files it did not make.
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out} exists and is not a directory; expected a new directory or an earlier overlay")
    if not out.exists() or not any(out.iterdir()):
        return None
    manifest = out / MANIFEST
    try:
        data = read_json(manifest, MANIFEST, ConfigError) if manifest.is_file() else None
    except ConfigError:
        data = None
    if not is_overlay(data):
        raise ConfigError(f"--out {out} is not empty and not an overlay written by edge-mer adapt; choose a new or "
                          "empty directory")
    files = {REPORT}
    for entry in (data.get("encoders") or {}).values():
        models = entry.get("models") if isinstance(entry, dict) else None
        for model in (models or {}).values():
            path = model.get("path") if isinstance(model, dict) else None
            try:
                check_relative_path(path)  # an earlier overlay is still untrusted: delete only what is inside
                files.add(path)
            except (ConfigError, TypeError):
                continue
    return files


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _commit(staging: Path, out: Path, old: set[str] | None, names: list[str]) -> None:
    """Move the staged overlay into ``out``: a rename when ``out`` is new or empty, else file by file."""
    if old is None:
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
        return
    for name in [n for n in names if n != MANIFEST] + [MANIFEST]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out / name)
    for name in sorted(old - set(names)):
        try:
            inside(out.resolve(), name).unlink(missing_ok=True)
        except (OSError, EdgeMerError) as exc:  # a stale file left behind is harmless: no manifest names it
            log.warning("could not remove the earlier overlay's %s: %s", name, exc)
    shutil.rmtree(staging, ignore_errors=True)


def write_overlay(out: Path, manifest: dict[str, Any], files: dict[str, bytes], report: dict[str, Any]) -> Bundle:
    """Write the overlay ``manifest`` (a mapping), its ``files`` (relative path -> bytes) and ``report``; load it."""
    if manifest.get("format") != OVERLAY_FORMAT:
        raise ValueError(f"not an overlay manifest: {manifest.get('format')!r}")  # a programming error
    old = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside out, so a relative base path means the same from both, and the final move is a rename.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.adapt-"))
    try:
        for name, data in files.items():
            _write(staging / name, data)
        _write(staging / REPORT, (json.dumps(report, indent=2) + "\n").encode())
        _write(staging / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        load_bundle(staging)  # the overlay loads, base hash and all, before out changes
        _commit(staging, out, old, [*files, REPORT, MANIFEST])
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return load_bundle(out)
