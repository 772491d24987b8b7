"""``edge-mer bench`` results as a terminal table and as Markdown (the JSON is the result dict itself)."""
from __future__ import annotations

from typing import Any

#: Stage names as shown in the tables, in pipeline order (others follow alphabetically).
STAGE_ORDER = ("decode.face", "face.detect", "face.crop", "speech.logmel", "eeg.features")


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def _stage_rows(pipeline: dict[str, Any]) -> list[list[str]]:
    stages = pipeline["stages_ms"]
    names = [n for n in STAGE_ORDER if n in stages]
    names += sorted(n for n in stages if n.startswith("encoder.")) + (["fusion"] if "fusion" in stages else [])
    names += sorted(set(stages) - set(names))
    rows = [[n, _ms(stages[n].get("p50")), _ms(stages[n].get("p99")), str(stages[n]["n"])] for n in names]
    for label, key in (("tick (one decision's compute)", "tick_ms"),
                       ("decision (newest sample to output)", "decision_latency_ms")):
        s = pipeline[key]
        rows.append([label, _ms(s.get("p50")), _ms(s.get("p99")), str(s["n"])])
    return rows


def _encoder_rows(encoders: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, per_precision in encoders.items():
        for precision, r in per_precision.items():
            if "skipped" in r:
                rows.append([name, precision, f"skipped: {r['skipped']}", "", "", "", "", "", "", ""])
                continue
            big = r.get("larger", {})
            rows.append([name, precision, _ms(r["p50_ms"]), _ms(r["p95_ms"]), _ms(r["p99_ms"]), _ms(r["max_ms"]),
                         _count(r["throughput_per_s"]), str(big.get("batch", "-")), _ms(big.get("p50_ms")),
                         _count(big.get("throughput_per_s"))])
    return rows


def _us(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rule_rows(rules: dict[str, Any]) -> list[list[str]]:
    return [[name, f"skipped: {r['skipped']}", "", "", ""] if "skipped" in r else
            [name, _us(r["p50_us"]), _us(r["p90_us"]), _us(r["p99_us"]), _us(r["max_us"])]
            for name, r in rules.items()]


def _head_rows(heads: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, per_precision in heads.items():
        for precision, r in per_precision.items():
            if "skipped" in r:
                rows.append([name, precision, f"skipped: {r['skipped']}", "", "", "", ""])
            else:
                rows.append([name, precision, _us(r["p50_us"]), _us(r["p90_us"]), _us(r["p99_us"]),
                             _us(r["max_us"]), r.get("gate") or "-"])
    return rows


def _face_rows(face: dict[str, Any]) -> list[list[str]]:
    return [[label, _count(v["fps"]), f"{100 * v['found_ratio']:.1f}%", _ms(v["frame_ms"]["p50"]),
             _ms(v["frame_ms"]["p99"]), str(v["full_detections"])] for label, v in face["variants"].items()]


def _pipeline_line(p: dict[str, Any]) -> str:
    power = p["power"]
    if power.get("source") == "rapl":
        watts = f"package {power['package_power_mean_w']} W (RAPL)"
    elif power.get("source") == "tegrastats":
        watts = f"{_ms(power.get('power_mean_w'))} W mean (tegrastats)"
    else:
        watts = f"n/a ({power.get('reason')})"
    return (f"CPU {p['cpu_percent']}% of one core, peak RSS {p['peak_rss_mb']} MB, power {watts}; "
            f"{p['decisions']} decisions in {p['wall_s']} s")


HEADERS = {
    "encoders": ["encoder", "precision", "p50 ms", "p95 ms", "p99 ms", "max ms", "/s", "batch", "p50 ms", "/s"],
    "stages": ["stage", "p50 ms", "p99 ms", "n"],
    "face": ["face path", "fps", "found", "p50 ms", "p99 ms", "full detections"],
    "fusion_rules": ["fusion rule", "p50 us", "p90 us", "p99 us", "max us"],
    "fusion_heads": ["fusion head", "precision", "p50 us", "p90 us", "p99 us", "max us", "gate"],
}


def _sections(result: dict[str, Any]) -> list[tuple[str, str, list[list[str]]]]:
    """(title, header key, rows) per table, plus pipeline lines as titles."""
    out = []
    for key, title in (("pipeline", "Pipeline"), ("pipeline_before", "Pipeline before the optimisations")):
        if key in result:
            p = result[key]
            rates = ", ".join(f"{m} {s['rate']:g}/s" for m, s in p.get("streams", {}).items())
            out.append((f"{title}: {p['session']} ({rates}) in real time, {p['rate_hz']:g} decisions/s; "
                        f"align_ticks {p['align_ticks']}, face detector {p['face_detector']}, EEG hop "
                        f"{p.get('eeg_hop_s')} s, numpy threads {p.get('numpy_threads') or 'default'}, ONNX Runtime "
                        f"threads {p.get('ort_intra_op_threads') or 'default'}. {_pipeline_line(p)}",
                        "stages", _stage_rows(p)))
    if "encoders" in result:
        threads = result["config"]["backend"]["onnxruntime"]["intra_op_threads"]
        where = (f"{threads or 'default'} ONNX Runtime thread(s)" if result["host"]["backend"] == "onnxruntime"
                 else result["host"]["backend"])
        out.append((f"Encoders, {where} (batch 1, then the larger batch)",
                    "encoders", _encoder_rows(result["encoders"])))
    if "encoders_default_threads" in result:
        out.append(("Encoders with ONNX Runtime's default thread count (one per core)", "encoders",
                    _encoder_rows(result["encoders_default_threads"])))
    if "fusion_rules" in result:
        encoders = ", ".join(result["fusion_rules"]["encoders"])
        out.append((f"Fusion rules: fuse() per tick on valid {encoders} results, the bundle's weights "
                    "(model-running rules at fp32)", "fusion_rules", _rule_rows(result["fusion_rules"]["rules"])))
    if "fusion_heads" in result:
        out.append(("Fusion heads: the backend alone, batch 1, every modality present", "fusion_heads",
                    _head_rows(result["fusion_heads"])))
    if "face_path" in result:
        f = result["face_path"]
        out.append((f"Face path on CPU {f['cpu']}: {f['video']}, {f['frames']} frames, {f['encoder']} {f['precision']}"
                    " (decoding excluded)", "face", _face_rows(f)))
    return out


def render_text(result: dict[str, Any]) -> str:
    """Aligned plain-text tables for the terminal."""
    host = result["host"]
    lines = [f"edge-mer bench: {host['cpu_model']}, {host['cores_available']} cores, backend {host['backend']}, "
             f"bundle {result['bundle']}"]
    for title, header, rows in _sections(result):
        table = [HEADERS[header]] + rows
        widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(table[0]))]
        lines += ["", title]
        lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in table]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    """The same tables in Markdown, with the host in a header line."""
    host = result["host"]
    lines = ["# edge-mer bench", "",
             f"Host: {host['cpu_model']}, {host['cores_available']} cores ({host['machine']}, {host['system']}); "
             f"backend {host['backend']}; bundle {result['bundle']}; "
             + ", ".join(f"{k} {v}" for k, v in host["packages"].items())]
    for title, header, rows in _sections(result):
        lines += ["", title, "", "| " + " | ".join(HEADERS[header]) + " |",
                  "|" + "---|" * len(HEADERS[header])]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
