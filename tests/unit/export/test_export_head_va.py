"""In-process `export()` of a fusion head with a valence_arousal output, and the new flags' fields."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import load_bundle
from edge_mer.errors import ConfigError
from edge_mer_export.cli import add_arguments, load_config
from edge_mer_export.config import ExportConfig
from edge_mer_export.pipeline import export
from export_models import head_bundle, head_rows, write_head_npz


def _config(*argv: str) -> ExportConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_config(parser.parse_args(list(argv)))


def test_flags_map_one_to_one_onto_the_new_fields() -> None:
    config = _config("b", "--out", "o", "--head-eval", "e.npz", "--head-calib", "c.npz", "--va-eval", "face=va.csv",
                     "--va-eval", "all.csv", "--max-ccc-drop", "0.05")
    assert (config.head_eval, config.head_calib) == (Path("e.npz"), Path("c.npz"))
    assert config.va_eval == {"face": Path("va.csv"), "*": Path("all.csv")} and config.max_ccc_drop == 0.05
    assert config.data_for(config.va_eval, "speech") == Path("all.csv")
    defaults = _config("b", "--out", "o")
    assert defaults.max_ccc_drop == 0.02 and defaults.head_eval is None and defaults.va_eval == {}


@pytest.mark.parametrize("argv, message", [
    (["--max-ccc-drop", "-0.1"], "max_ccc_drop must be in 0..2"),
    (["--max-ccc-drop", "nan"], "max_ccc_drop must be in 0..2"),
    (["--head-calib", "c.npz"], "head_calib needs head_eval"),
    (["--va-eval", "face="], "--va-eval 'face=': expected CSV or ENCODER=CSV"),
])
def test_bad_values_name_the_field(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config("b", "--out", "o", *argv)


def test_a_head_with_a_valence_arousal_output_gets_the_ccc_gate(tmp_path: Path) -> None:
    bundle = head_bundle(tmp_path / "bundle", va=True)
    files = {}
    for name, n, seed in (("eval", 200, 1), ("calib", 120, 2)):
        rows = head_rows(n, seed)
        rows["valence_arousal"] = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
        files[name] = write_head_npz(tmp_path / f"{name}.npz", rows)
    result = export(ExportConfig(source=bundle, out=tmp_path / "out", head_eval=files["eval"],
                                 head_calib=files["calib"], latency_iterations=3))
    assert result.any_passed
    head = load_bundle(tmp_path / "out").manifest.fusion.head
    for precision in ("fp16", "int8"):
        metrics = head.precisions[precision].metrics
        assert {"agreement", "ccc_valence_vs_fp32", "ccc_arousal", "ccc_mean_drop"} <= set(metrics)
        assert metrics["n_va"] == 200 and metrics["ccc_valence_vs_fp32"] > 0.98, metrics
    report = json.loads(result.report_json.read_text())
    assert report["fusion_head"]["precisions"]["int8"]["metrics"]["ccc_mean_vs_fp32"] > 0.98
    assert "## Valence/arousal (CCC)" in result.report_md.read_text()
