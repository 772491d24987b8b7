"""`edge-mer export` flags and --config file -> ExportConfig (the FLAGS table through edge_mer.cli.flags)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_mer.cli.flags import Table
from edge_mer.errors import ConfigError
from edge_mer_export.cli import add_arguments, load_config
from edge_mer_export.config import DEFAULT_METHOD, ExportConfig


def _config(*argv: str) -> ExportConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_config(parser.parse_args(list(argv)))


def test_flags_fill_tables_lists_and_plain_fields() -> None:
    config = _config("bundle", "--out", "new", "--calib", "all", "--calib", "face=faces", "--eval", "speech=wavs",
                     "--calib-groups", "speech=08, 09", "--eval-groups", "10", "--encoder", "face",
                     "--encoder", "speech", "--precisions", "int8", "--engines", "--cache-dir", "cache", "--seed", "3")
    assert (config.source, config.out, config.cache_dir) == (Path("bundle"), Path("new"), Path("cache"))
    assert config.calib == {"*": Path("all"), "face": Path("faces")}
    assert config.eval == {"speech": Path("wavs")}
    assert config.calib_groups == {"speech": ("08", "09")} and config.eval_groups == {"*": ("10",)}
    assert config.encoders == ("face", "speech") and config.precisions == ("int8",)
    assert config.engines and config.seed == 3 and config.method == DEFAULT_METHOD == "minmax"
    assert config.data_for(config.calib, "eeg") == Path("all")


def test_config_file_gives_every_field_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "export.toml"
    path.write_text('source = "b"\nout = "o"\nmethod = "entropy"\nprecisions = ["fp16"]\n'
                    '[calib]\n"*" = "all"\nface = "faces"\n[eval_groups]\nspeech = ["12"]\n', encoding="utf-8")
    from_file = _config("--config", str(path))
    assert (from_file.source, from_file.out, from_file.method) == (Path("b"), Path("o"), "entropy")
    assert from_file.calib == {"*": Path("all"), "face": Path("faces")}
    assert from_file.eval_groups == {"speech": ("12",)} and from_file.precisions == ("fp16",)
    both = _config("--config", str(path), "other", "--calib", "face=mine", "--precisions", "fp16,int8")
    assert both.source == Path("other") and both.precisions == ("fp16", "int8")
    assert both.calib == {"*": Path("all"), "face": Path("mine")}  # a table flag merges key by key


@pytest.mark.parametrize("argv, message", [
    (["b", "--out", "o", "--precisions", "int4"], "precisions: 'int4' is not one of fp16, int8"),
    (["b", "--out", "o", "--precisions", ""], "precisions must name at least one of fp16, int8"),
    (["b", "--out", "o", "--calib", "x", "--calib", "y"], "--calib names '*' twice"),
    (["b", "--out", "o", "--eval", "face=x", "--eval", "face=y"], "--eval names 'face' twice"),
    (["b", "--out", "o", "--calib", "face="], "--calib 'face=': expected PATH or ENCODER=PATH"),
    (["b", "--out", "o", "--eval-groups", "=08"], "--eval-groups '=08': expected G1,G2 or ENCODER=G1,G2"),
    (["b", "--out", "o", "--method", "kl"], "method: expected one of 'entropy', 'minmax', 'percentile'"),
    (["b"], "--out is required (or set out in the --config file)"),
    (["--out", "o"], "source is required (or set source in the --config file)"),
])
def test_user_errors_name_the_flag_or_field(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(*argv)
    assert message in str(caught.value)


def test_table_kind_rejects_a_default_key_with_an_equals_sign() -> None:
    with pytest.raises(ValueError, match="Table needs"):
        Table(default="a=b")
