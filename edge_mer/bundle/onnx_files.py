"""A bundle's ONNX files, read as untrusted input: paths kept inside the bundle, sizes bounded,
bytes hashed, external-data files found, and operators from unknown domains refused.

Models are parsed with ``onnx``'s protobuf classes from the bytes that were
hashed, never with their external data loaded (that is the backend's job, from
the same resolved paths), so validating a bundle reads each byte once and
allocates no tensor.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from edge_mer.errors import BundleError, IntegrityError

#: protobuf cannot parse a message of 2 GiB or more, so an .onnx file larger than this is refused unread.
MAX_MODEL_BYTES = (2 << 30) - 1
#: External-data files are hashed in chunks; this only bounds how long a bogus multi-terabyte file is read.
MAX_DATA_BYTES = 16 << 30
#: Operator domains both backends run: standard ONNX and ONNX-ML ...
STANDARD_DOMAINS: tuple[str, ...] = ("", "ai.onnx", "ai.onnx.ml")
#: ... plus ONNX Runtime's contrib operators (its quantizer and optimizer emit them). TensorRT's ONNX
#: parser refuses the contrib operators it lacks when it builds the engine.
RUNTIME_DOMAINS: tuple[str, ...] = (*STANDARD_DOMAINS, "com.microsoft")


def inside(root: Path, relative: str) -> Path:
    """``root/relative`` with every symlink resolved, refused unless it stays inside ``root`` (resolved)."""
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, on Python < 3.13
        raise BundleError(f"bundle file {root / relative} cannot be resolved: {exc}") from None
    if not path.is_relative_to(root):
        raise BundleError(f"bundle file {root / relative} resolves to {path}, outside the bundle directory {root}")
    return path


def _size(path: Path, limit: int) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"bundle file {path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if size > limit:
        raise BundleError(f"bundle file {path} has {size} bytes, more than the {limit} a bundle file may have")
    return size


def read_bounded(path: Path, limit: int = MAX_MODEL_BYTES) -> bytes:
    """The bytes of ``path`` (a regular file of at most ``limit`` bytes), or one BundleError line."""
    _size(path, limit)
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"bundle file {path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:  # it grew after the size check
        raise BundleError(f"bundle file {path} has more than the {limit} bytes a bundle file may have")
    return data


def sha256_file(path: Path, chunk: int = 1 << 20, limit: int = MAX_DATA_BYTES) -> str:
    """Hex sha256 of a file, read in chunks; unreadable or larger than ``limit`` is a BundleError."""
    _size(path, limit)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    except OSError as exc:
        raise BundleError(f"bundle file {path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    return digest.hexdigest()


def check_digest(path: Path, actual: str, expected: str) -> None:
    """Raise :class:`IntegrityError` naming ``path`` unless ``actual == expected``."""
    if actual != expected:
        raise IntegrityError(f"bundle file {path} fails its integrity check: sha256 {actual[:12]}... "
                             f"does not match the manifest's {expected[:12]}...")


def parse_model(data: bytes, path: Path) -> Any:
    """``data`` parsed as an ``onnx.ModelProto`` (external data not loaded); unreadable is a BundleError."""
    import onnx  # lazy: only bundle validation needs it
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{path} is not a readable ONNX model: {exc}") from None
    if not model.HasField("graph"):
        raise BundleError(f"{path} is not a readable ONNX model: it has no graph")
    return model


def _graphs(model: Any) -> Iterator[Any]:
    """The main graph and every subgraph (If/Loop/Scan bodies), depth first."""
    todo = [model.graph]
    while todo:
        graph = todo.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                todo += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)


def nodes(model: Any) -> Iterator[Any]:
    """Every node: of each graph and subgraph, and of each model-local function."""
    for graph in _graphs(model):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def _tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto that may hold data: initializers, sparse tensors, node attributes."""
    for graph in _graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for node in nodes(model):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
                yield from (sparse.values, sparse.indices)


def external_data_paths(model: Any, model_path: str, where: Path) -> list[str]:
    """Bundle-relative POSIX paths of the external-data files ``model`` (at ``model_path``) reads.

    ONNX locations are relative to the model's directory; one that is empty,
    absolute or has a ``..`` component is a BundleError naming it.
    """
    from onnx import TensorProto

    found: list[str] = []
    for tensor in _tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        pure = PurePosixPath(location)
        if (not location or pure.is_absolute() or ".." in pure.parts or "\\" in location
                or any(ch < " " for ch in location)):
            raise BundleError(f"{where}: tensor {tensor.name!r} has external data at {location!r}; expected a "
                              "path relative to the model's directory, inside it, without '..'")
        relative = (PurePosixPath(model_path).parent / pure).as_posix()
        if relative not in found:
            found.append(relative)
    return found


def check_domains(model: Any, where: Path, allowed: tuple[str, ...] = RUNTIME_DOMAINS) -> None:
    """Refuse a node whose operator domain no backend here runs (model-local functions are fine)."""
    local = {(f.domain, f.name) for f in model.functions}
    for node in nodes(model):
        if node.domain in allowed or (node.domain, node.op_type) in local:
            continue
        raise BundleError(f"{where}: node {node.name or node.op_type!r} is operator {node.op_type!r} of domain "
                          f"{node.domain!r}, which edge-mer's backends cannot run (known domains: "
                          f"{', '.join(repr(d) for d in allowed)})")
