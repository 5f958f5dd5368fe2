"""Strict loading of plain dicts (a ``params.yaml`` section) into frozen config dataclasses.

Unknown keys, missing keys and wrong types are errors naming the key, so a typo in ``params.yaml`` can never be
silently ignored. Supported field types: bool, int, float, str, ``Literal[...]``, ``X | None``, ``tuple[T, ...]``,
``list[T]``, ``dict[str, T]`` and nested config dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pipeline.core.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "params") -> T:
    """Build ``cls`` (a dataclass) from ``data``; raise ConfigError naming ``where.key`` on any mismatch."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing key '{name}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(f"{where}: {exc}") from None


# Field metadata of a key added to a config after files were written with it (see ``recorded_when_set``).
_RECORDED_WHEN_SET = "hydramix_recorded_when_set"


def recorded_when_set(default: Any) -> Any:
    """A dataclass field for a key added after files recording its config exist: ``to_dict`` leaves it out while it
    has its ``default``. So a file written at the default has the bytes it had before the key existed, and a
    resume or identity check against an older file (which lacks the key) still compares equal."""
    return dataclasses.field(default=default, metadata={_RECORDED_WHEN_SET: True})


def to_dict(obj: Any) -> Any:
    """The inverse of ``from_dict``: plain JSON/YAML-ready values (tuples become lists); a ``recorded_when_set``
    field at its default is left out (``from_dict`` restores it)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get(_RECORDED_WHEN_SET) and getattr(obj, f.name) == f.default)
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` that skips ``None`` values: CLI flags left unset do not override the file."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(obj, **changes) if changes else obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")  # a bug in a config class, not in params
