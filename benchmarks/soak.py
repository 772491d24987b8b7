"""Soak: the daemon replaying a long session in real time with HTTP and WebSocket clients attached.

Builds (once, into --session, not committable) a session of --minutes of
CK+48 faces at 30 fps 640x480, EMO-DB speech at 16 kHz and GU EEG at 250 Hz
from ../shared, then runs ``edge-mer run --replay SESSION --http`` as a child
process for that long while

* ``--ws-clients`` WebSocket clients count every decision pushed to them, and
* one HTTP client polls ``/state``, ``/healthz`` and ``/metrics`` at ``--poll-hz``,

and samples the child's resident memory, threads and open file descriptors
every ``--sample-s`` seconds from ``/proc``. All traffic goes to 127.0.0.1;
every loop ends by its deadline. Writes a JSON report and, with
``--append-results``, a row to benchmarks/RESULTS.md.

    python benchmarks/soak.py --minutes 60 --json soak.json --append-results benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEGMENT_S = 15.0  # a GU trial is 15 s: the longest segment build_session can fill
LABELS = ("happy", "sad", "fear")
WARMUP_S = 60.0  # memory is compared from this point on (models loaded, buffers full)


def build_long_session(shared: Path, out: Path, minutes: float) -> Path:
    """A session of ``minutes`` at device rates, built once (reused when ``out`` holds one)."""
    from edge_mer_calibration.sessions import SessionRates, build_session

    if (out / "session.json").is_file():
        return out
    segments = max(1, int(round(minutes * 60.0 / SEGMENT_S)))
    labels = [LABELS[i % len(LABELS)] for i in range(segments)]
    rates = SessionRates(fps=30, frame_size=(640, 480), audio_rate=16000, eeg_rate=250)
    return build_session(shared, out, labels, SEGMENT_S, rates=rates)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_sample(pid: int) -> dict[str, float]:
    """RSS (MiB), threads and open file descriptors of ``pid``, and its CPU seconds, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "cpu_s": (int(stat[11]) + int(stat[12])) / ticks}


