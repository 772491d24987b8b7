"""The Prometheus metrics of the HTTP sink (:mod:`edge_mer.sinks.http`), served at ``GET /metrics``.

Metric names: ``edge_mer_decisions_total``; ``edge_mer_modality_valid_total``
and ``edge_mer_modality_invalid_total{reason}`` (the result's
:class:`~edge_mer.names.ReasonCode`, so label cardinality stays bounded);
``edge_mer_decision_latency_seconds`` and ``edge_mer_modality_latency_seconds``
histograms (modality results with zero latency did no work and are not
observed); ``edge_mer_probability{label}``, ``edge_mer_valence``,
``edge_mer_arousal`` (latest decision); ``edge_mer_source_state{source,
edge_mer_source_state=...}`` (an enum: 1 for the current state),
``edge_mer_source_chunks``, ``edge_mer_source_last_chunk_age_seconds``,
``edge_mer_healthy``, ``edge_mer_uptime_seconds``, ``edge_mer_ws_clients``,
``edge_mer_ws_dropped_messages_total``;
``edge_mer_http_unauthorized_total``, ``edge_mer_http_bad_requests_total``,
``edge_mer_http_header_timeouts_total``, ``edge_mer_http_refused_total{what}``; with the MQTT
output on, from its /healthz figures: ``edge_mer_mqtt_connected``, ``edge_mer_mqtt_queue_messages``,
``edge_mer_mqtt_queue_oldest_age_seconds`` (NaN when empty), ``edge_mer_mqtt_dropped_messages``
and ``edge_mer_mqtt_sent_messages`` (gauges: counts since the queue was created / the run started).

prometheus_client is passed in (the sink imports it in ``open`` only), never imported here.
"""
from __future__ import annotations

import logging
import math
from types import ModuleType
from typing import Any

from edge_mer.names import SOURCE_STATES
from edge_mer.results import Decision

# The sink's logger name: operators filter the HTTP output's records by it, whichever module logs them.
log = logging.getLogger("edge_mer.sinks.http")

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes


#: /healthz ``outputs.mqtt`` key -> gauge name and help.
_MQTT_GAUGES = (
    ("connected", "edge_mer_mqtt_connected", "1 while the MQTT output is connected to its broker."),
    ("queued", "edge_mer_mqtt_queue_messages", "Decisions queued for the MQTT broker."),
    ("oldest_age_s", "edge_mer_mqtt_queue_oldest_age_seconds", "Age of the oldest queued MQTT decision."),
    ("dropped", "edge_mer_mqtt_dropped_messages", "Queued MQTT decisions dropped at the bound (oldest first)."),
    ("sent", "edge_mer_mqtt_sent_messages", "MQTT decisions acknowledged by the broker in this run."),
)


class Metrics:
    """The Prometheus metrics of one sink, in their own registry.

    A :class:`prometheus_client.CollectorRegistry` owned by the sink, never the
    global registry, so several sinks coexist.
    """

    def __init__(self, prom: ModuleType) -> None:
        self.registry = reg = prom.CollectorRegistry()
        self.decisions = prom.Counter("edge_mer_decisions", "Decisions emitted.", registry=reg)
        self.valid = prom.Counter("edge_mer_modality_valid", "Valid modality results.", ["modality"], registry=reg)
        self.invalid = prom.Counter("edge_mer_modality_invalid", "Invalid modality results by reason.",
                                    ["modality", "reason"], registry=reg)
        self.latency = prom.Histogram("edge_mer_decision_latency_seconds", "Decision latency.",
                                      buckets=LATENCY_BUCKETS_S, registry=reg)
        self.modality_latency = prom.Histogram("edge_mer_modality_latency_seconds", "Per-modality latency.",
                                               ["modality"], buckets=LATENCY_BUCKETS_S, registry=reg)
        self.probability = prom.Gauge("edge_mer_probability", "Latest fused probability per label.", ["label"],
                                      registry=reg)
        self.valence = prom.Gauge("edge_mer_valence", "Latest valence.", registry=reg)
        self.arousal = prom.Gauge("edge_mer_arousal", "Latest arousal.", registry=reg)
        self.source_state = prom.Enum("edge_mer_source_state", "Source state.", ["source"],
                                      states=list(SOURCE_STATES), registry=reg)
        self.source_chunks = prom.Gauge("edge_mer_source_chunks", "Chunks delivered by a source.", ["source"],
                                        registry=reg)
        self.source_age = prom.Gauge("edge_mer_source_last_chunk_age_seconds", "Age of a source's last chunk.",
                                     ["source"], registry=reg)
        self.healthy = prom.Gauge("edge_mer_healthy", "1 when the daemon reports status ok.", registry=reg)
        self.uptime = prom.Gauge("edge_mer_uptime_seconds", "Daemon uptime.", registry=reg)
        self.ws_clients = prom.Gauge("edge_mer_ws_clients", "Connected WebSocket clients.", registry=reg)
        self.ws_dropped = prom.Counter("edge_mer_ws_dropped_messages", "Messages dropped for slow WebSocket clients.",
                                       registry=reg)
        self.unauthorized = prom.Counter("edge_mer_http_unauthorized", "Requests without the right token.",
                                         registry=reg)
        self.bad_requests = prom.Counter("edge_mer_http_bad_requests", "Malformed HTTP requests.", registry=reg)
        self.header_timeouts = prom.Counter("edge_mer_http_header_timeouts",
                                            "Connections closed before sending a complete request head.", registry=reg)
        self.refused = prom.Counter("edge_mer_http_refused", "Connections or WebSocket clients over the limits.",
                                    ["what"], registry=reg)
        self.mqtt = {key: prom.Gauge(name, text, registry=reg) for key, name, text in _MQTT_GAUGES}
        self._generate = prom.generate_latest

    def observe_decision(self, decision: Decision) -> None:
        """Count ``decision`` and its modality results; set the latest-decision gauges."""
        self.decisions.inc()
        self.latency.observe(decision.latency_ms / 1000.0)
        for label, p in decision.probs.items():
            self.probability.labels(label=label).set(p)
        self.valence.set(decision.valence)
        self.arousal.set(decision.arousal)
        for result in decision.modalities:
            if result.valid:
                self.valid.labels(modality=result.modality).inc()
            else:
                code = result.code.value if result.code is not None else "unknown"
                self.invalid.labels(modality=result.modality, reason=code).inc()
            if result.latency_ms > 0:
                self.modality_latency.labels(modality=result.modality).observe(result.latency_ms / 1000.0)

    def observe_health(self, status: dict[str, Any]) -> None:
        """Set the health, uptime and per-source gauges from a daemon health status."""
        self.healthy.set(1.0 if status.get("status") == "ok" else 0.0)
        self.uptime.set(float(status.get("uptime_s", 0.0)))
        for source, info in status.get("sources", {}).items():
            state = info.get("state")
            if state in SOURCE_STATES:
                self.source_state.labels(source=source).state(state)
            else:
                log.warning("health: source %s has unknown state %r (expected one of %s)",
                            source, state, ", ".join(SOURCE_STATES))
            self.source_chunks.labels(source=source).set(float(info.get("chunks", 0)))
            age = info.get("last_chunk_age_s")
            self.source_age.labels(source=source).set(math.nan if age is None else float(age))
        mqtt = status.get("outputs", {}).get("mqtt")
        if mqtt is not None:
            for key, gauge in self.mqtt.items():
                value = mqtt.get(key)
                gauge.set(math.nan if value is None else float(value))

    def exposition(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return self._generate(self.registry)
