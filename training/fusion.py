"""The default bundle's fusion section, derived from the encoders' held-out results.

Each encoder's weight is its skill above chance on subject-independent held-out
data, ``(accuracy - chance) / (1 - chance)`` (Cohen's kappa for balanced
classes): 0 for an encoder at chance, 1 for a perfect one. The figures are the
ones the other recipes wrote into the manifest (face: CK+48 cross-dataset;
speech: EMO-DB leave-one-speaker-out; EEG: GU leave-one-subject-out).

    python training/fusion.py [--bundle edge_mer/assets/default_bundle]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bundle_manifest import update_fusion
from edge_mer.bundle.loader import MANIFEST, parse_manifest
from edge_mer.bundle.schema import EncoderSpec, FusionSpec

log = logging.getLogger("training.fusion")

RULE = "weighted_mean"
HALF_LIFE_S = 1.0


def skill(encoder: EncoderSpec) -> tuple[float, str]:
    """Kappa-style skill from the encoder's held-out accuracy: the cross-corpus mean where there is one
    (what a new user's microphone is closest to), else the first (subject-independent) accuracy metric."""
    accuracies = [m for m in encoder.metrics if m.name == "accuracy"]
    metric = next((m for m in accuracies if m.dataset.startswith("mean of")), accuracies[0])
    chance = 1.0 / len(encoder.labels)
    return max(0.0, (metric.value - chance) / (1.0 - chance)), f"{metric.value:.3f} on {metric.dataset}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    parser.add_argument("--keep-rule", action="store_true", help="keep the manifest's rule and head (re-weighting only)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = parse_manifest(json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8")))
    weights, notes = {}, []
    for name, encoder in manifest.encoders.items():
        weights[name], basis = skill(encoder)
        weights[name] = round(weights[name], 4)
        notes.append(f"{name}={weights[name]:.4f} from accuracy {basis}")
        log.info("%s: weight %.4f (accuracy %s)", name, weights[name], basis)
    fusion = FusionSpec(rule=manifest.fusion.rule if args.keep_rule else RULE, weights=weights,
                        smoothing_half_life_s=HALF_LIFE_S, head=manifest.fusion.head if args.keep_rule else None,
                        notes="weights = (accuracy - chance) / (1 - chance) on subject-independent held-out data: "
                              + "; ".join(notes))
    update_fusion(args.bundle, fusion)


if __name__ == "__main__":
    main()
