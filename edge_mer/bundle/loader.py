"""Loading a bundle directory: schema, files, hashes and ONNX signatures.

Loading reads the manifest (size- and depth-bounded), hashes every file a
model loads (the ``.onnx`` and its external-data files) and reads each ONNX
graph's inputs, outputs and operator domains; it never creates an inference
session (that happens when a backend is asked for), so it stays cheap.

Every path is resolved once, here, and refused unless it stays inside the
bundle directory; backends get those resolved paths, so they open the files
that were hashed. A file replaced between :func:`load_bundle` and a backend's
``load()`` is not detected: bundles are untrusted at rest, and whoever can
write into the bundle directory while the daemon starts can equally change
what it runs.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.bundle.onnx_files import (check_digest, check_domains, external_data_paths, inside, parse_model,
                                        read_bounded)
from edge_mer.bundle.onnx_files import sha256_file as sha256_file
from edge_mer.bundle.overlay import OverlayInfo, is_overlay, merge_overlay, overlay_info
from edge_mer.bundle.schema import (_PARAMS_BY_MODALITY, DetectorSpec, EncoderSpec, FileEntry, FusionHead, Manifest,
                                   TensorInfo)
from edge_mer.names import MODALITIES
from edge_mer.config import from_dict, read_json
from edge_mer.errors import BundleError, ConfigError, EdgeMerError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


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


@dataclass(frozen=True)
class _ModelTensor:
    """An input or output as the ONNX file declares it (unvalidated: the manifest is what gets bounded)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


def _onnx_signature(model: Any, path: Path) -> tuple[list[_ModelTensor], list[_ModelTensor]]:
    initializers = {t.name for t in model.graph.initializer}

    def info(values: Any) -> list[_ModelTensor]:
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
            out.append(_ModelTensor(v.name, dims, dtype))
        return out

    return info(model.graph.input), info(model.graph.output)


def _check_tensors(where: str, declared: tuple[TensorInfo, ...], actual: list[_ModelTensor]) -> None:
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


