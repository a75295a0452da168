"""Strict mapping → dataclass conversion, shared by the experiment config and the method registry.

Torch-free on purpose: :mod:`obliviate.config` and :mod:`obliviate.methods` both build dataclasses
from user YAML with it, and loading a config must not import torch. Unknown keys, values of the
wrong type and out-of-range settings raise :class:`~obliviate.errors.ConfigError` naming the
dotted field.

Numeric ranges are declared on the dataclass field itself: ``beta: float = param(0.1, gt=0)``
stores a :class:`Range` in the field's metadata, and :func:`check_numbers` checks every numeric
field of a built instance against it (and that it is finite, range or not).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from obliviate.errors import ConfigError

__all__ = [
    "DuplicateKeyError",
    "Range",
    "UniqueKeyLoader",
    "check_choice",
    "check_numbers",
    "check_range",
    "coerce",
    "field_range",
    "from_dict",
    "numeric_fields",
    "param",
]


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
            if close:
                hint = f"did you mean {(at + '.') if at else ''}{close[0]}?"
            elif names:
                hint = f"known fields: {', '.join(sorted(names))}"
            else:
                hint = f"{at or 'this section'} takes no fields: remove {dotted}"
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


# --------------------------------------------------------------------------------------------
# declared ranges


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; ``lo_open`` / ``hi_open`` exclude the bound itself.
    Infinite bounds are always open: a checked value must also be finite."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        left = "(" if self.lo_open or self.lo == -math.inf else "["
        right = ")" if self.hi_open or self.hi == math.inf else "]"
        return f"{left}{_num(self.lo)}, {_num(self.hi)}{right}"


def _num(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


RANGE_KEY = "range"
"""The metadata key :func:`param` stores a field's :class:`Range` under."""


def param(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with a declared range: ``beta: float = param(0.1, gt=0)``.

    ``ge``/``gt`` give the lower bound (inclusive / exclusive), ``le``/``lt`` the upper one; an
    unset side is unbounded. For a ``list[int]`` field the range applies to every element; a
    ``None`` value (an optional field left unset) is not checked.
    """
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise ValueError("give one lower bound (ge or gt) and one upper bound (le or lt)")
    rng = Range(
        lo=-math.inf if ge is None and gt is None else (gt if ge is None else ge),
        hi=math.inf if le is None and lt is None else (lt if le is None else le),
        lo_open=gt is not None,
        hi_open=lt is not None,
    )
    return dataclasses.field(default=default, metadata={RANGE_KEY: rng})


def field_range(cls: type, name: str) -> Range | None:
    """The :class:`Range` declared for field ``name`` of ``cls``; a subclass that redeclares the
    field only to change its default keeps the nearest base class's range."""
    for klass in cls.__mro__:
        f = klass.__dict__.get("__dataclass_fields__", {}).get(name)
        if f is not None and RANGE_KEY in f.metadata:
            return f.metadata[RANGE_KEY]
    return None


def _numeric_type(tp: Any) -> tuple[type, bool, bool] | None:
    """(int or float, is a list, allows None) for a numeric annotation, else None."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        optional = type(None) in args
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return None
        tp = inner[0]
    is_list = typing.get_origin(tp) is list
    if is_list:
        tp = (typing.get_args(tp) or (Any,))[0]
    if tp in (int, float):
        return tp, is_list, optional
    return None


def numeric_fields(cls: type) -> dict[str, tuple[type, bool, bool]]:
    """Field name → (int or float, is a list, allows None) for every numeric field of ``cls``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = _numeric_type(hints.get(f.name))
        if kind is not None:
            out[f.name] = kind
    return out


def check_numbers(obj: Any, at: str) -> None:
    """Every numeric field of dataclass ``obj`` is finite and inside its declared range.

    Undeclared fields are only checked for being finite (``nan`` and ``inf`` reach a float field
    from YAML's ``.nan`` / ``.inf`` or the strings ``nan`` / ``inf``, and would make every loss NaN).
    """
    cls = type(obj)
    for name, (tp, is_list, optional) in numeric_fields(cls).items():
        value = getattr(obj, name)
        if value is None:
            continue
        rng = field_range(cls, name)
        items = list(enumerate(value)) if is_list else [(None, value)]
        for i, v in items:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue  # a type error is coerce's business
            dotted = f"{at}.{name}" if i is None else f"{at}.{name}[{i}]"
            if rng is None:
                if not math.isfinite(v):
                    raise ConfigError(f"{dotted}={v} is not a finite number", "use a finite value")
            elif v not in rng:
                what = "a whole number" if tp is int else "a finite value"
                null = " or null" if optional and not is_list else ""
                raise ConfigError(f"{dotted}={v} is out of range", f"use {what} in {rng}{null}")


# --------------------------------------------------------------------------------------------
# YAML


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (plain PyYAML keeps the last value, silently)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(
            "while constructing a mapping", first, f"found duplicate key {key!r}", again
        )
        self.key = key
        self.first_line = first.line + 1
        self.line = again.line + 1


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises :class:`DuplicateKeyError` for a key given twice in one
    mapping. Keys a ``<<`` merge brings in may still be overridden: that is what merges are for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not None:
                    raise DuplicateKeyError(key, first, key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# the names config.py has always used
_coerce = coerce
_range = check_range
_choice = check_choice
