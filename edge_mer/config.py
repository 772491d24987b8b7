"""Strict construction of frozen dataclasses from TOML/JSON mappings.

Configuration and manifests are frozen dataclasses that validate their own
values in ``__post_init__``.  This module turns plain mappings (parsed TOML or
JSON) into those dataclasses, refusing unknown keys and wrong types with an
error that names the full key path.  Nothing is coerced silently: ``"3"`` is
not an int and ``true`` is not a number; the only widening is int -> float,
because TOML and JSON writers drop the ``.0`` of whole floats.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
try:
    import tomllib  # novermin: 3.10 takes the tomli fallback below
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser as the tomli backport
    import tomli as tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from edge_mer.errors import ConfigError, EdgeMerError

T = TypeVar("T")

_NoneType = type(None)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is _NoneType:
        return "nothing"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin in (tuple, list):
        return "an array"
    if origin is dict:
        return "a table"
    if isinstance(tp, type):
        return {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
                "Path": "a path string"}.get(tp.__name__, tp.__name__)
    return str(tp)


def key_text(key: object) -> str:
    """A key from a user's file as it may appear in a one-line message: as is when printable, else escaped."""
    text = str(key)
    if text.isprintable() and len(text) <= 60:
        return text
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fail(where: str, expected: Any, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(f"{where or 'value'}: expected {_describe(expected)}, got {shown}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return the typed value."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise _fail(where, tp, value)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and _NoneType in args:
            return None
        for arg in args:
            if arg is _NoneType:
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError:
                if len([a for a in args if a is not _NoneType]) == 1:
                    raise
        raise _fail(where, tp, value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, tp, value)
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected an array of {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, tp, value)
        key_tp, val_tp = typing.get_args(tp)
        return {_convert(key_tp, k, f"{where}"): _convert(val_tp, v, f"{where}.{key_text(k)}")
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _fail(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(where, tp, value)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _fail(where, tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}") from None
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _fail(where, tp, value)
    raise TypeError(f"unsupported annotation {tp!r} at {where}")  # a programming error, not user input


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, strictly.

    Unknown keys, missing required keys and wrong types raise
    :class:`ConfigError` naming the dotted key path; value checks in the
    dataclass' ``__post_init__`` (which raise ``ValueError``) are re-raised as
    :class:`ConfigError` prefixed with the path of the table.
    """
    if not isinstance(data, dict):
        raise _fail(where, cls, data)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {prefix}{key_text(unknown[0])} (known keys here: {known})")
    hints = _hints(cls)
    kwargs = {}
    for name, field in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if where and not str(exc).startswith(where):
            raise ConfigError(f"{where}: {exc}") from None
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; every way it can be unreadable is one :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None


#: Untrusted JSON files (manifests, sessions) larger than this are refused before parsing.
MAX_JSON_BYTES = 4 * 1024 * 1024
#: ... and so are those nested deeper than this (json would recurse until RecursionError).
MAX_JSON_DEPTH = 32


def _json_depth_ok(text: str, max_depth: int) -> bool:
    """Whether brackets outside strings nest at most ``max_depth`` deep (a linear scan, no recursion)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_text(path: str | Path, what: str, error: type[EdgeMerError] = ConfigError, *, max_bytes: int,
              encoding: str = "utf-8") -> str:
    """An untrusted text file's content, or one ``error`` line: missing, unreadable, too large, not ``encoding``.

    The size is checked before reading and again on what was read (a file
    that grows meanwhile); messages never quote the content.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} {path}: {size} bytes is more than the {max_bytes} this file may have")
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > max_bytes:  # it grew while we looked
        raise error(f"{what} {path}: more than the {max_bytes} bytes this file may have")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def read_json(path: str | Path, what: str, error: type[EdgeMerError] = ConfigError, *,
              max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """An untrusted JSON file parsed, or one ``error`` line: missing, unreadable, too large, too deep, invalid.

    ``what`` names the file in messages (e.g. ``"session.json"``). The size is
    checked before reading and the nesting before parsing, so neither a huge
    nor a deeply nested file can exhaust memory or the stack. Messages never
    quote the file's content.
    """
    text = read_text(path, what, error, max_bytes=max_bytes)
    if not _json_depth_ok(text, max_depth):
        raise error(f"{what} {path} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # an integer literal longer than Python's int-parsing limit (4300 digits)
        raise error(f"{what} {path} holds a number too long to read (more than 4300 digits)") from None
    except RecursionError:  # unreachable after the depth check; kept so no traceback can escape
        raise error(f"{what} {path} nests too deep") from None


def to_dict(obj: Any) -> Any:
    """Turn a dataclass tree into JSON/TOML-ready builtins (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds.

    Used by ``__post_init__`` validators; unlike ``assert`` it survives ``-O``.
    """
    if not condition:
        raise ConfigError(message)
