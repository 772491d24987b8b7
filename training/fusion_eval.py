"""Fused accuracy of every rule and every shipped head against the best single modality, on held-out pairings.

Pairings of split ``B`` (:mod:`pairing`, :mod:`heldout`): CK+48 faces, speakers
of folds 2-3 and GU subjects 7 8 10 11, none of whom the encoders, the
temperatures or the heads saw; labels drawn uniformly from the six classes
CK+48 has. Every subset of modalities is scored through the package's own
rules (``edge_mer.fusion.registry``) built on the bundle, with the bundle's
weights, as the daemon would fuse one tick; each result carries its
probabilities and its encoder's embedding (``ModalityResult.embeddings``), so
heads that read embeddings get them as the runtime gives them.

Every head of the bundle (``fusion.head`` and ``fusion.heads``) is scored
through the ``learned`` rule with its modality check and without it (keys
``learned`` / ``learned_unchecked`` for the default head, ``learned.<name>`` /
``learned_unchecked.<name>`` for the others), on the same pairings.

    python training/fusion_eval.py [--bundle edge_mer/assets/default_bundle] [--n 3000] [--precision fp32]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

import heldout
from edge_mer.bundle import load_bundle
from edge_mer.fusion.registry import RULES, create_rule
from edge_mer.results import ModalityResult
from edge_mer_calibration.pairing import EMBEDDING, ENCODERS, Pools, embedding_key, pairings

log = logging.getLogger("training.fusion_eval")

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise")
SCENARIOS = (("face", "speech"), ("face", "speech", "eeg"), ("face", "speech", "eeg_cyton"), ("face", "eeg"),
             ("speech", "eeg"), ("face",), ("speech",))
SEED = 2024
UNCHECKED = "learned_unchecked"


def results_for(bundle, feeds: dict[str, np.ndarray], i: int) -> list[ModalityResult]:  # noqa: ANN001
    """The tick's valid results of row ``i``: calibrated probabilities and, where the feeds have it, the embedding."""
    out = []
    for k, name in enumerate(ENCODERS):
        spec = bundle.encoder(name)
        if feeds["mask"][i, k] > 0:
            probs = {spec.label_map[label]: float(p) for label, p in zip(spec.labels, feeds[name][i])}
            key = embedding_key(name)
            embeddings = {EMBEDDING: feeds[key][i]} if key in feeds else {}
            out.append(ModalityResult(spec.modality, name, True, None, probs, embeddings=embeddings))
    return out


def paired(default: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """``other`` against the default head on the same pairings: how many only it gets right (``better``),
    how many only the default does (``worse``), and the exact two-sided McNemar p-value."""
    better, worse = int((other & ~default).sum()), int((default & ~other).sum())
    n = better + worse
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1))
    p = 1.0 if n == 0 else min(1.0, 2 * tail / 2 ** n)
    return {"better": better, "worse": worse, "p": p}


def build_rules(bundle, precision: str) -> dict:  # noqa: ANN001
    """Every registered rule, then every shipped head with and without its modality check.

    A head not shipped at ``precision`` is left out (logged); the default head must have it (``learned``).
    """
    rules = {name: create_rule(name, bundle=bundle, precision=precision) for name in RULES}
    default = bundle.manifest.fusion.head_name
    for head, spec in bundle.manifest.fusion.named_heads().items():
        suffix = "" if head == default else f".{head}"
        if suffix and precision != "auto" and precision not in spec.models:
            log.info("head %s has no %s model (has %s): left out", head, precision, ", ".join(spec.models))
            continue
        if suffix:
            rules[f"learned{suffix}"] = create_rule("learned", bundle=bundle, precision=precision, head=head)
        # The head without its modality check, to show what the check does.
        rules[f"{UNCHECKED}{suffix}"] = create_rule("learned", bundle=bundle, precision=precision, head=head,
                                                    min_confidence=0.0, single_passthrough=False, min_skill=0.0)
    return rules


