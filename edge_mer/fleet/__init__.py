"""Watching a fleet of edge-mer devices over MQTT (``edge-mer fleet watch``).

:mod:`~edge_mer.fleet.state` keeps per-device state from the messages (pure),
:mod:`~edge_mer.fleet.table` renders it, :mod:`~edge_mer.fleet.metrics`
serves it to Prometheus and :mod:`~edge_mer.fleet.watch` runs the MQTT client.
"""
