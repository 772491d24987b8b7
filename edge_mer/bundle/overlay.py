"""Bundle overlays (format ``edge-mer-bundle-overlay/1``): a few changed encoders over a pinned base bundle.

``edge-mer adapt`` writes one per user. Its ``manifest.json``::

    {"format": "edge-mer-bundle-overlay/1", "name": "edge-mer-default+user", "version": "0.1.0+user",
     "base": {"bundle": "default", "manifest_sha256": "<sha256 of the base manifest.json>",
              "name": "edge-mer-default", "version": "0.1.0"},
     "encoders": {"eeg": {<a whole encoder entry, as in a bundle manifest>}},
     "calibrations": {"face": {<a Calibration: temperature, dataset, split, n, ece_before, ...>}},
     "description": "..."}

``base.bundle`` is ``"default"`` (the bundle shipped in the package, found
again after a reinstall) or a path, relative to the overlay directory or
absolute. The base must be a full bundle (not another overlay) whose
``manifest.json`` still has sha256 ``manifest_sha256``; since that manifest
pins every base file by its own sha256, the hash pins the whole base.
``encoders`` replace (or add) whole entries; their files are paths inside
the overlay directory (relative, no ``..``, no symlink out, at most
:data:`MAX_OVERLAY_FILE_BYTES`) and are hashed like any bundle file.
``calibrations`` set the temperature of base encoders the overlay keeps.

:func:`merge_overlay` works on the decoded JSON: it returns one merged
manifest mapping, which :func:`edge_mer.bundle.loader.load_bundle` parses
and checks as it does any bundle, and the :class:`OverlayInfo` that tells
it which files lie in the overlay directory. Overlays are untrusted: every
error is one :class:`~edge_mer.errors.BundleError` line naming the key or file.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edge_mer.bundle.onnx_files import inside, sha256_file
from edge_mer.bundle.schema import _HEX64, Calibration, FileEntry, Manifest, _short
from edge_mer.config import from_dict, key_text, read_json, require
from edge_mer.errors import BundleError, ConfigError

log = logging.getLogger(__name__)

OVERLAY_FORMAT = "edge-mer-bundle-overlay/1"
#: ``base.bundle`` naming the bundle shipped in the package (its location changes with every install).
DEFAULT_BASE = "default"
#: Overlay files are per-user heads of a few kB; anything near this is not one.
MAX_OVERLAY_FILE_BYTES = 64 << 20
MAX_OVERLAY_ENCODERS = 64
MAX_BASE_PATH_CHARS = 4096
MAX_TEXT_CHARS = 4096
_KEYS = ("format", "name", "version", "base", "encoders", "calibrations", "description")
_REQUIRED = ("format", "name", "version", "base")


@dataclass(frozen=True)
class BaseRef:
    """The bundle an overlay applies to: ``"default"`` or a path, and the sha256 of its ``manifest.json``."""

    bundle: str
    manifest_sha256: str
    name: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        require(0 < len(self.bundle) <= MAX_BASE_PATH_CHARS and self.bundle.isprintable(),
                f"bundle {_short(self.bundle)}: expected \"{DEFAULT_BASE}\" or a path of 1..{MAX_BASE_PATH_CHARS} "
                "printable characters")
        require(bool(_HEX64.match(self.manifest_sha256)),
                f"manifest_sha256 {_short(self.manifest_sha256)}: expected 64 lowercase hex digits")
        for key in ("name", "version"):
            value = getattr(self, key)
            require(len(value) <= 256 and value.isprintable(), f"{key} {_short(value)}: expected at most 256 "
                    "printable characters")


@dataclass(frozen=True)
class OverlayInfo:
    """What :func:`load_bundle` keeps of an overlay: where it and its base are, and what it changes."""

    root: Path
    base_root: Path
    base: BaseRef
    #: Bundle-relative POSIX paths of the files in the overlay directory (models and their external data).
    files: frozenset[str]
    replaced: tuple[str, ...]
    calibrated: tuple[str, ...]

    def holds(self, relative: str) -> bool:
        """Whether ``relative`` (a manifest path) names a file of the overlay rather than of its base."""
        return PurePosixPath(relative).as_posix() in self.files

    def describe(self) -> str:
        """One line for ``edge-mer info``: the base and what the overlay changes."""
        changes = [f"encoders {', '.join(self.replaced)}"] if self.replaced else []
        changes += [f"calibrations of {', '.join(self.calibrated)}"] if self.calibrated else []
        return (f"  overlay of {self.base.name or 'bundle'} {self.base.version} at {self.base_root} "
                f"(base manifest sha256 {self.base.manifest_sha256[:12]}...): {'; '.join(changes) or 'no changes'}")


@dataclass(frozen=True)
class MergedOverlay:
    """:func:`merge_overlay`'s result: the merged manifest mapping and what :func:`overlay_info` needs."""

    data: dict[str, Any]
    base_root: Path
    base: BaseRef
    replaced: tuple[str, ...]
    calibrated: tuple[str, ...]


def is_overlay(data: Any) -> bool:
    """Whether a decoded ``manifest.json`` is an overlay's."""
    return isinstance(data, dict) and data.get("format") == OVERLAY_FORMAT


def resolve_base(root: Path, bundle: str) -> Path:
    """The base directory ``bundle`` names for the overlay in ``root``: the default bundle, absolute, or relative."""
    if bundle == DEFAULT_BASE:
        from edge_mer.bundle import default_bundle_path  # the package imports this module: not at import time

        return default_bundle_path().resolve()
    path = Path(bundle)
    try:
        return (path if path.is_absolute() else root / path).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise BundleError(f"base bundle {_short(bundle)} cannot be resolved: {exc}") from None