def head_model_name(manifest: Manifest, name: str | None) -> str:
    """The model name of shipped head ``name``: ``fusion_head`` for the default head, ``fusion_head.<name>`` else."""
    return HEAD_MODEL_NAME if name is None or name == manifest.fusion.head_name else f"{HEAD_MODEL_NAME}.{name}"


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk; for an overlay (:mod:`edge_mer.bundle.overlay`), ``root`` is the overlay's
    directory, ``manifest`` the merged one and ``overlay`` says which files lie in the base."""

    root: Path
    manifest: Manifest
    overlay: OverlayInfo | None = None

    def encoder(self, name: str) -> EncoderSpec:
        try:
            return self.manifest.encoders[name]
        except KeyError:
            known = ", ".join(self.manifest.encoders)
            raise BundleError(f"bundle {self.manifest.name} has no encoder {name!r} (has: {known})") from None

    def root_of(self, relative: str) -> Path:
        """The directory the manifest path ``relative`` is relative to: ``root``, or an overlay's base's."""
        return self.root if self.overlay is None or self.overlay.holds(relative) else self.overlay.base_root

    def path(self, entry: FileEntry) -> Path:
        """The file ``entry`` names, symlinks resolved; a BundleError if that leaves the bundle directory."""
        return inside(self.root_of(entry.path), entry.path)

    def model_ref(self, name: str, precision: str = "fp32") -> ModelRef:
        """What a backend needs to run encoder ``name`` at ``precision``."""
        return self._ref(name, f"encoder {name!r}", self.encoder(name).models, precision)

    def detector(self, name: str) -> DetectorSpec:
        try:
            return self.manifest.detectors[name]
        except KeyError:
            known = ", ".join(self.manifest.detectors) or "none"
            raise BundleError(f"bundle {self.manifest.name} has no {name!r} detector model (has: {known})") from None

    def detector_ref(self, name: str, precision: str = "fp32") -> ModelRef:
        """What a backend needs to run detector ``name`` at ``precision``."""
        return self._ref(f"detector.{name}", f"detector {name!r}", self.detector(name).models, precision)

    def head_ref(self, head: FusionHead, precision: str = "fp32", name: str | None = None) -> ModelRef:
        """What a backend needs to run the fusion ``head`` (shipped as ``name``; None: the default) at ``precision``."""
        model = head_model_name(self.manifest, name)
        return self._ref(model, f"fusion head {name or self.manifest.fusion.head_name!r}", head.models, precision)

    def _ref(self, name: str, what: str, models: dict[str, FileEntry], precision: str) -> ModelRef:
        if precision not in models:
            raise BundleError(f"{what} has no {precision} model in bundle {self.manifest.name} "
                              f"(has: {', '.join(models)})")
        # content_sha256 covers external data too, so engine caches keyed on it see new weights.
        files = {p: ModelFile(self.path(f), f.content_sha256) for p, f in models.items()}
        return ModelRef(name=name, precision=precision, files=files)

    def summary(self) -> str:
        """A few human-readable lines describing the bundle."""
        m = self.manifest
        lines = [f"bundle {m.name} {m.version} ({m.format}) at {self.root}"]
        lines += [self.overlay.describe()] if self.overlay is not None else []
        for name, enc in m.encoders.items():
            shapes = "; ".join(f"{t.name} {t.dtype}[{', '.join(str(d) for d in t.shape)}]" for t in enc.inputs)
            metric = next(iter(enc.metrics), None)
            measured = f", {metric.name} {metric.value:.3f} on {metric.dataset} ({metric.split})" if metric else ""
            cal = enc.calibration
            calibrated = f", temperature {cal.temperature:g} (ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f})" \
                if cal is not None else ""
            lines.append(f"  {name}: {enc.modality}, precisions {'/'.join(enc.models)}, input {shapes}, "
                         f"{len(enc.labels)} labels{measured}{calibrated}")
        weights = ", ".join(f"{k}={v:g}" for k, v in m.fusion.weights.items()) or "equal"
        for name, det in m.detectors.items():
            d = det.decoding
            lines.append(f"  detector {name}: precisions {'/'.join(det.models)}, input {d.input_size[0]}x"
                         f"{d.input_size[1]}, {d.num_anchors} anchors, {d.num_keypoints} keypoints")
        heads = "".join(f"; head {name} precisions {'/'.join(h.models)}" for name, h in m.fusion.named_heads().items())
        lines.append(f"  fusion: {m.fusion.rule} (weights {weights}; half-life {m.fusion.smoothing_half_life_s:g} s"
                     f"{heads})")
        return "\n".join(lines)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(data: Any, manifest_path: Path) -> None:
    """Refuse strings with lone surrogates (``"\\ud800"`` escapes): no file name or output can encode them."""
    todo: list[tuple[Any, str]] = [(data, "")]
    while todo:
        node, key = todo.pop()
        texts = [node] if isinstance(node, str) else list(node) if isinstance(node, dict) else []
        if any(_SURROGATE.search(t) for t in texts):
            raise BundleError(f"{manifest_path}: {key.lstrip('.') or 'the manifest'} has a lone UTF-16 surrogate "
                              "(a \\ud800-\\udfff escape); expected Unicode text")
        if isinstance(node, dict):
            todo += [(v, f"{key}.{k}") for k, v in node.items()]
        elif isinstance(node, list):
            todo += [(v, f"{key}[{i}]") for i, v in enumerate(node)]


def _one_line(text: str) -> str:
    # Manifest keys and ONNX node names are quoted into messages; their control characters must not
    # split the one line an entry point prints.
    return "".join(ch if ch >= " " else repr(ch)[1:-1] for ch in text)


def load_bundle(root: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Read and validate the bundle in ``root``.

    Raises :class:`BundleError` (one line, naming the file or key) for a
    missing, oversized, too deeply nested or malformed manifest, a missing
    file or one outside the bundle directory, an external-data file the
    manifest does not list, an operator domain no backend runs, an ONNX
    signature that does not match the manifest, and :class:`IntegrityError`
    for a file (external data included) whose sha256 differs from the manifest.

    An overlay directory (:mod:`edge_mer.bundle.overlay`, written by
    ``edge-mer adapt``) loads as its base with the overlay applied, after
    checking the base manifest's sha256 and the overlay's own files.
    """
    try:
        return _load(Path(root), verify_hashes)
    except EdgeMerError as exc:
        raise type(exc)(_one_line(str(exc))) from None


