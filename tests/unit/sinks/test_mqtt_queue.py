"""The MQTT output's on-disk queue and options: order, bound, persistence of seq, one-line config errors."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_mer.config import from_dict
from edge_mer.errors import ConfigError
from edge_mer.pipeline.config import RunConfig
from edge_mer.sinks.mqtt import MqttConfig, default_queue_path, parse_url
from edge_mer.sinks.mqtt_queue import MessageQueue


def _payload(seq: int) -> str:
    return json.dumps({"seq": seq})


def test_queue_numbers_in_order_and_deletes_acknowledged(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path / "q.sqlite", 100)
    seqs = [queue.push(_payload) for _ in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    assert [s for s, _ in queue.peek(-1, 3)] == [0, 1, 2]
    assert [s for s, _ in queue.peek(2, 10)] == [3, 4]
    assert json.loads(queue.peek(3, 1)[0][1]) == {"seq": 4}
    queue.delete(0)
    queue.delete(0)  # twice (a late ack of a row dropped meanwhile) is harmless
    stats = queue.stats()
    assert (stats.size, stats.dropped, stats.next_seq) == (4, 0, 5)
    assert stats.oldest_age_s is not None and 0 <= stats.oldest_age_s < 5
    queue.close()
    queue.close()


def test_queue_bound_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path / "q.sqlite", 3)
    for _ in range(7):
        queue.push(_payload)
    assert [s for s, _ in queue.peek(-1, 10)] == [4, 5, 6]
    stats = queue.stats()
    assert (stats.size, stats.dropped) == (3, 4)


def test_seq_dropped_and_unsent_rows_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "q.sqlite"  # the directory is created
    queue = MessageQueue(path, 2)
    for _ in range(3):
        queue.push(_payload)
    queue.delete(1)
    queue.close()
    again = MessageQueue(path, 2)
    assert [s for s, _ in again.peek(-1, 10)] == [2]
    assert again.push(_payload) == 3
    stats = again.stats()
    assert (stats.size, stats.dropped, stats.next_seq) == (2, 1, 4)
    assert again.stats().oldest_age_s is not None


def test_empty_queue_has_no_oldest_age(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path / "q.sqlite", 5)
    assert queue.stats().oldest_age_s is None


def test_push_is_fast(tmp_path: Path) -> None:
    """A tick only appends to SQLite (WAL, no fsync per commit): far under a millisecond per decision typically."""
    queue = MessageQueue(tmp_path / "q.sqlite", 10_000)
    begun = time.perf_counter()
    for _ in range(500):
        queue.push(_payload)
    per_push = (time.perf_counter() - begun) / 500
    assert per_push < 0.01, per_push


def test_unwritable_queue_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="queue_path"):
        MessageQueue(blocker / "q.sqlite", 5)


@pytest.mark.parametrize("url, expected", [
    ("mqtt://broker", (False, "broker", 1883)),
    ("mqtts://10.0.0.2", (True, "10.0.0.2", 8883)),
    ("mqtt://127.0.0.1:1884", (False, "127.0.0.1", 1884)),
    ("mqtts://[::1]:9000/", (True, "::1", 9000)),
])
def test_parse_url(url: str, expected: tuple[bool, str, int]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url, message", [
    ("http://broker", "expected mqtt://host[:port]"),
    ("broker:1883", "expected mqtt://host[:port]"),
    ("mqtt://", "has no host"),
    ("mqtt://host:99999", "not a valid URL"),
    ("mqtt://host:port", "not a valid URL"),
    ("mqtt://user:pw@host", "credentials in outputs.mqtt.username"),
    ("mqtt://host/topic", "no path"),
])
def test_bad_url_is_one_line_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match="outputs.mqtt.url") as err:
        MqttConfig(url=url)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fields, message", [
    ({"topic_prefix": "a/#"}, "topic_prefix"),
    ({"topic_prefix": "a//b"}, "topic_prefix"),
    ({"qos": 3}, "qos"),
    ({"password": "x"}, "password needs a username"),
    ({"url": "mqtts://h", "cert_file": "c.pem"}, "cert_file and key_file"),
    ({"url": "mqtt://h", "ca_file": "ca.pem"}, "need an mqtts://"),
    ({"keepalive_s": 1}, "keepalive_s"),
    ({"queue_max": 0}, "queue_max"),
    ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "reconnect_min_s"),
])
def test_bad_options_are_config_errors(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MqttConfig(**fields)


def test_toml_keys_and_device_id() -> None:
    config = from_dict(RunConfig, {"device_id": "kiosk-3", "outputs": {"mqtt": {
        "url": "mqtts://broker:8883", "topic_prefix": "site/a", "username": "u", "password": "s3cret",
        "ca_file": "/ca.pem", "qos": 0}}})
    assert config.device_id == "kiosk-3" and config.outputs.mqtt.topic_prefix == "site/a"
    assert config.outputs.mqtt.password == "s3cret" and "s3cret" not in repr(config)
    assert RunConfig().device_id == "" and RunConfig().outputs.mqtt.url == ""
    with pytest.raises(ConfigError, match="device_id"):
        RunConfig(device_id="a/b")
    with pytest.raises(ConfigError, match="outputs.mqtt.foo"):
        from_dict(RunConfig, {"outputs": {"mqtt": {"foo": 1}}})


def test_default_queue_path_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_queue_path("dev1") == tmp_path / "edge-mer" / "mqtt-dev1.sqlite"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_queue_path("dev1") == Path.home() / ".local" / "state" / "edge-mer" / "mqtt-dev1.sqlite"


def test_queue_figures_reach_healthz_and_metrics() -> None:
    import prometheus_client

    from edge_mer.pipeline.health import SourceState, health_status
    from edge_mer.sinks.http_metrics import Metrics

    figures = {"connected": False, "queued": 12, "oldest_age_s": 6.5, "dropped": 2, "sent": 30, "next_seq": 44}
    status = health_status({"eeg": SourceState()}, {"eeg": 2.0}, {}, 10**9, 0, 44, {"mqtt": figures})
    assert status["outputs"] == {"mqtt": figures} and status["status"] == "ok"  # figures do not degrade it
    assert "outputs" not in health_status({"eeg": SourceState()}, {"eeg": 2.0}, {}, 10**9, 0, 44)
    metrics = Metrics(prometheus_client)
    metrics.observe_health(status)
    text = metrics.exposition().decode()
    for line in ("edge_mer_mqtt_connected 0.0", "edge_mer_mqtt_queue_messages 12.0",
                 "edge_mer_mqtt_queue_oldest_age_seconds 6.5", "edge_mer_mqtt_dropped_messages 2.0",
                 "edge_mer_mqtt_sent_messages 30.0"):
        assert line in text.splitlines(), line
    metrics.observe_health({**status, "outputs": {"mqtt": {**figures, "queued": 0, "oldest_age_s": None}}})
    assert "edge_mer_mqtt_queue_oldest_age_seconds NaN" in metrics.exposition().decode().splitlines()
