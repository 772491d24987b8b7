"""The on-disk engine and timing caches.

A serialized engine only runs on the TensorRT version and GPU that built it,
and is only right for the model file, precision, profile shapes and build
options it was built with, so all of those go into its :class:`EngineKey`.
Files are written atomically (temporary file, then ``os.replace``) so a
crash or a second process never leaves a half-written engine, and each file
starts with a small header holding the payload's sha256 so a truncated or
corrupt file is detected, logged and rebuilt instead of crashing TensorRT.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_mer.backends.tensorrt.plan import BuildPlan
from edge_mer.backends.tensorrt.profiles import ShapeRange
from edge_mer.errors import BackendError

log = logging.getLogger(__name__)

#: First bytes of every cache file; bump the digit when the layout changes.
MAGIC = b"EDGEMER-TRT1\n"
_HEADER_LEN = len(MAGIC) + 64 + 1  # magic, hex sha256 of the payload, newline
_CC_RE = re.compile(r"^\d+\.\d+$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def digest(value: object) -> str:
    """sha256 hex of ``value`` as canonical JSON (sorted keys, tuples as lists)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def profile_digest(ranges: Sequence[ShapeRange]) -> str:
    """Digest of the optimisation-profile shapes, in input order."""
    return digest([[r.name, list(r.min), list(r.opt), list(r.max)] for r in ranges])


def options_digest(plan: BuildPlan, workspace_mib: int, optimization_level: int,
                   extra: Mapping[str, object] | None = None) -> str:
    """Digest of the build settings that change the engine, beyond model, precision and shapes."""
    return digest({
        "onnx": plan.onnx_key,
        "strongly_typed": True,
        "creation_flag": plan.creation_flag,
        "workspace_mib": workspace_mib,
        "optimization_level": optimization_level,
        "extra": dict(extra or {}),
    })


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-").lower() or "x"


@dataclass(frozen=True)
class EngineKey:
    """Everything a cached engine depends on; equal keys mean the engine can be reused."""

    model_name: str
    model_sha256: str
    precision: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    profile_digest: str
    options_digest: str

    def __post_init__(self) -> None:
        if not _CC_RE.match(self.compute_capability):
            raise BackendError(f"compute capability must look like '8.7', got {self.compute_capability!r}")
        if not _SHA_RE.match(self.model_sha256):
            raise BackendError(f"model sha256 must be 64 lowercase hex digits, got {self.model_sha256!r}")
        for field in ("model_name", "precision", "trt_version", "gpu_name", "profile_digest", "options_digest"):
            if not getattr(self, field):
                raise BackendError(f"engine cache key: {field} is empty")

    def digest(self) -> str:
        """sha256 hex over every field."""
        return digest(asdict(self))

    def file_name(self) -> str:
        """``<model>-<precision>-trt<version>-sm<cc>-<hash16>.engine``: readable, and unique by the hash."""
        sm = self.compute_capability.replace(".", "")
        prefix = f"{_slug(self.model_name)}-{_slug(self.precision)}-trt{_slug(self.trt_version)}-sm{sm}"
        return f"{prefix}-{self.digest()[:16]}.engine"


def engine_path(key: EngineKey, cache_dir: Path) -> Path:
    """Where the engine for ``key`` lives under ``cache_dir``."""
    return Path(cache_dir) / key.file_name()


def timing_cache_path(trt_version: str, gpu_name: str, compute_capability: str, cache_dir: Path) -> Path:
    """The timing cache shared by every build with this TensorRT version on this GPU model."""
    if not _CC_RE.match(compute_capability):
        raise BackendError(f"compute capability must look like '8.7', got {compute_capability!r}")
    short = digest([trt_version, gpu_name, compute_capability])[:12]
    sm = compute_capability.replace(".", "")
    return Path(cache_dir) / f"timing-trt{_slug(trt_version)}-{_slug(gpu_name)}-sm{sm}-{short}.cache"


def write_blob(path: Path, payload: bytes) -> None:
    """Atomically write ``payload`` with its checksum header to ``path`` (parents created).

    Raises ``OSError`` when the directory is not writable; callers decide
    whether a cache that cannot be written is fatal.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes(payload)
    header = MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header)
            fh.write(data)
            fh.flush()
            # Data must be on disk before the rename makes it visible, or a power cut can
            # leave a complete-looking name with empty contents.
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote %s (%d bytes)", path, len(data))


def read_blob(path: Path) -> bytes | None:
    """The payload written by :func:`write_blob`, or None when missing or corrupt.

    A corrupt file (bad header, truncated, checksum mismatch) is logged and
    removed so the caller rebuilds it; an unreadable one is logged and left.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        log.debug("no cached file at %s", path)
        return None
    except OSError as exc:
        log.warning("cannot read cached %s (%s); rebuilding", path, exc.strerror or exc)
        return None
    problem = _check_blob(raw)
    if problem is None:
        return raw[_HEADER_LEN:]
    log.warning("discarding corrupt cache file %s (%s); rebuilding", path, problem)
    discard(path)
    return None


def _check_blob(raw: bytes) -> str | None:
    if not raw.startswith(MAGIC):
        return "not an edge-mer cache file"
    if len(raw) < _HEADER_LEN or raw[_HEADER_LEN - 1:_HEADER_LEN] != b"\n":
        return "truncated header"
    want = raw[len(MAGIC):_HEADER_LEN - 1].decode("ascii", errors="replace")
    if hashlib.sha256(raw[_HEADER_LEN:]).hexdigest() != want:
        return "checksum mismatch"
    return None


def discard(path: Path) -> None:
    """Remove a cache file that proved unusable; failure to remove is only logged."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove %s (%s)", path, exc.strerror or exc)
