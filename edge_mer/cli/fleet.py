"""Watch a fleet of edge-mer devices over MQTT: live per-device table, JSON lines log, Prometheus metrics.

``edge-mer fleet watch --mqtt mqtt://broker:1883`` subscribes to what each
device's MQTT output publishes under ``<prefix>/<device_id>/`` (decision,
status, health). On a terminal the table is redrawn every --interval seconds;
otherwise only the final summary is printed (at --duration, or at Ctrl-C /
SIGTERM, which end the watch normally with exit 0). The password comes from
--password or, better (it stays out of ``ps``), from $EDGE_MER_MQTT_PASSWORD.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading

from edge_mer.cli.flags import Flag, add_flags, config_from_flags
from edge_mer.fleet.watch import PASSWORD_ENV, WatchOptions, watch

log = logging.getLogger(__name__)

WATCH_FLAGS: tuple[Flag, ...] = (
    ("--mqtt", "mqtt", str, "broker URL: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (TLS, 8883)"),
    ("--mqtt-prefix", "mqtt_prefix", str, "topic prefix the devices publish under (default edge-mer)"),
    ("--username", "username", str, "MQTT username"),
    ("--password", "password", str, f"MQTT password (default: ${PASSWORD_ENV})"),
    ("--ca-file", "ca_file", str, "CA certificate file to trust for mqtts:// (default: the system's)"),
    ("--interval", "interval_s", float, "seconds between table refreshes on a terminal (default 1)"),
    ("--duration", "duration_s", float, "stop after this many seconds and print the summary (0 = until Ctrl-C)"),
    ("--window", "window_s", float, "seconds over which decisions/s is computed (default 10)"),
    ("--connect-timeout", "connect_timeout_s", float, "seconds to wait for the broker at start (default 10)"),
    ("--jsonl", "jsonl", str, "append every message received to this file, one JSON object per line"),
    ("--metrics-port", "metrics_port", int, "serve per-device Prometheus metrics on 127.0.0.1:PORT/metrics"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="fleet_action", metavar="ACTION", required=True)
    child = actions.add_parser("watch", help="subscribe to the fleet's topics and show each device live",
                               description="Subscribe to the fleet's topics and show each device live.")
    add_flags(child, WATCH_FLAGS)


def _options(args: argparse.Namespace) -> WatchOptions:
    options = config_from_flags(WatchOptions, args, WATCH_FLAGS)
    env_password = os.environ.get(PASSWORD_ENV)
    if options.password is None and env_password and options.username is not None:
        options = dataclasses.replace(options, password=env_password)
    return options


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C / SIGTERM end the watch normally: disconnect, then print the summary.
        previous = {sig: signal.signal(sig, lambda _s, _f: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watch(options, stop)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 0