class Poller(threading.Thread):
    """GETs /state, /healthz and /metrics in turn until ``deadline``; counts answers and errors."""

    def __init__(self, port: int, hz: float, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.period, self.deadline = port, 1.0 / hz, deadline
        self.ok = 0
        self.startup_refused = 0  # connection errors before the daemon first answered (it is loading)
        self.errors: dict[str, int] = {}
        self.decisions = 0  # the daemon's own count, from the last /healthz

    def run(self) -> None:
        paths = ("/state", "/healthz", "/metrics")
        i = 0
        while time.monotonic() < self.deadline:
            path = paths[i % len(paths)]
            i += 1
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                    body = resp.read()
                self.ok += 1
                if path == "/healthz":
                    self.decisions = int(json.loads(body).get("decisions", 0))
            except urllib.error.HTTPError as err:  # 404 before the first decision, 503 while degraded
                self.ok += err.code in (404, 503)
                if err.code not in (404, 503):
                    self.errors[str(err.code)] = self.errors.get(str(err.code), 0) + 1
            except OSError as exc:
                if self.ok == 0:
                    self.startup_refused += 1
                else:
                    self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            time.sleep(self.period)


async def _ws_client(port: int, deadline: float, counts: list[int], index: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws", heartbeat=20) as ws:
                    while time.monotonic() < deadline:
                        msg = await ws.receive(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        counts[index] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                await asyncio.sleep(0.5)  # the daemon is still starting, or went away: retry until the deadline


def run_ws_clients(port: int, n: int, deadline: float, counts: list[int]) -> threading.Thread:
    async def main() -> None:
        await asyncio.gather(*(_ws_client(port, deadline, counts, i) for i in range(n)))

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    return thread


def soak(session: Path, minutes: float, rate_hz: float, ws_clients: int, poll_hz: float, sample_s: float,
         bundle: Path | None) -> dict[str, Any]:
    port = free_port()
    command = [str(Path(sys.executable).with_name("edge-mer")), "run", "--replay", str(session), "--http",
               "--http-port", str(port), "--jsonl", "", "--rate-hz", str(rate_hz),
               "--duration-s", str(minutes * 60.0)]
    if bundle is not None:
        command += ["--bundle", str(bundle)]
    started = time.monotonic()
    deadline = started + minutes * 60.0
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    counts = [0] * ws_clients
    poller = Poller(port, poll_hz, deadline)
    poller.start()
    ws_thread = run_ws_clients(port, ws_clients, deadline, counts)
    samples: list[dict[str, float]] = []
    try:
        while time.monotonic() < deadline and child.poll() is None:
            samples.append({"t_s": round(time.monotonic() - started, 1), **proc_sample(child.pid)})
            time.sleep(min(sample_s, max(0.0, deadline - time.monotonic())))
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            _, stderr = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            _, stderr = child.communicate()
    poller.join(timeout=10)
    ws_thread.join(timeout=10)
    return summarize(samples, counts, poller, child.returncode, stderr, minutes, rate_hz)


def summarize(samples: list[dict[str, float]], counts: list[int], poller: Poller, returncode: int | None,
              stderr: str, minutes: float, rate_hz: float) -> dict[str, Any]:
    steady = [s for s in samples if s["t_s"] >= WARMUP_S] or samples
    first, last = steady[0], steady[-1]
    wall = max(1e-9, last["t_s"] - samples[0]["t_s"]) if samples else 1e-9
    expected = int(minutes * 60.0 * rate_hz)
    return {
        "minutes": minutes, "rate_hz": rate_hz, "returncode": returncode,
        "stderr_tail": stderr.strip().splitlines()[-5:],
        "rss_mb": {"after_warmup": round(first["rss_mb"], 1), "end": round(last["rss_mb"], 1),
                   "max": round(max(s["rss_mb"] for s in steady), 1),
                   "growth_pct": round(100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 2)},
        "threads": {"min": min(s["threads"] for s in steady), "max": max(s["threads"] for s in steady)},
        "fds": {"min": min(s["fds"] for s in steady), "max": max(s["fds"] for s in steady)},
        "cpu_percent": round(100.0 * (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / wall, 1) if samples else None,
        "ws_messages": counts, "decisions": poller.decisions, "expected_decisions": expected,
        "http": {"ok": poller.ok, "errors": poller.errors, "refused_while_starting": poller.startup_refused},
        "samples": samples,
    }


def results_row(report: dict[str, Any]) -> str:
    rss, ws = report["rss_mb"], report["ws_messages"]
    return (f"| {time.strftime('%Y-%m-%d')} | {platform.processor() or platform.machine()}, {os.cpu_count()} cores | "
            f"{report['minutes']:g} min at {report['rate_hz']:g} Hz | {rss['after_warmup']} -> {rss['end']} MB "
            f"({rss['growth_pct']:+.2f}%), max {rss['max']} | {report['threads']['min']}-{report['threads']['max']} | "
            f"{report['fds']['min']}-{report['fds']['max']} | {report['cpu_percent']}% | "
            f"{min(ws)}-{max(ws)} of {report['decisions']} | {report['http']['ok']} ok, "
            f"{sum(report['http']['errors'].values())} errors | exit {report['returncode']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--session", type=Path, default=Path("/tmp/edge-mer-soak-session"))
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--ws-clients", type=int, default=5)
    parser.add_argument("--poll-hz", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--append-results", type=Path)
    args = parser.parse_args()
    if not 0.5 <= args.minutes <= 24 * 60:
        parser.error(f"--minutes {args.minutes}: expected 0.5..1440")
    if not (1 <= args.ws_clients <= 100 and 0.1 <= args.poll_hz <= 50 and 1 <= args.sample_s <= 600):
        parser.error("expected --ws-clients 1..100, --poll-hz 0.1..50, --sample-s 1..600")
    session = build_long_session(args.shared, args.session, args.minutes)
    report = soak(session, args.minutes, args.rate_hz, args.ws_clients, args.poll_hz, args.sample_s, args.bundle)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.append_results:
        with args.append_results.open("a", encoding="utf-8") as fh:
            fh.write(results_row(report) + "\n")


if __name__ == "__main__":
    main()
