"""Strict mapping → dataclass conversion, shared by the experiment config and the method registry.

Torch-free on purpose: :mod:`obliviate.config` and :mod:`obliviate.methods` both build dataclasses
from user YAML with it, and loading a config must not import torch. Unknown keys, values of the
wrong type and out-of-range settings raise :class:`~obliviate.errors.ConfigError` naming the
dotted field.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from obliviate.errors import ConfigError

__all__ = ["check_choice", "check_range", "coerce", "from_dict"]


def from_dict(cls: type, raw: Any, at: str) -> Any:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and wrong types are errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{at or 'config'} must be a mapping, got {type(raw).__name__}",
            "use `key: value` entries",
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{at}.{key}" if at else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = (
                f"did you mean {(at + '.') if at else ''}{close[0]}?"
                if close
                else f"known fields: {', '.join(sorted(names))}"
            )
            raise ConfigError(f"unknown config field {dotted}", hint)
        kwargs[key] = coerce(hints[key], value, dotted)
    return cls(**kwargs)


def coerce(tp: Any, value: Any, at: str) -> Any:
    """``value`` as type ``tp`` (the YAML reading of it), or a :class:`ConfigError` naming ``at``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, at)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, at)
    if origin is list:
        if not isinstance(value, list | tuple):
            value = [value]
        return [coerce(args[0], v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(
                f"{at} must be a mapping, got {value!r}", "write `key: value` entries"
            )
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{at} must be true or false, got {value!r}", "write true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{at} must be an integer, got {value!r}", "write a whole number")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{at} must be a number, got {value!r}", "write e.g. 1e-5")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{at} must be a string, got {value!r}", "quote the value")
    return value


def check_range(at: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{at}={value} is out of range", f"use a value in [{lo}, {hi}]")


def check_choice(at: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(
            f"{at}={value!r} is not one of {', '.join(options)}", f"set {at} to one of them"
        )


# the names config.py has always used
_coerce = coerce
_range = check_range
_choice = check_choice
