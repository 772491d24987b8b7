"""The export's input and output bundles: a bare ONNX plus manifest entry, and the new bundle directory."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import MANIFEST, Bundle
from edge_mer.bundle.schema import FORMAT, DetectorSpec, EncoderSpec, FusionSpec, Manifest, PrecisionReport
from edge_mer.bundle.writer import external_data_of, file_entry, write_manifest
from edge_mer.config import to_dict
from edge_mer_export.errors import ExportError

log = logging.getLogger(__name__)


def bundle_from_onnx(model: Path, entry: Path, work: Path) -> Bundle:
    """A one-encoder bundle around a bare ONNX file and its manifest entry (JSON: {"name": ..., <EncoderSpec>}).

    The file hash is computed here; valence/arousal coordinates come from the
    default bundle.
    """
    try:
        data = json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"manifest entry {entry} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or "name" not in data:
        raise ExportError(f"manifest entry {entry} must be a JSON object with a 'name' and the encoder fields")
    name = data.pop("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ExportError(f"manifest entry {entry}: name {name!r} must be a plain identifier such as 'face'")
    if not model.is_file():
        raise ExportError(f"ONNX source {model} does not exist")
    root = work / "source_bundle"
    (root / name).mkdir(parents=True)
    shutil.copyfile(model, root / name / model.name)
    _copy_external_data(model, root, name)
    data["models"] = {"fp32": to_dict(file_entry(root, f"{name}/{model.name}"))}
    affect = load_bundle(default_bundle_path()).manifest.affect
    manifest = {"format": FORMAT, "name": f"{name}-export", "version": "0.0.0", "encoders": {name: data},
                "affect": to_dict(affect), "fusion": to_dict(FusionSpec(weights={name: 1.0}))}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return load_bundle(root)


def _copy_external_data(model: Path, root: Path, name: str) -> None:
    """Copy the external-data files of the bare ONNX ``model`` beside its copy in ``root/name``.

    Their locations are checked as the loader checks a bundle's (relative,
    inside the model's directory), and the copies are hashed into the
    manifest entry by :func:`file_entry`.
    """
    for relative in external_data_of(model.parent, model.name):
        source = model.parent / relative
        if not source.is_file():
            raise ExportError(f"ONNX source {model} keeps tensors in {source}, which does not exist")
        (root / name / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / name / relative)


def start_output(source: Bundle, out: Path) -> Path:
    """Copy the source bundle into ``out``, which must not exist or be empty (nothing is overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output directory {out} exists and is not an empty directory; choose a new directory")
    shutil.copytree(source.root, out, dirs_exist_ok=True)
    return out


def candidate_path(out: Path, spec: EncoderSpec, precision: str) -> Path:
    """Where the ``precision`` file of an encoder goes: beside its fp32 file, ``<stem>.<precision>.onnx``."""
    fp32 = Path(spec.models["fp32"].path)
    return out / fp32.parent / f"{fp32.stem}.{precision}.onnx"


def finish_output(out: Path, manifest: Manifest, updated: dict[str, EncoderSpec],
                  detectors: dict[str, DetectorSpec] | None = None) -> Path:
    """Write the output manifest with the exported encoders (and detectors), then reload it to prove it validates."""
    encoders = {**manifest.encoders, **updated}
    path = write_manifest(out, replace(manifest, encoders=encoders,
                                       detectors={**manifest.detectors, **(detectors or {})}))
    load_bundle(out)
    return path


def with_precisions(out: Path, spec: EncoderSpec, files: dict[str, Path],
                    reports: dict[str, PrecisionReport]) -> EncoderSpec:
    """``spec`` with the passing candidate files added and every precision's gate report recorded."""
    models = dict(spec.models)  # a re-export of one precision keeps the others
    for precision, path in files.items():
        models.pop(precision, None)
        if reports[precision].passed:
            models[precision] = file_entry(out, path.relative_to(out).as_posix())
    return replace(spec, models=models, precisions={**spec.precisions, **reports})