def _load(root: Path, verify_hashes: bool) -> Bundle:
    manifest_path = root / MANIFEST
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise BundleError(f"bundle directory {root} {what}")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing; a bundle directory needs a {MANIFEST}")
    data = read_json(manifest_path, MANIFEST, BundleError)
    _check_text(data, manifest_path)
    merged = merge_overlay(root.resolve(), data, manifest_path, MANIFEST) if is_overlay(data) else None
    if merged is not None:
        data = merged.data
        _check_text(data, manifest_path)  # the base's part too
    try:
        manifest = parse_manifest(data)
    except ConfigError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from None
    overlay = overlay_info(root.resolve(), merged, manifest) if merged is not None else None
    bundle = Bundle(root.resolve(), manifest, overlay)
    _check_files(bundle, verify_hashes)
    log.debug("loaded bundle %s from %s", manifest.name, root)
    return bundle


def _check_model(bundle: Bundle, entry: FileEntry, verify_hashes: bool) -> Any:
    """The parsed model of ``entry`` after checking it and its external-data files (presence, sha256, paths)."""
    path = bundle.path(entry)
    if not path.is_file():
        raise BundleError(f"bundle file {path} is missing")
    data = read_bounded(path)
    if verify_hashes:
        check_digest(path, hashlib.sha256(data).hexdigest(), entry.sha256)
    model = parse_model(data, path)
    used = external_data_paths(model, entry.path, path)
    # The backend reads external data beside the file it loads (the resolved path): that directory
    # must be the one the manifest's paths are relative to, or it would read files not hashed here.
    base = bundle.root_of(entry.path)
    if used and path.parent != inside(base, PurePosixPath(entry.path).parent.as_posix()):
        raise BundleError(f"bundle file {base / entry.path} links to {path} in another directory; "
                          "a model with external data must lie in the directory the manifest names")
    listed = {PurePosixPath(e.path).as_posix(): e for e in entry.external_data}
    for relative in used:
        if relative not in listed:
            raise BundleError(f"bundle file {base / relative} holds external data of {path} but is not "
                              f"listed in the manifest's external_data of {entry.path}")
    for relative, data_entry in listed.items():
        if relative not in used:
            raise BundleError(f"manifest lists external_data {relative} of {entry.path}, which {path} does not use")
        data_path = bundle.path(data_entry)
        if not data_path.is_file():
            raise BundleError(f"bundle file {data_path} is missing (external data of {entry.path})")
        if verify_hashes:
            check_digest(data_path, sha256_file(data_path), data_entry.sha256)
    check_domains(model, path)
    return model


def _check_files(bundle: Bundle, verify_hashes: bool) -> None:
    m = bundle.manifest
    parts = [(f"encoder {name}", enc) for name, enc in m.encoders.items()]
    parts += [(f"detector {name}", det) for name, det in m.detectors.items()]
    parts += [(f"fusion head {name}", head) for name, head in m.fusion.named_heads().items()]
    for what, spec in parts:
        for precision, entry in spec.models.items():
            model = _check_model(bundle, entry, verify_hashes)
            inputs, outputs = _onnx_signature(model, bundle.path(entry))
            where = f"{what} ({precision}, {entry.path})"
            _check_tensors(where, spec.inputs, inputs)
            _check_tensors(where, spec.outputs, outputs)
