"""Building a run from its configuration: encoders and runners per modality, fusion, sources.

Everything here is looked up in a registry (runners by modality, live
sources by modality and kind, fusion rules by name, backends by name); this
module only composes.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.precision import resolve_precision
from edge_mer.errors import ConfigError
from edge_mer.fusion.base import FusionRule
from edge_mer.fusion.learned import LearnedHead
from edge_mer.fusion.registry import create_rule
from edge_mer.fusion.smoothing import EmaSmoother
from edge_mer.names import Modality
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.feeds import encoder_feeds
from edge_mer.pipeline.runners import RUNNERS, ModalityRunner
from edge_mer.sources.base import Source, StreamInfo
from edge_mer.sources.registry import create_source
from edge_mer.timing import StageTimes

log = logging.getLogger(__name__)


def build_runner(modality: Modality, config: RunConfig, bundle: Bundle, info: StreamInfo,
                 timings: StageTimes | None = None) -> ModalityRunner:
    """The runner for one opened source, with its encoder's backend loaded; stage times go to ``timings``."""
    runner_cls = RUNNERS[modality]
    name = runner_cls.encoder_name(bundle, config, info)
    spec = bundle.encoder(name)
    if spec.modality != modality:
        raise ConfigError(f"encoder {name!r} is a {spec.modality} encoder, not {modality}")
    backend_name = resolve_backend_name(config.backend.name)
    precision = resolve_precision(name, spec, config.precision, backend_name)
    options = dataclasses.replace(config.backend, name=backend_name)
    ref = dataclasses.replace(bundle.model_ref(name, precision), dim_ranges=encoder_feeds(name, spec, config))
    backend = create_backend(ref, options).load()
    log.info("%s: encoder %s (%s) on %s", modality, name, precision, backend.name)
    try:
        return runner_cls.from_config(name, spec, backend, config, info, timings, bundle)
    except BaseException:
        backend.close()
        raise


def build_fusion(config: RunConfig, bundle: Bundle, encoders: list[str]) -> tuple[FusionRule, dict[str, float],
                                                                                  EmaSmoother]:
    """The fusion rule, per-encoder weights and smoother: the bundle's, overridden by ``config.fusion``."""
    spec = bundle.manifest.fusion
    rule_name = config.fusion.rule or spec.rule
    weights: Mapping[str, float] = config.fusion.weights or spec.weights
    unknown = sorted(set(config.fusion.weights) - set(bundle.manifest.encoders))
    if unknown:
        raise ConfigError(f"fusion.weights names {unknown[0]!r}, which is not an encoder of bundle "
                          f"{bundle.manifest.name} ({', '.join(bundle.manifest.encoders)})")
    if not weights:
        weights = {name: 1.0 for name in encoders}  # a bundle without weights: every encoder counts equally
    resolved = {name: float(weights.get(name, 0.0)) for name in encoders}
    if resolved and not any(w > 0 for w in resolved.values()):
        raise ConfigError(f"fusion weights give every encoder of this run ({', '.join(encoders)}) weight 0, so no "
                          "decision could use any evidence; expected at least one weight > 0")
    head = config.fusion.head
    if head is not None and rule_name != LearnedHead.name:
        raise ConfigError(f"fusion.head {head!r} is run by the fusion rule {LearnedHead.name!r}, but the rule is "
                          f"{rule_name!r}; drop fusion.head or set fusion.rule = {LearnedHead.name!r}")
    rule = create_rule(rule_name, bundle=bundle, precision=config.precision, backend_options=config.backend,
                       head=head, **config.fusion.rule_options(rule_name))
    half_life = spec.smoothing_half_life_s if config.fusion.half_life_s is None else config.fusion.half_life_s
    return rule, resolved, EmaSmoother(half_life)


def live_sources(config: RunConfig) -> dict[Modality, Source]:
    """Unopened sensor sources for the enabled modalities, each of the kind its configuration names."""
    return {m: create_source(m, *config.modality(m).source) for m in config.enabled}
