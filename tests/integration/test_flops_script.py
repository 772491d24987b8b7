"""benchmarks/flops_vs_matmul.py run as a subprocess on the packaged default bundle."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_mer.bundle import default_bundle_path, load_bundle

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "flops_vs_matmul.py"


def test_script_writes_json_and_results_rows(tmp_path: Path) -> None:
    out, results = tmp_path / "flops.json", tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--iterations", "3", "--json", str(out),
                           "--append-results", str(results)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))

    assert {"date", "host", "threads", "bundle", "matmul", "encoders"} <= set(data)
    assert {"cpu_model", "logical_cores", "onnxruntime", "numpy"} <= set(data["host"])
    assert data["threads"] == 1
    for lib in ("onnxruntime", "numpy"):
        matmul = data["matmul"][lib]
        assert set(matmul["sizes"]) == {"256", "512", "1024"}
        assert matmul["best_gflops"] == max(s["gflops"] for s in matmul["sizes"].values()) > 0

    expected = set(load_bundle(default_bundle_path(), verify_hashes=False).manifest.encoders)
    assert set(data["encoders"]) == expected
    for name, enc in data["encoders"].items():
        assert enc["flops"] > 0 and enc["p50_ms"] > 0 and enc["runs"] == 3, name
        assert enc["bound_ms"] > 0 and enc["gflops"] > 0, name
        assert abs(enc["bound_ms"] - enc["flops"] / data["matmul"]["onnxruntime"]["best_gflops"] / 1e6) < 1e-9
    # The daemon feeds batch 1, and 2.0 s of 16 kHz audio at hop 160 (centred frames) is 201 log-mel frames.
    assert data["encoders"]["face"]["input_shapes"] == {"input_1": [1, 1, 64, 64]}
    assert data["encoders"]["speech"]["input_shapes"] == {"logmel": [1, 1, 64, 201]}

    assert "face" in proc.stdout and "GFLOP/s" in proc.stdout
    rows = [line for line in results.read_text(encoding="utf-8").splitlines() if line.startswith(f"| {data['date']}")]
    assert len(rows) == len(expected)


def _script_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flops_vs_matmul", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(date: str) -> dict[str, Any]:
    encoder = {"input_shapes": {"x": [1, 4]}, "flops": 2_000_000, "p50_ms": 0.5, "gflops": 4.0,
               "pct_of_matmul": 4.0, "bound_ms": 0.02}
    return {"date": date, "threads": 1, "encoders": {"enc": encoder},
            "host": {"cpu_model": "Test CPU", "logical_cores": 2, "virtualized": False, "onnxruntime": "1.0"},
            "matmul": {"onnxruntime": {"best_gflops": 100.0}}}


def test_rows_go_to_the_end_of_their_table_and_other_sections_stay(tmp_path: Path) -> None:
    module = _script_module()
    path = tmp_path / "RESULTS.md"
    module.append_results(path, _result("2026-01-01"))
    assert path.read_text(encoding="utf-8").startswith("# Benchmark results\n")
    path.write_text(path.read_text(encoding="utf-8") + "\n## Another table\n\n| a |\n|---|\n| 1 |\n", encoding="utf-8")
    module.append_results(path, _result("2026-01-02"))
    lines = path.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if "2026-01-01" in line)
    second = next(i for i, line in enumerate(lines) if "2026-01-02" in line)
    assert second == first + 1 < lines.index("## Another table")
    assert lines[second] == ("| 2026-01-02 | Test CPU, 2 cores | 1 | 1.0 | enc | x[1x4] | 2 | 0.500 | 4 | 100.0 | 4 "
                             "| 0.02 |")

    other = tmp_path / "OTHER.md"
    other.write_text("# Results\n\nsomething else\n", encoding="utf-8")
    module.append_results(other, _result("2026-01-03"))
    text = other.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nsomething else\n\n## Encoder FLOPs") and text.endswith("| 0.02 |\n")
