"""Loading a bundle directory: schema, files, hashes and ONNX signatures.

Loading reads the manifest, hashes every file and reads each ONNX graph's
inputs and outputs; it never creates an inference session (that happens
when a backend is asked for), so it stays cheap.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.bundle.schema import _PARAMS_BY_MODALITY, EncoderSpec, FileEntry, FusionHead, Manifest, TensorInfo
from edge_mer.names import MODALITIES
from edge_mer.config import from_dict
from edge_mer.errors import BundleError, ConfigError, IntegrityError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_manifest(data: Any) -> Manifest:
    """Validate a decoded ``manifest.json`` into a :class:`Manifest` (raises ConfigError naming the key)."""
    if not isinstance(data, dict):
        raise ConfigError(f"manifest must be a JSON object, got {type(data).__name__}")
    encoders = data.get("encoders")
    if isinstance(encoders, dict):
        data = dict(data, encoders={name: _typed_preprocessing(name, enc) for name, enc in encoders.items()})
    return from_dict(Manifest, data)


def _typed_preprocessing(name: str, encoder: Any) -> Any:
    # The preprocessing table's type follows the encoder's modality, so parse it
    # with that class instead of guessing from its keys.
    if not isinstance(encoder, dict) or not isinstance(encoder.get("preprocessing"), dict):
        return encoder
    modality = encoder.get("modality")
    if modality not in MODALITIES:
        raise ConfigError(f"encoders.{name}.modality: expected one of {', '.join(MODALITIES)}, got {modality!r}")
    params = from_dict(_PARAMS_BY_MODALITY[modality], encoder["preprocessing"], f"encoders.{name}.preprocessing")
    return dict(encoder, preprocessing=params)


def _onnx_signature(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnx  # lazy: only bundle validation needs it
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable ONNX model: {exc}") from None
    initializers = {t.name for t in model.graph.initializer}

    def info(values: Any) -> list[TensorInfo]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
            dtype = _ONNX_DTYPES.get(t.elem_type)
            if dtype is None:
                raise BundleError(f"{path}: tensor {v.name} has ONNX element type {t.elem_type}, "
                                  f"expected one of {', '.join(_ONNX_DTYPES.values())}")
            out.append(TensorInfo(v.name, dims, dtype))
        return out

    return info(model.graph.input), info(model.graph.output)


def _check_tensors(where: str, declared: tuple[TensorInfo, ...], actual: list[TensorInfo]) -> None:
    by_name = {t.name: t for t in actual}
    if sorted(by_name) != sorted(t.name for t in declared):
        raise BundleError(f"{where}: model has tensors {sorted(by_name)}, manifest declares "
                          f"{sorted(t.name for t in declared)}")
    for want in declared:
        got = by_name[want.name]
        if got.dtype != want.dtype:
            raise BundleError(f"{where}: tensor {want.name} is {got.dtype} in the model, {want.dtype} in the manifest")
        if len(got.shape) != len(want.shape):
            raise BundleError(f"{where}: tensor {want.name} has shape {list(got.shape)} in the model, "
                              f"{list(want.shape)} in the manifest")
        for axis, (g, w) in enumerate(zip(got.shape, want.shape)):
            # The manifest may fix an axis the model leaves dynamic, never the reverse.
            if isinstance(g, int) and g > 0 and g != w:
                raise BundleError(f"{where}: tensor {want.name} axis {axis} is {g} in the model, "
                                  f"{w!r} in the manifest")


#: The model name of a fusion head's :class:`ModelRef` (engine caches and logs show it).
HEAD_MODEL_NAME = "fusion_head"


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    root: Path
    manifest: Manifest

    def encoder(self, name: str) -> EncoderSpec:
        try:
            return self.manifest.encoders[name]
        except KeyError:
            known = ", ".join(self.manifest.encoders)
            raise BundleError(f"bundle {self.manifest.name} has no encoder {name!r} (has: {known})") from None

    def path(self, entry: FileEntry) -> Path:
        return self.root / entry.path

    def model_ref(self, name: str, precision: str = "fp32") -> ModelRef:
        """What a backend needs to run encoder ``name`` at ``precision``."""
        return self._ref(name, f"encoder {name!r}", self.encoder(name).models, precision)

    def head_ref(self, head: FusionHead, precision: str = "fp32") -> ModelRef:
        """What a backend needs to run the fusion ``head`` at ``precision``."""
        return self._ref(HEAD_MODEL_NAME, "fusion head", head.models, precision)

    def _ref(self, name: str, what: str, models: dict[str, FileEntry], precision: str) -> ModelRef:
        if precision not in models:
            raise BundleError(f"{what} has no {precision} model in bundle {self.manifest.name} "
                              f"(has: {', '.join(models)})")
        files = {p: ModelFile(self.path(f), f.sha256) for p, f in models.items()}
        return ModelRef(name=name, precision=precision, files=files)

    def summary(self) -> str:
        """A few human-readable lines describing the bundle."""
        m = self.manifest
        lines = [f"bundle {m.name} {m.version} ({m.format}) at {self.root}"]
        for name, enc in m.encoders.items():
            shapes = "; ".join(f"{t.name} {t.dtype}[{', '.join(str(d) for d in t.shape)}]" for t in enc.inputs)
            metric = next(iter(enc.metrics), None)
            measured = f", {metric.name} {metric.value:.3f} on {metric.dataset} ({metric.split})" if metric else ""
            lines.append(f"  {name}: {enc.modality}, precisions {'/'.join(enc.models)}, input {shapes}, "
                         f"{len(enc.labels)} labels{measured}")
        weights = ", ".join(f"{k}={v:g}" for k, v in m.fusion.weights.items()) or "equal"
        lines.append(f"  fusion: {m.fusion.rule} (weights {weights}; half-life {m.fusion.smoothing_half_life_s:g} s)")
        return "\n".join(lines)


def load_bundle(root: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Read and validate the bundle in ``root``.

    Raises :class:`BundleError` (one line, naming the file or key) for a
    missing or malformed manifest, a missing file, an ONNX signature that
    does not match the manifest, and :class:`IntegrityError` for a file whose
    sha256 differs from the manifest.
    """
    root = Path(root)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle directory {root} {what}")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing; a bundle directory needs a {MANIFEST}")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
    try:
        manifest = parse_manifest(data)
    except ConfigError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from None
    bundle = Bundle(root.resolve(), manifest)
    _check_files(bundle, verify_hashes)
    log.debug("loaded bundle %s from %s", manifest.name, root)
    return bundle


def _check_files(bundle: Bundle, verify_hashes: bool) -> None:
    for entry in bundle.manifest.files():
        path = bundle.path(entry)
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing")
        if verify_hashes:
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise IntegrityError(f"bundle file {path} fails its integrity check: sha256 {actual[:12]}... "
                                     f"does not match the manifest's {entry.sha256[:12]}...")
    for name, enc in bundle.manifest.encoders.items():
        for precision, entry in enc.models.items():
            inputs, outputs = _onnx_signature(bundle.path(entry))
            where = f"encoder {name} ({precision}, {entry.path})"
            _check_tensors(where, enc.inputs, inputs)
            _check_tensors(where, enc.outputs, outputs)
    head = bundle.manifest.fusion.head
    if head is not None:
        for precision, entry in head.models.items():
            inputs, outputs = _onnx_signature(bundle.path(entry))
            _check_tensors(f"fusion head ({precision}, {entry.path})", head.inputs, inputs)
            _check_tensors(f"fusion head ({precision}, {entry.path})", head.outputs, outputs)
