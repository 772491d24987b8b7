"""MQTT broker addresses: ``mqtt://HOST[:PORT]`` (plain, port 1883) or ``mqtts://HOST[:PORT]`` (TLS, 8883).

Shared by the MQTT output and ``edge-mer fleet watch``, so both accept and
reject the same URLs with the same one-line :class:`~edge_mer.errors.ConfigError`.
Credentials never go in the URL (they would show in ``ps`` and in logs): use
the username/password settings instead. :class:`MqttError` is a broker that
cannot be reached or refuses the connection.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from edge_mer.errors import ConfigError, EdgeMerError

#: scheme -> (default port, TLS)
SCHEMES: dict[str, tuple[int, bool]] = {"mqtt": (1883, False), "mqtts": (8883, True)}


class MqttError(EdgeMerError):
    """An MQTT broker cannot be reached, refuses the connection or the credentials."""


@dataclass(frozen=True)
class MqttUrl:
    """A parsed broker address; ``host`` is bare (no brackets around an IPv6 address)."""

    scheme: str
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _split(text: str) -> SplitResult:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("MQTT URL: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got an empty value")
    if "://" not in text:
        raise ConfigError(f"MQTT URL {text!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        return urlsplit(text.strip())
    except ValueError as exc:  # an unbalanced [ in an IPv6 host
        raise ConfigError(f"MQTT URL {text!r}: {exc}") from None


def _port(parts: SplitResult, text: str, default: int) -> int:
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"MQTT URL {text!r}: the port must be a number from 1 to 65535") from None
    if port is None:
        return default
    if not 1 <= port <= 65535:
        raise ConfigError(f"MQTT URL {text!r}: the port must be a number from 1 to 65535")
    return port


def _check_host(host: str, text: str) -> None:
    if not host:
        raise ConfigError(f"MQTT URL {text!r}: no host (expected mqtt://HOST[:PORT])")
    if ":" in host:  # only a bracketed IPv6 address gets here with a colon
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"MQTT URL {text!r}: {host!r} is not an IPv6 address") from None
    elif not all(c.isalnum() or c in "-._" for c in host):
        raise ConfigError(f"MQTT URL {text!r}: {host!r} is not a host name or address")


def parse_mqtt_url(text: str) -> MqttUrl:
    """``text`` as an :class:`MqttUrl`; anything else (scheme, port, credentials, a path) is a ConfigError."""
    parts = _split(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"MQTT URL {text!r}: unknown scheme {parts.scheme!r} (expected mqtt:// or mqtts://)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"MQTT URL {text.split('@')[-1]!r}: put no credentials in the URL "
                          f"(use the username and password settings)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"MQTT URL {text!r}: expected no path, query or fragment after HOST[:PORT]")
    default_port, tls = SCHEMES[scheme]
    host = parts.hostname or ""
    _check_host(host, text)
    return MqttUrl(scheme, host, _port(parts, text, default_port), tls)
