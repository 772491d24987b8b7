"""Append the headline figures of an `edge-mer bench --json` result to benchmarks/RESULTS.md.

    edge-mer bench --session S --face-video V --compare --json bench.json
    python benchmarks/bench_row.py bench.json [--results benchmarks/RESULTS.md]

One row per run: host, pipeline (decision latency p50/p99, CPU % of one core,
peak RSS, decisions), face path (fps, found) and, when the run had --compare,
the same figures for the configuration the optimisations replaced.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

TITLE = "## Pipeline and face path (`edge-mer bench`)"
INTRO = """
Each row is one `edge-mer bench --compare` run on an idle machine. *e2e* is the decision latency from
the timestamp of the newest sample the decision examined to the decision handed to every output
(p50 / p99, ms; how old each modality's evidence is, `age.<modality>`, is in the run's JSON); *CPU* is process CPU time
over wall time (100 = one full core); *RSS* the peak resident set during that pipeline run (MB). The pipeline replays the session in real time with decisions at 10 Hz. *Face
path* is detection + crop + face encoder per frame on one pinned core, decoding excluded: frames
per second and the share of frames with a face found. *before* columns are the same run's
measurement of what the optimisations replaced (pipeline: timer ticks, full-frame full-resolution
detection on every processed frame, EEG features on every tick, the BLAS and ONNX Runtime default
thread pools; face path: full-frame full-resolution detection on every frame). *detector* is the
face detector of both the pipeline and the face path.

| date | host | detector | session | decisions | e2e p50 / p99 | CPU % | RSS MB | before: e2e p99 / CPU % | face video | face fps / found | before: fps / found |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def _cells(r: dict[str, Any]) -> list[str]:
    host = r["host"]
    p, before = r.get("pipeline", {}), r.get("pipeline_before", {})
    f = r.get("face_path", {})
    variants = f.get("variants", {})
    base = variants.get("full frame, no tracking")

    def lat(x: dict[str, Any]) -> str:
        d = x.get("decision_latency_ms", {})
        return f"{d['p50']:.1f} / {d['p99']:.1f}" if "p99" in d else "-"

    return [
        datetime.date.today().isoformat(),
        f"{host['cpu_model']}, {host['cores_available']} cores, {host['backend']}",
        p.get("face_detector", "-"),
        Path(p.get("session", "-")).name, str(p.get("decisions", "-")), lat(p), str(p.get("cpu_percent", "-")),
        str(p.get("peak_rss_mb", "-")),
        f"{before['decision_latency_ms'].get('p99', float('nan')):.1f} / {before['cpu_percent']}" if before else "-",
        f"{Path(f.get('video', '-')).name} ({f.get('frames', '-')} frames)",
        f"{f['fps'] or 0:.0f} / {100 * f['found_ratio']:.1f}%" if f else "-",
        f"{base['fps'] or 0:.0f} / {100 * base['found_ratio']:.1f}%" if base else "-",
    ]


def append_row(result: dict[str, Any], results: Path) -> str:
    """Add one row for ``result`` under this script's table in ``results`` (created if missing)."""
    row = "| " + " | ".join(_cells(result)) + " |"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if TITLE not in text:
        text = text.rstrip("\n") + "\n\n" + TITLE + "\n" + INTRO
    head, _, tail = text.partition(TITLE)
    lines = tail.split("\n")
    last = max(i for i, line in enumerate(lines) if line.startswith("|"))
    lines.insert(last + 1, row)
    results.write_text(head + TITLE + "\n".join(lines))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="the file written by edge-mer bench --json")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args()
    try:
        result = json.loads(args.json.read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {args.json}: {exc}")
    print(append_row(result, args.results))


if __name__ == "__main__":
    main()