def _text(data: Mapping[str, Any], key: str, where: Path) -> None:
    value = data.get(key)
    if key in data and (not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or not value.isprintable()):
        raise BundleError(f"{where}: {key}={_short(value)}: expected a string of at most {MAX_TEXT_CHARS} printable "
                          "characters")


def _table(data: Mapping[str, Any], key: str, where: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise BundleError(f"{where}: {key}: expected a table of encoder name -> entry, got {type(value).__name__}")
    if len(value) > MAX_OVERLAY_ENCODERS:
        raise BundleError(f"{where}: {key} has {len(value)} entries, expected at most {MAX_OVERLAY_ENCODERS}")
    return value


def _check_keys(data: Mapping[str, Any], where: Path) -> None:
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise BundleError(f"{where}: unknown key {key_text(unknown[0])} (known keys here: {', '.join(_KEYS)})")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{where}: missing required key {missing[0]} (an overlay needs {', '.join(_REQUIRED)})")
    for key in ("name", "version", "description"):
        _text(data, key, where)


def _read_base(root: Path, base: BaseRef, where: Path, manifest_name: str) -> tuple[Path, dict[str, Any]]:
    """The base directory and its decoded manifest, after checking the manifest's sha256."""
    base_root = resolve_base(root, base.bundle)
    shown = "the default bundle" if base.bundle == DEFAULT_BASE else f"base bundle {base_root}"
    manifest = base_root / manifest_name
    if not manifest.is_file():
        raise BundleError(f"{where}: {shown} is missing (no {manifest}); expected the bundle this overlay was made "
                          "for")
    actual = sha256_file(manifest)
    if actual != base.manifest_sha256:
        raise BundleError(f"{where}: {shown} has changed since this overlay was made: its manifest sha256 is "
                          f"{actual[:12]}..., the overlay was made for {base.manifest_sha256[:12]}...; re-run "
                          "edge-mer adapt on the current base")
    data = read_json(manifest, manifest_name, BundleError)
    if is_overlay(data):
        raise BundleError(f"{where}: {shown} is itself an overlay; an overlay's base must be a full bundle")
    if not isinstance(data, dict) or not isinstance(data.get("encoders"), dict):
        raise BundleError(f"{manifest}: expected a bundle manifest with an encoders table")
    return base_root, data


def merge_overlay(root: Path, data: dict[str, Any], where: Path, manifest_name: str) -> MergedOverlay:
    """The base's manifest mapping with the overlay in ``root`` (decoded ``data``) applied; see the module doc."""
    _check_keys(data, where)
    try:
        base = from_dict(BaseRef, data["base"], "base")
    except ConfigError as exc:
        raise BundleError(f"{where}: {exc}") from None
    base_root, base_data = _read_base(root, base, where, manifest_name)
    encoders, calibrations = _table(data, "encoders", where), _table(data, "calibrations", where)
    merged_encoders = dict(base_data["encoders"])
    for name, table in calibrations.items():
        if name not in merged_encoders or name in encoders:
            what = "replaced by the overlay's own entry" if name in encoders else "not an encoder of the base"
            raise BundleError(f"{where}: calibrations.{key_text(name)}: {what}; expected a base encoder the overlay "
                              "keeps")
        try:
            from_dict(Calibration, table, f"calibrations.{key_text(name)}")
        except ConfigError as exc:
            raise BundleError(f"{where}: {exc}") from None
        if isinstance(merged_encoders[name], dict):
            merged_encoders[name] = dict(merged_encoders[name], calibration=table)
    merged_encoders.update(encoders)
    merged = dict(base_data, name=data["name"], version=data["version"], encoders=merged_encoders)
    if "description" in data:
        merged["description"] = data["description"]
    return MergedOverlay(merged, base_root, base, tuple(encoders), tuple(calibrations))


def _paths(entries: Iterable[FileEntry]) -> set[str]:
    """The POSIX paths of ``entries`` and of their external-data files."""
    entries = list(entries)
    return {PurePosixPath(f.path).as_posix() for e in entries for f in (e, *e.external_data)}


def overlay_info(root: Path, merged: MergedOverlay, manifest: Manifest) -> OverlayInfo:
    """Where each file of the parsed merged ``manifest`` lies, checked: the overlay's own files inside ``root``,
    none of them at the path of a base file, none larger than :data:`MAX_OVERLAY_FILE_BYTES`."""
    own = _paths(f for name in merged.replaced for f in manifest.encoders[name].models.values())
    kept = [f for name, e in manifest.encoders.items() if name not in merged.replaced for f in e.models.values()]
    kept += [f for d in manifest.detectors.values() for f in d.models.values()]
    kept += [f for head in manifest.fusion.named_heads().values() for f in head.models.values()]
    clash = sorted(own & _paths(kept))
    if clash:
        raise BundleError(f"overlay {root}: file {clash[0]} has the path of a base bundle file; overlay files need "
                          "paths of their own")
    for relative in sorted(own):
        path = inside(root, relative)
        size = path.stat().st_size if path.is_file() else 0
        if size > MAX_OVERLAY_FILE_BYTES:
            raise BundleError(f"overlay file {path} has {size} bytes, more than the {MAX_OVERLAY_FILE_BYTES} an "
                              "overlay file may have")
    return OverlayInfo(root, merged.base_root, merged.base, frozenset(own), merged.replaced, merged.calibrated)