def evaluate(bundle_path: Path, n: int, precision: str) -> dict:
    bundle = load_bundle(bundle_path)
    embeddings = all(any(o.kind == "embedding" and o.name == EMBEDDING for o in bundle.encoder(name).outputs)
                     for name in ENCODERS)
    pools = Pools(bundle.manifest, heldout.load(), "B", embeddings=embeddings)  # the same rows either way
    rules = build_rules(bundle, precision)
    weights = bundle.manifest.fusion.weights
    report = {}
    for s, present in enumerate(SCENARIOS):
        feeds, y = pairings(pools, LABELS, n, np.random.default_rng(SEED + s), present)
        hits = {name: 0 for name in list(present) + list(rules)}
        right = {name: np.zeros(n, dtype=bool) for name in rules}
        for i in range(n):
            results = results_for(bundle, feeds, i)
            truth = LABELS[y[i]]
            for result in results:
                hits[result.encoder] += result.label == truth
            for name, rule in rules.items():
                fused = rule.fuse(results, weights)
                right[name][i] = max(fused, key=fused.get) == truth
                hits[name] += right[name][i]
        accuracy = {name: h / n for name, h in hits.items()}
        best = max(accuracy[m] for m in present)
        report["+".join(present)] = {"accuracy": accuracy, "best_single": best, "n": n, "precision": precision,
                                     "default_head": bundle.manifest.fusion.head_name,
                                     "vs_default": {name: paired(right["learned"], hits_of)
                                                    for name, hits_of in right.items() if name != "learned"}}
        log.info("%-24s best single %.3f | %s", "+".join(present), best,
                 " ".join(f"{k} {v:.3f}" for k, v in accuracy.items() if k not in present))
    for rule in rules.values():
        rule.close()
    return report


#: The scenario a new default head must win: the multimodal case every deployment has.
MAIN_SCENARIO = "face+speech"
ALPHA = 0.05


def choose_default(report: dict, bundle) -> str:  # noqa: ANN001
    """The head that should be the default: the current one unless a single-label head is better there.

    Better means: significantly more accurate than the default head on the same
    pairings of :data:`MAIN_SCENARIO` (exact McNemar, p < :data:`ALPHA`) and not
    significantly less accurate in any scenario; among several, the one most
    accurate over the scenarios of two or more modalities. Heads with a
    multilabel output are left out (they would change every decision's format).
    """
    fusion = bundle.manifest.fusion
    candidates = {}
    for head, spec in fusion.named_heads().items():
        key = f"learned.{head}"
        if head == fusion.head_name or any(o.kind == "multilabel" for o in spec.outputs):
            continue
        if key not in report[MAIN_SCENARIO]["vs_default"]:
            continue
        tests = {s: r["vs_default"][key] for s, r in report.items()}
        main = tests[MAIN_SCENARIO]
        worse = [s for s, t in tests.items() if t["worse"] > t["better"] and t["p"] < ALPHA]
        if main["better"] > main["worse"] and main["p"] < ALPHA and not worse:
            multi = [r["accuracy"][key] for s, r in report.items() if "+" in s]
            candidates[head] = sum(multi) / len(multi)
        log.info("%s against %s: %s", head, fusion.head_name,
                 " ".join(f"{s} +{t['better']}/-{t['worse']} p={t['p']:.3g}" for s, t in tests.items()))
    return max(candidates, key=candidates.get) if candidates else fusion.head_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--bundle", type=Path, default=root / "edge_mer" / "assets" / "default_bundle")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--choose-default", action="store_true",
                        help="make the head that beats the default on these pairings the default (choose_default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/fusion_eval.json (fp32), results/fusion_eval_<precision>.json otherwise")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = evaluate(args.bundle, args.n, args.precision)
    if args.out is None:
        suffix = "" if args.precision == "fp32" else f"_{args.precision}"
        args.out = heldout.RESULTS / f"fusion_eval{suffix}.json"
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.choose_default:
        from bundle_manifest import set_default_head

        bundle = load_bundle(args.bundle)
        chosen = choose_default(report, bundle)
        log.info("default head: %s (was %s)", chosen, bundle.manifest.fusion.head_name)
        if chosen != bundle.manifest.fusion.head_name:
            set_default_head(args.bundle, chosen)


if __name__ == "__main__":
    main()
