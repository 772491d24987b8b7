"""The outputs of a run: their ``[outputs]`` options, and the sinks they ask for.

:data:`SINKS` maps each output name (a field of :class:`OutputsConfig`, the
key under ``[outputs]``) to its sink class and a predicate saying whether the
configuration enables it. Adding an output is its module (the sink and its
options dataclass), one field of :class:`OutputsConfig` and one entry in
:data:`SINKS`. Building a sink imports nothing optional: aiohttp,
prometheus_client and pylsl are loaded by the sinks' ``open``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_mer.sinks.base import DeviceInfo, Sink
from edge_mer.sinks.http import HttpConfig, HttpSink
from edge_mer.sinks.jsonl import JsonlSink
from edge_mer.sinks.lsl import LslConfig, LslSink
from edge_mer.sinks.mqtt import MqttConfig, MqttSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputsConfig:
    """Where decisions go: ``jsonl`` is "-" (stdout), a file path, or "" (off)."""

    jsonl: str = "-"
    http: HttpConfig = field(default_factory=HttpConfig)
    lsl: LslConfig = field(default_factory=LslConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)


@dataclass(frozen=True)
class SinkEntry:
    """How to build one output: its class, whether it is enabled, and its constructor argument."""

    cls: type[Sink]
    enabled: Callable[[Any], bool]
    device: bool = False  # the constructor also takes the run's DeviceInfo


def _jsonl_enabled(target: str) -> bool:
    return target != ""


def _flag_enabled(config: Any) -> bool:
    return bool(config.enabled)


def _url_enabled(config: Any) -> bool:
    return bool(config.url)


#: Output name (an :class:`OutputsConfig` field) -> entry. Sinks are built in this order.
SINKS: dict[str, SinkEntry] = {
    "jsonl": SinkEntry(JsonlSink, _jsonl_enabled),
    "http": SinkEntry(HttpSink, _flag_enabled),
    "lsl": SinkEntry(LslSink, _flag_enabled),
    "mqtt": SinkEntry(MqttSink, _url_enabled, device=True),
}


def build_sinks(outputs: OutputsConfig, device: DeviceInfo | None = None) -> list[Sink]:
    """The configured sinks, not yet open: jsonl when its target is non-empty, http and lsl when enabled,
    mqtt when it has a url (given ``device``, this host's name by default)."""
    sinks: list[Sink] = []
    for name, entry in SINKS.items():
        config = getattr(outputs, name)
        if entry.enabled(config):
            args = (config, device or DeviceInfo.local()) if entry.device else (config,)
            sinks.append(entry.cls(*args))  # type: ignore[call-arg]
            log.debug("output %s enabled", name)
    return sinks
