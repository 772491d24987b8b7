"""A fleet into one broker: N daemons publish over MQTT through a broker outage; is every decision delivered once?

    python benchmarks/mqtt_fleet.py [--daemons 8] [--duration 90] [--outage-start 20] [--outage 30]
                                    [--rate-hz 10] [--max-queued 0] [--json OUT]

Each daemon runs live on BrainFlow's synthetic EEG board (face and speech off, so eight of them fit
on two cores; the MQTT path does not depend on the modality) in real time, writes its decisions to
JSON lines (the count it made) and publishes them to a local mosquitto broker (Debian package,
started here with persistence, so the subscriber's session survives the restart). The broker is
stopped ``--outage-start`` seconds in, for ``--outage`` seconds, then started again. A paho
subscriber (QoS 1, persistent session) counts what arrives per device; QoS 1 may redeliver, so
duplicates are removed by ``seq``. Delivered exactly once in order means: the unique ``seq`` values
of a device are one contiguous run, as many as the decisions it wrote, and they arrive in increasing
order once duplicates are dropped.

A second phase runs the same daemons for the same time without ``--mqtt``; the CPU time each daemon
used (``os.wait4``) in both phases gives the added CPU per daemon for MQTT, as a share of one core.
Both phases run in this one invocation, so the ratio is within one run on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test broker helper: one place that knows mosquitto

from mosquitto_broker import Broker  # noqa: E402

CONFIG = "face.enabled = false\nspeech.enabled = false\n"  # a config file: live synthetic EEG, no demo replay


class Subscriber:
    """Collects ``seq`` per device from ``edge-mer/+/decision`` with a persistent QoS 1 session."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.seqs: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-bench-subscriber",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self.client.on_connect = self._subscribe
        self.client.on_message = self._message
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _subscribe(self, client: Any, *_: Any) -> None:
        client.subscribe("edge-mer/+/decision", qos=1)

    def _message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self.seqs.setdefault(body["device_id"], []).append(int(body["seq"]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _start(n: int, folder: Path, duration: float, rate_hz: float, url: str | None) -> list[subprocess.Popen]:
    config = folder / "run.toml"
    config.write_text(CONFIG)
    procs = []
    for i in range(n):
        device = f"bench-{i:02d}"
        state = folder / device
        state.mkdir(exist_ok=True)
        args = [sys.executable, "-m", "edge_mer.cli.main", "run", "--config", str(config), "--rate-hz", str(rate_hz),
                "--duration-s", str(duration), "--jsonl", str(state / f"decisions-{'mqtt' if url else 'plain'}.jsonl"),
                "--device-id", device]
        if url:
            args += ["--mqtt", url]
        env = dict(os.environ, XDG_STATE_HOME=str(state))
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
    return procs


def _wait_cpu(procs: list[subprocess.Popen]) -> list[float]:
    """CPU seconds (user + system) of each daemon, from its rusage when it exits."""
    cpu = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"daemon exited {proc.returncode}: {proc.stderr.read().decode(errors='replace')[-800:]}")
        cpu.append(usage.ru_utime + usage.ru_stime)
    return cpu


def _ranges(values: list[int]) -> list[list[int]]:
    """[[first, last], ...] runs of consecutive integers."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return runs


def _breaks(got: list[int]) -> list[list[int]]:
    """[previous, next] wherever the arrival order does not go up by one (at most 20)."""
    return [[a, b] for a, b in zip(got, got[1:]) if b != a + 1][:20]


def _verdict(seqs: dict[str, list[int]], folder: Path, n: int) -> dict[str, Any]:
    per_device = {}
    for i in range(n):
        device = f"bench-{i:02d}"
        made = sum(1 for _ in open(folder / device / "decisions-mqtt.jsonl"))
        got = seqs.get(device, [])
        unique, in_order, last = [], True, None
        for s in got:
            if last is not None and s <= last:
                continue  # a QoS 1 redelivery (or an old one): dropped by seq
            if last is not None and s != last + 1:
                in_order = False
            unique.append(s)
            last = s
        contiguous = bool(unique) and unique == list(range(unique[0], unique[0] + len(unique)))
        seen = set(got)
        missing = [s for s in range(made) if s not in seen]
        per_device[device] = {"made": made, "received": len(got), "delivered_unique": len(unique),
                              "duplicates": len(got) - len(set(got)), "in_order": in_order and contiguous,
                              "exactly_once": contiguous and len(unique) == made,
                              "missing_ranges": _ranges(missing), "arrival_order_breaks": _breaks(got)}
    return per_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=8)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--outage-start", type=float, default=20.0)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--max-queued", type=int, default=0,
                        help="the broker's max_queued_messages (0: unbounded; mosquitto's default is 1000)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-mer-fleet-") as tmp:
        folder = Path(tmp)
        # A fleet's backlog after an outage (daemons x outage x rate) reaches one subscriber in a burst;
        # mosquitto's default per-client queue (1000 messages) would drop the excess, so it is unbounded here.
        broker = Broker(folder, persistence=True, max_queued=args.max_queued).start()
        subscriber = Subscriber(broker.port)
        procs = _start(args.daemons, folder, args.duration, args.rate_hz, broker.url)
        time.sleep(args.outage_start)
        broker.stop()
        time.sleep(args.outage)
        broker.start()
        cpu_mqtt = _wait_cpu(procs)
        time.sleep(5.0)  # the last acknowledgements
        subscriber.close()
        broker.stop()
        devices = _verdict(subscriber.seqs, folder, args.daemons)
        cpu_plain = _wait_cpu(_start(args.daemons, folder, args.duration, args.rate_hz, None))
    made = sum(d["made"] for d in devices.values())
    unique = sum(d["delivered_unique"] for d in devices.values())
    added = [(m - p) / args.duration for m, p in zip(cpu_mqtt, cpu_plain)]
    result = {"daemons": args.daemons, "broker_max_queued_messages": args.max_queued, "duration_s": args.duration, "outage_s": args.outage,
              "rate_hz": args.rate_hz, "decisions_made": made, "delivered_unique": unique,
              "duplicates": sum(d["duplicates"] for d in devices.values()),
              "all_exactly_once_in_order": all(d["exactly_once"] and d["in_order"] for d in devices.values()),
              "cpu_core_share_with_mqtt": [round(c / args.duration, 4) for c in cpu_mqtt],
              "cpu_core_share_without": [round(c / args.duration, 4) for c in cpu_plain],
              "added_cpu_core_share_mean": round(sum(added) / len(added), 4),
              "added_cpu_core_share_max": round(max(added), 4), "devices": devices}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"mqtt fleet: {args.daemons} daemons, {args.outage:g} s broker outage: delivered {unique}/{made} "
          f"unique decisions ({result['duplicates']} duplicates dropped), exactly once in seq order: "
          f"{'yes' if result['all_exactly_once_in_order'] else 'NO'}; added CPU per daemon for MQTT "
          f"{100 * result['added_cpu_core_share_mean']:.2f}% of a core (max {100 * result['added_cpu_core_share_max']:.2f}%)")


if __name__ == "__main__":
    main()
