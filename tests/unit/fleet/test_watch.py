"""The fleet watcher's pure parts: per-device state from messages, topics, options, URLs and the table."""
from __future__ import annotations

import pytest

from edge_mer.errors import ConfigError
from edge_mer.fleet.state import Fleet
from edge_mer.fleet.table import render_summary, render_table
from edge_mer.fleet.watch import WatchOptions, split_topic
from edge_mer.sinks.mqtt_url import MqttUrl, parse_mqtt_url


def _decision(seq: int, **extra: object) -> dict[str, object]:
    return {"t": seq * 0.1, "label": "happy", "probs": {"happy": 0.9, "neutral": 0.1}, "valence": 0.5,
            "arousal": -0.25, "modalities": {}, "device_id": "cam-1", "seq": seq, **extra}


def test_gaps_duplicates_and_late_arrivals_are_counted_by_seq() -> None:
    fleet = Fleet()
    for seq in (1, 2, 2, 5, 3, 3, 6):  # 2 and 3 redelivered; 3 arrives late; 4 never
        fleet.observe("cam-1", "decision", _decision(seq), now=1.0)
    dev = fleet.devices["cam-1"]
    assert (dev.decisions, dev.duplicates, dev.gaps) == (5, 2, 1)
    assert dev.missing == {4}
    assert (dev.label, dev.valence, dev.arousal, dev.state) == ("happy", 0.5, -0.25, "online")


def test_a_reconnect_keeps_the_numbering_so_redeliveries_stay_duplicates() -> None:
    fleet = Fleet()
    fleet.observe("d", "status", {"state": "online", "bundle": "b1"}, now=0.0)
    for seq in (10, 11):
        fleet.observe("d", "decision", _decision(seq), now=0.0)
    fleet.observe("d", "status", {"state": "offline"}, now=1.0)  # the last will: the link broke
    fleet.observe("d", "status", {"state": "online"}, now=2.0)
    assert not fleet.observe("d", "decision", _decision(11), now=2.0)  # in flight when it broke: sent again
    assert fleet.observe("d", "decision", _decision(12), now=2.0)
    dev = fleet.devices["d"]
    assert (dev.reconnects, dev.duplicates, dev.gaps, dev.decisions, dev.renumbered) == (1, 1, 0, 3, 0)


def test_a_far_jump_back_is_a_new_numbering() -> None:
    fleet = Fleet()
    for seq in (5000, 5001, 1, 2, 2):
        fleet.observe("d", "decision", _decision(seq), now=0.0)
    dev = fleet.devices["d"]
    assert (dev.renumbered, dev.decisions, dev.duplicates, dev.gaps, dev.max_seq) == (1, 4, 1, 0, 2)


def test_rate_is_over_the_window_and_lag_prefers_wall_time() -> None:
    fleet = Fleet(window_s=2.0)
    for i in range(40):  # 10 per second for 4 s
        fleet.observe("d", "decision", _decision(i), now=i / 10)
    dev = fleet.devices["d"]
    assert dev.rate(now=3.9, window_s=2.0) == pytest.approx(10.0, abs=0.6)
    assert dev.lag(now=4.4, wall_now=100.0) == pytest.approx(0.5)
    fleet.observe("d", "decision", _decision(40, wall_time=99.0), now=4.0)
    assert dev.lag(now=4.4, wall_now=100.0) == pytest.approx(1.0)


def test_health_status_and_unreadable_messages() -> None:
    fleet = Fleet()
    fleet.observe("d", "health", {"status": "degraded", "sources": {}}, now=0.0)
    assert not fleet.observe("d", "decision", "not json", now=0.0)
    (row,) = fleet.rows(now=1.0, wall_now=1.0)
    assert (row["health"], row["bad_messages"], row["decisions"], row["state"]) == ("degraded", 1, 0, "unknown")
    assert row["messages"] == {"decision": 1, "status": 0, "health": 1}


def test_table_and_summary_show_every_device() -> None:
    fleet = Fleet()
    fleet.observe("a", "status", {"state": "offline"}, now=0.0)
    fleet.observe("b", "decision", _decision(1), now=0.0)
    fleet.observe("b", "decision", _decision(3), now=0.0)
    rows = fleet.rows(now=1.0, wall_now=1.0)
    lines = render_table(rows).splitlines()
    assert lines[0].split() == ["DEVICE", "STATE", "HEALTH", "LABEL", "VAL", "ARO", "DEC/S", "LAG_S",
                                "DECISIONS", "GAPS", "DUPS", "RECONN"]
    assert lines[1].split()[:4] == ["a", "offline", "-", "-"]
    assert lines[2].split() == ["b", "online", "-", "happy", "+0.50", "-0.25", "2.0", "1.00", "2", "1", "0", "0"]
    summary = render_summary(rows, url="mqtt://h:1883", prefix="edge-mer", elapsed_s=1.0, messages=3)
    assert summary.startswith("fleet summary: 2 device(s), 1 online, 3 message(s)")
    assert "1 missing by seq (gaps), 0 duplicate(s) removed, 0 renumbering(s)" in summary.splitlines()[-1]
    assert "(no devices yet)" in render_table([])


def test_topics_outside_the_contract_are_ignored() -> None:
    assert split_topic("edge-mer", "edge-mer/cam-1/decision") == ("cam-1", "decision")
    assert split_topic("site/a", "site/a/cam-1/health") == ("cam-1", "health")
    for topic in ("edge-mer/cam-1/other", "edge-mer/decision", "other/cam-1/status", "edge-mer/a/b/status"):
        assert split_topic("edge-mer", topic) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("mqtt://broker", MqttUrl("mqtt", "broker", 1883, False)),
    ("mqtts://10.0.0.2", MqttUrl("mqtts", "10.0.0.2", 8883, True)),
    ("MQTT://[::1]:1884/", MqttUrl("mqtt", "::1", 1884, False)),
])
def test_mqtt_urls(text: str, expected: MqttUrl) -> None:
    assert parse_mqtt_url(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("broker:1883", "expected mqtt://"), ("http://broker", "unknown scheme"),
    ("mqtt://broker:0", "port"), ("mqtt://broker:99999", "port"), ("mqtt://broker:x", "port"),
    ("mqtt://u:secret@broker", "no credentials"), ("mqtt://broker/topic", "no path"), ("mqtt://:1883", "no host"),
    ("mqtt://bro ker", "not a host"),
])
def test_bad_mqtt_urls_are_one_line_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_mqtt_url(text)
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"mqtt_prefix": "a/+"}, "--mqtt-prefix"), ({"mqtt_prefix": "/a"}, "--mqtt-prefix"),
    ({"interval_s": 0.0}, "--interval"), ({"duration_s": -1.0}, "--duration"),
    ({"metrics_port": 70000}, "--metrics-port"), ({"password": "p"}, "--password needs --username"),
    ({"ca_file": "/etc/hostname"}, "--ca-file needs an mqtts:// URL"),
])
def test_options_are_validated(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WatchOptions(mqtt="mqtt://127.0.0.1", **fields)


def test_odd_json_values_are_ignored_not_fatal() -> None:
    fleet = Fleet()
    assert fleet.observe("d", "decision", {"seq": True, "valence": 10**400, "arousal": float("nan"), "label": 3},
                         now=0.0)
    dev = fleet.devices["d"]
    assert (dev.valence, dev.arousal, dev.label, dev.max_seq) == (None, None, None, None)
