"""Fusion cost: every fusion rule's ``fuse()`` per tick, and every shipped fusion head's backend latency.

Rules (:func:`bench_rules`) are built as a run builds them
(:func:`~edge_mer.fusion.registry.create_rule` with the bundle, at fp32) and
fed ticks of valid results of one encoder per modality (face, speech, EEG):
calibrated-looking distributions over each encoder's own labels (a Dirichlet
draw, so each tick differs and ties are rare) and, for encoders with
``embedding`` outputs, small gaussian embeddings, with the bundle's fusion
weights. A rule's cost is the whole ``fuse()`` call: the weight policy, the
coverage rule, the draws of ``monte_carlo``, the learned head's checks, feeds
and inference. Rules that cannot be built on this bundle (no head) say why.

Heads (:func:`bench_heads`) are every head of the bundle
(:meth:`~edge_mer.bundle.schema.FusionSpec.named_heads`) at every precision it
ships, run by the backend alone at batch 1 on feeds made from the head's
declared inputs: rows summing to 1 for ``probs`` inputs, small gaussian
vectors for ``embedding`` inputs and ones for the validity mask (every
modality present, the head's most expensive case). New heads appear without
a change here.

Figures are microseconds (a rule or a head takes tens to hundreds of them,
which milliseconds with two decimals would round away).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bench.latency import time_calls, time_infer
from edge_mer.bundle.feeds import head_ranges
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.schema import FusionHead, TensorInfo
from edge_mer.errors import EdgeMerError
from edge_mer.fusion.learned import LearnedHead
from edge_mer.fusion.registry import RULE_NAMES, create_rule
from edge_mer.results import ModalityResult

log = logging.getLogger(__name__)

#: The modalities whose results the rules are fed, in decision order.
BENCH_MODALITIES = ("face", "speech", "eeg")
#: Distinct ticks the timed calls cycle through.
TICKS = 16
#: Spread of the example embeddings and embedding feeds (the default bundle's are standardised or pooled
#: features of order 1; the cost does not depend on the values).
EMBEDDING_SCALE = 0.1
#: The precision the rules section builds model-running rules at.
RULE_PRECISION = "fp32"


def _us(samples_ms: np.ndarray) -> dict[str, Any]:
    """Median, p90, p99, max and mean of ``samples_ms``, in microseconds, and their count."""
    p50, p90, p99 = np.percentile(samples_ms * 1e3, (50, 90, 99))
    return {"p50_us": round(float(p50), 2), "p90_us": round(float(p90), 2), "p99_us": round(float(p99), 2),
            "max_us": round(float(samples_ms.max() * 1e3), 2), "mean_us": round(float(samples_ms.mean() * 1e3), 2),
            "iterations": int(samples_ms.size)}


def bench_encoders_of(bundle: Bundle) -> list[str]:
    """One encoder per modality of :data:`BENCH_MODALITIES` the bundle has (the first of that modality)."""
    out = []
    for modality in BENCH_MODALITIES:
        name = next((n for n, spec in bundle.manifest.encoders.items() if spec.modality == modality), None)
        if name is not None:
            out.append(name)
    return out


def example_ticks(bundle: Bundle, encoders: Sequence[str], rng: np.random.Generator,
                  ticks: int = TICKS) -> list[list[ModalityResult]]:
    """``ticks`` ticks of valid results of ``encoders``: Dirichlet probabilities and gaussian embeddings."""
    out = []
    for _ in range(ticks):
        tick = []
        for name in encoders:
            spec = bundle.encoder(name)
            labels = list(dict.fromkeys(spec.label_map.values()))
            probs = dict(zip(labels, (float(p) for p in rng.dirichlet(np.ones(len(labels))))))
            embeddings = {o.name: (EMBEDDING_SCALE * rng.standard_normal(int(o.shape[-1]))).astype(np.float32)
                          for o in spec.outputs if o.kind == "embedding"}
            tick.append(ModalityResult(spec.modality, name, True, None, probs, embeddings=embeddings))
        out.append(tick)
    return out


def _rule_variants(bundle: Bundle) -> list[tuple[str, str, dict[str, Any]]]:
    """(row name, rule name, extra create_rule arguments): every rule, then ``learned`` on each other head."""
    variants: list[tuple[str, str, dict[str, Any]]] = [(name, name, {}) for name in RULE_NAMES]
    default = bundle.manifest.fusion.head_name
    variants += [(f"{LearnedHead.name}:{head}", LearnedHead.name, {"head": head})
                 for head in bundle.manifest.fusion.named_heads() if head != default]
    return variants


def bench_rule(bundle: Bundle, rule_name: str, ticks: Sequence[Sequence[ModalityResult]], *, warmup: int,
               iterations: int, options: BackendOptions | None = None, **arguments: Any) -> dict[str, Any]:
    """Per-tick cost of ``fuse()`` of rule ``rule_name`` cycling through ``ticks``; ``skipped`` when it cannot run."""
    weights = dict(bundle.manifest.fusion.weights)
    try:
        rule = create_rule(rule_name, bundle=bundle, precision=RULE_PRECISION, backend_options=options, **arguments)
    except EdgeMerError as exc:  # a rule this bundle cannot run (no head, a head the rule does not take)
        return {"skipped": str(exc)}
    try:
        cycle = itertools.cycle(ticks)
        samples = time_calls(lambda: rule.fuse(next(cycle), weights), warmup=warmup, iterations=iterations)
    except EdgeMerError as exc:  # a rule that fails on these inputs: say so in its row, go on with the others
        return {"skipped": f"fails on the example ticks: {exc}"}
    finally:
        rule.close()
    return _us(samples)


def bench_rules(bundle: Bundle, options: BackendOptions, *, warmup: int, iterations: int,
                seed: int = 0) -> dict[str, Any]:
    """``{"encoders": [...], "rules": {row: summary}}``: every registered rule's fuse() cost per tick."""
    options = dataclasses.replace(options, name=resolve_backend_name(options.name))
    encoders = bench_encoders_of(bundle)
    ticks = example_ticks(bundle, encoders, np.random.default_rng(seed))
    rules = {}
    for row, rule_name, arguments in _rule_variants(bundle):
        log.info("timing fusion rule %s", row)
        rules[row] = bench_rule(bundle, rule_name, ticks, warmup=warmup, iterations=iterations, options=options,
                                **arguments)
    return {"encoders": encoders, "rules": rules}


