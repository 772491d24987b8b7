"""Shared by the recipes: put one encoder into the default bundle's manifest, keeping the rest."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from affect import SOURCE, valence_arousal
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import FORMAT, AffectSpace, DetectorSpec, EncoderSpec, FusionSpec, Manifest
from edge_mer.bundle.writer import write_manifest

NAME = "edge-mer-default"
VERSION = "0.1.0"


def update_encoder(bundle: Path, name: str, spec: EncoderSpec, fusion: FusionSpec | None = None) -> Path:
    """Write ``spec`` as encoder ``name`` into ``bundle/manifest.json`` and return its path."""
    path = bundle / MANIFEST
    encoders: dict[str, EncoderSpec] = {}
    detectors: dict[str, DetectorSpec] = {}
    old_fusion = None
    if path.is_file():
        old = parse_manifest(json.loads(path.read_text(encoding="utf-8")))
        encoders = dict(old.encoders)
        detectors = dict(old.detectors)
        old_fusion = old.fusion
    encoders[name] = spec
    weights = dict(old_fusion.weights) if old_fusion else {}
    weights.setdefault(name, 1.0)
    manifest = Manifest(
        format=FORMAT, name=NAME, version=VERSION, encoders=dict(sorted(encoders.items())),
        affect=AffectSpace(valence_arousal=valence_arousal(), source=SOURCE),
        fusion=fusion or FusionSpec(rule="weighted_mean", weights=weights,
                                     smoothing_half_life_s=old_fusion.smoothing_half_life_s if old_fusion else 1.0),
        description="Default edge-mer encoders; see training/README.md for how each file was produced.",
        detectors=detectors)
    return write_manifest(bundle, manifest)


def update_detector(bundle: Path, name: str, spec: DetectorSpec) -> Path:
    """Write ``spec`` as detector ``name`` into ``bundle/manifest.json``, keeping the rest."""
    old = parse_manifest(json.loads((bundle / MANIFEST).read_text(encoding="utf-8")))
    return write_manifest(bundle, dataclasses.replace(old, detectors=dict(sorted({**old.detectors,
                                                                                 name: spec}.items()))))


def update_fusion(bundle: Path, fusion: FusionSpec) -> Path:
    """Replace the fusion section of ``bundle/manifest.json``."""
    old = parse_manifest(json.loads((bundle / MANIFEST).read_text(encoding="utf-8")))
    return write_manifest(bundle, dataclasses.replace(old, fusion=fusion))


def set_default_head(bundle: Path, name: str) -> Path:
    """Make shipped head ``name`` the default (``fusion.head``), keeping every head."""
    old = parse_manifest(json.loads((bundle / MANIFEST).read_text(encoding="utf-8")))
    heads = old.fusion.named_heads()
    if name not in heads:
        raise SystemExit(f"bundle {bundle} ships no head {name!r} (it has: {', '.join(heads)})")
    default = heads.pop(name)
    fusion = dataclasses.replace(old.fusion, head=default, head_name=name, heads=heads)
    return write_manifest(bundle, dataclasses.replace(old, fusion=fusion))
