"""Per-device Prometheus metrics of ``edge-mer fleet watch --metrics-port N``, served on 127.0.0.1.

Read from the fleet state at each scrape (a collector, no bookkeeping of its
own), in a registry of their own. Every metric has a ``device`` label:
``edge_mer_fleet_online`` (1 while the status says online),
``edge_mer_fleet_healthy`` (1 while the health status is ``ok``),
``edge_mer_fleet_decisions_total``, ``edge_mer_fleet_seq_gaps`` (missing
sequence numbers), ``edge_mer_fleet_duplicates_total``,
``edge_mer_fleet_reconnects_total``, ``edge_mer_fleet_renumbered_total``, ``edge_mer_fleet_decision_rate``
(per second), ``edge_mer_fleet_lag_seconds``, ``edge_mer_fleet_valence``,
``edge_mer_fleet_arousal`` and ``edge_mer_fleet_messages_total{kind}``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from edge_mer.errors import ConfigError

log = logging.getLogger(__name__)

#: metric (without prefix), row key, help, counter?
_SERIES: tuple[tuple[str, str, str, bool], ...] = (
    ("decisions", "decisions", "Distinct decisions received.", True),
    ("seq_gaps", "gaps", "Sequence numbers missing.", False),
    ("duplicates", "duplicates", "Duplicate decisions dropped.", True),
    ("reconnects", "reconnects", "Times the device's status went online again after offline.", True),
    ("renumbered", "renumbered", "Times the device's seq numbering started again.", True),
    ("decision_rate", "rate", "Decisions per second over the rate window.", False),
    ("lag_seconds", "lag_s", "Seconds behind the device's latest decision.", False),
    ("valence", "valence", "Latest valence.", False),
    ("arousal", "arousal", "Latest arousal.", False),
)


class FleetCollector:
    """A prometheus_client collector over ``rows()`` (a callable returning :meth:`Fleet.rows` rows)."""

    def __init__(self, rows: Callable[[], list[dict[str, Any]]]) -> None:
        self._rows = rows

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rows = self._rows()
        online = GaugeMetricFamily("edge_mer_fleet_online", "1 while the device's status is online.",
                                   labels=["device"])
        healthy = GaugeMetricFamily("edge_mer_fleet_healthy", "1 while the device's health status is ok.",
                                    labels=["device"])
        messages = CounterMetricFamily("edge_mer_fleet_messages", "MQTT messages received.",
                                       labels=["device", "kind"])
        for row in rows:
            online.add_metric([row["device"]], 1.0 if row["state"] == "online" else 0.0)
            healthy.add_metric([row["device"]], 1.0 if row["health"] == "ok" else 0.0)
            for kind, count in row["messages"].items():
                messages.add_metric([row["device"], kind], float(count))
        yield from (online, healthy, messages)
        for name, key, text, counter in _SERIES:
            family = (CounterMetricFamily if counter else GaugeMetricFamily)(
                f"edge_mer_fleet_{name}", text, labels=["device"])
            for row in rows:
                if row[key] is not None:
                    family.add_metric([row["device"]], float(row[key]))
            yield family


def serve_metrics(port: int, rows: Callable[[], list[dict[str, Any]]]) -> Callable[[], None]:
    """Serve the fleet metrics on 127.0.0.1:``port``; returns the function that stops serving."""
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    registry.register(FleetCollector(rows))
    try:
        server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: "
                          f"{exc.strerror or exc}") from None
    log.info("fleet metrics at http://127.0.0.1:%d/metrics", port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