def head_feed(tensor: TensorInfo, rng: np.random.Generator) -> np.ndarray:
    """A batch-1 feed for one declared head input: a distribution, an embedding or the all-ones mask."""
    shape = tuple(1 if isinstance(d, str) else d for d in tensor.shape)  # dynamic axes: the batch of one
    if tensor.kind == "probs":
        values = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    elif tensor.kind == "embedding":
        values = EMBEDDING_SCALE * rng.standard_normal(shape)
    else:  # the validity mask: every modality present
        values = np.ones(shape)
    return values.astype(tensor.np_dtype)


def bench_head(bundle: Bundle, name: str, head: FusionHead, precision: str, options: BackendOptions, *,
               warmup: int, iterations: int, seed: int = 0) -> dict[str, Any]:
    """Backend latency of shipped head ``name`` at ``precision``, batch 1."""
    rng = np.random.default_rng(seed)
    feeds = {t.name: head_feed(t, rng) for t in head.inputs}
    ref = dataclasses.replace(bundle.head_ref(head, precision, name), dim_ranges=head_ranges(head))
    with create_backend(ref, options) as backend:
        result = _us(time_infer(backend, feeds, warmup=warmup, iterations=iterations))
        result["backend"] = backend.name
    report = head.precisions.get(precision)
    result["gate"] = None if report is None else ("passed" if report.passed else "failed")
    return result


def bench_heads(bundle: Bundle, options: BackendOptions, precisions: Sequence[str] = (), *, warmup: int,
                iterations: int) -> dict[str, dict[str, Any]]:
    """``{head: {precision: summary}}`` for every shipped head at every precision it ships (or those requested)."""
    options = dataclasses.replace(options, name=resolve_backend_name(options.name))
    out: dict[str, dict[str, Any]] = {}
    for name, head in bundle.manifest.fusion.named_heads().items():
        wanted = list(precisions) or list(head.models)
        out[name] = {}
        for precision in wanted:
            if precision not in head.models:
                out[name][precision] = {"skipped": f"no {precision} model in the bundle"}
                continue
            log.info("timing fusion head %s at %s", name, precision)
            try:
                out[name][precision] = bench_head(bundle, name, head, precision, options, warmup=warmup,
                                                  iterations=iterations)
            except EdgeMerError as exc:  # e.g. a backend that cannot build this precision: the others still run
                out[name][precision] = {"skipped": str(exc)}
    return out
