"""Decode a YAML mapping into a dataclass's fields, strictly by each field's type annotation.

simple_parsing (what SAELens's own CLI uses) casts instead of checking: `k: true` becomes 1, `d_sae: "512"`
becomes 512 and a hook name given as one string becomes a list of its characters. Here a value must already
have its field's type, or the error names the field and the expected type. The one allowance: a float field
takes an int, or a number written as a string (`lr: 1e-3`, which YAML 1.1 reads as a string).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def decode_fields(cls: type, data: Any, section: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`cls`'s constructor arguments from `data`: unknown keys and values of the wrong type are refused.

    `section` names the mapping in messages ("config", "sae", "logger"); `skip` keys are left to the caller."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{section} must be a mapping of {cls.__name__} fields, got {_got(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known - set(skip))
    if unknown:
        raise ValueError(f"unknown {section} fields {unknown}; expected {cls.__name__} fields")
    prefix = "" if section == "config" else f"{section}."
    return {k: decode_value(v, hints[k], f"{prefix}{k}") for k, v in data.items() if k not in skip}


def decode_value(value: Any, hint: Any, name: str) -> Any:
    """`value` as type `hint` (lists become tuples for tuple fields, mappings become nested dataclasses)."""
    ok, decoded = _decode(value, hint, name)
    if not ok:
        raise TypeError(f"{name} must be {describe(hint)}, got {_got(value)}")
    return decoded


def _decode(value: Any, hint: Any, name: str) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True, value
    if origin in (Union, types.UnionType):
        for arm in args:
            ok, decoded = _decode(value, arm, name)
            if ok:
                return True, decoded
        return False, None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if hint is type(None):
        return value is None, None
    if hint is bool or hint is str:
        return type(value) is hint, value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            return True, float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False, None
        item = args[0] if args else Any
        items = [decode_value(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        return True, (items if origin is list else tuple(items))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            return False, None
        item = args[1] if len(args) == 2 else Any
        return True, {k: decode_value(v, item, f"{name}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return True, value
        if not isinstance(value, Mapping):
            return False, None
        return True, hint(**decode_fields(hint, value, name))
    return isinstance(hint, type) and isinstance(value, hint), value


def describe(hint: Any) -> str:
    """A type as a person reads it: `int`, `str or null`, `a list of str`, `one of 'hard', 'soft'`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} fields"
    return getattr(hint, "__name__", str(hint))


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
