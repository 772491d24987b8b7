"""Flags that map 1:1 onto configuration fields: declared once as a table, applied over a TOML file.

A :data:`Flag` is ``(flag, dotted configuration field, kind, help)``.  A
``flag`` starting with ``-`` is an option; a bare name (``"source"``) is a
positional argument, which takes a plain-type kind only.  The kinds:

* a type (``str``, ``int``, ``float``): one value, converted by argparse;
* ``"flag"`` / ``"no"``: no value; the field becomes True / False;
* ``"list"``: one comma-separated value; the field becomes its non-empty items;
* ``"append"``: repeatable, one item per use (``--encoder a --encoder b``);
  the field becomes the list of them;
* a :class:`Table`: repeatable ``[KEY=]VALUE``; the field becomes a table.

The ``--config`` TOML file is read first and the flags given are applied on
top (a :class:`Table` flag merges into the file's table, key by key; every
other kind replaces the field), then the result is validated once by
:func:`edge_mer.config.from_dict`, so a flag and a file key fail the same way.

A field the dataclass requires (no default) may come from the file instead of
its flag; that is why argparse itself never requires an argument (positionals
are ``nargs="?"``), and :func:`config_from_flags` names the missing flag.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge_mer.config import from_dict, read_toml
from edge_mer.errors import ConfigError

T = TypeVar("T")

#: flag, dotted configuration field, kind (see the module docstring), help
Flag = tuple[str, str, Any, str]


@dataclasses.dataclass(frozen=True)
class Table:
    """The kind of a repeatable ``[KEY=]VALUE`` flag whose uses build one table.

    ``KEY=VALUE`` sets entry ``KEY``; a bare ``VALUE`` sets entry ``default``.
    With ``lists`` each VALUE is comma-separated (``[KEY=]A,B``) and the entry
    is the list of its non-empty items.  ``key`` and ``value`` name the two
    parts in the help and in errors.  A key used twice is an error.
    """

    key: str = "KEY"
    value: str = "VALUE"
    default: str = "*"
    lists: bool = False

    def __post_init__(self) -> None:
        if not (self.key and self.value and self.default) or "=" in self.default:
            # A FLAGS table is code, so this is a programming error rather than a ConfigError.
            raise ValueError(f"Table needs non-empty key, value and default (without '='), got {self}")

    @property
    def metavar(self) -> str:
        """``[KEY=]VALUE`` with this table's names, as the help shows it."""
        return f"[{self.key}=]{self.value}"

    def parse(self, flag: str, uses: Sequence[str]) -> dict[str, Any]:
        """The table that the uses of ``flag`` describe, in order."""
        table: dict[str, Any] = {}
        for use in uses:
            name, sep, rest = use.partition("=")
            key, value = (name, rest) if sep else (self.default, use)
            if not key or not value:
                raise ConfigError(f"{flag} {use!r}: expected {self.value} or {self.key}={self.value}")
            if key in table:
                raise ConfigError(f"{flag} names {key!r} twice")
            table[key] = _comma_list(value) if self.lists else value
        return table


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _is_positional(flag: str) -> bool:
    return not flag.startswith("-")


def _argument(flag: str, kind: Any) -> dict[str, Any]:
    """The argparse keywords of one flag of ``kind`` (its value stays None unless given)."""
    if kind == "flag":
        return {"action": "store_const", "const": True}
    if kind == "no":
        return {"action": "store_const", "const": False}
    if kind == "list":
        return {"type": _comma_list}
    if kind == "append":
        return {"action": "append", "metavar": flag.lstrip("-").upper()}
    if isinstance(kind, Table):
        # Parsed in config_from_flags, not by argparse: argparse would turn a ConfigError into its generic message.
        return {"action": "append", "metavar": kind.metavar}
    if callable(kind):
        return {"type": kind}
    raise TypeError(f"flag {flag}: unknown kind {kind!r}")  # a programming error in a FLAGS table


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """``--config`` plus one argument per flag, each showing its field in the help as ``[field]``."""
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    for flag, key, kind, text in flags:
        help_text = f"{text} [{key}]"
        if _is_positional(flag):
            if isinstance(kind, str) or not callable(kind):
                raise TypeError(f"positional {flag}: kind must be a type, got {kind!r}")  # a programming error
            # Optional to argparse: the --config file may give it instead (config_from_flags checks).
            parser.add_argument(key, metavar=flag, nargs="?", type=kind, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=key, default=None, help=help_text, **_argument(flag, kind))


def _parent(tree: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    """The table holding ``dotted``'s last part (created where missing) and that part."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{part} must be a table in the configuration")
        tree = node
    return tree, leaf


def _require_given(cls: type, data: dict[str, Any], flags: Sequence[Flag]) -> None:
    """Name the flag of a required top-level field that neither the flags nor the file gave."""
    required = {f.name for f in dataclasses.fields(cls)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    for flag, key, _, _ in flags:
        if key in required and key not in data:
            raise ConfigError(f"{flag} is required (or set {key} in the --config file)")


def config_from_flags(cls: type[T], args: argparse.Namespace, flags: Sequence[Flag]) -> T:
    """The TOML file (if any) with the given flags applied on top, validated once into ``cls``."""
    data: dict[str, Any] = read_toml(args.config) if args.config is not None else {}
    for flag, key, kind, _ in flags:
        value = getattr(args, key)
        if value is None:
            continue
        parent, leaf = _parent(data, key)
        if isinstance(kind, Table):
            from_file = parent.get(leaf)
            value = {**(from_file if isinstance(from_file, dict) else {}), **kind.parse(flag, value)}
        parent[leaf] = value
    _require_given(cls, data, flags)
    return from_dict(cls, data)
