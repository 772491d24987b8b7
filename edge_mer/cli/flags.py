"""Flags that map 1:1 onto configuration fields: declared once as a table, applied over a TOML file."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge_mer.config import from_dict, read_toml
from edge_mer.errors import ConfigError

T = TypeVar("T")

#: flag, dotted configuration field, type ("flag" sets True, "no" sets False, "list" splits commas), help
Flag = tuple[str, str, Any, str]


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """``--config`` plus one argument per flag, each showing its field in the help as ``[field]``."""
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    for flag, key, kind, text in flags:
        help_text = f"{text} [{key}]"
        if kind == "flag":
            parser.add_argument(flag, dest=key, action="store_const", const=True, default=None, help=help_text)
        elif kind == "no":
            parser.add_argument(flag, dest=key, action="store_const", const=False, default=None, help=help_text)
        elif kind == "list":
            parser.add_argument(flag, dest=key, type=_comma_list, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=key, type=kind, default=None, help=help_text)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{part} must be a table in the configuration")
        tree = node
    tree[leaf] = value


def config_from_flags(cls: type[T], args: argparse.Namespace, flags: Sequence[Flag]) -> T:
    """The TOML file (if any) with the given flags applied on top, validated once into ``cls``."""
    data: dict[str, Any] = read_toml(args.config) if args.config is not None else {}
    for _, key, _, _ in flags:
        value = getattr(args, key)
        if value is not None:
            _set(data, key, value)
    return from_dict(cls, data)
