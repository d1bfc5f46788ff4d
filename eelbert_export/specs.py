"""Reading versioned specs and records (hash, text, model config, the sidecar) from plain dicts,
as stored in checkpoints and sidecars: every field is checked against its dataclass annotation,
so a newer version, an unknown field or a value of the wrong type fails in one line naming the
field instead of half-working."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union

from eelbert_export.errors import SpecError

T = TypeVar("T")


def from_fields(cls: type[T], data: object, what: str, version: int | None = None) -> T:
    if not isinstance(data, dict):
        raise SpecError(f"{what} must be a mapping of fields")
    found = data.get("version")
    if version is not None and isinstance(found, int) and found > version:
        raise SpecError(f"{what} version {found} is newer than this eelbert-export supports "
                        f"({version}); upgrade eelbert-export")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise SpecError(f"{what} has unknown fields: {', '.join(unknown)}")
    hints = annotations(cls)
    values = {name: typed(hints[name], value, f"{what} {name}") for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as e:
        raise SpecError(f"{what} is incomplete or malformed: {e}") from None


@functools.cache
def annotations(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def typed(hint: Any, value: object, what: str) -> Any:
    """``value`` as the annotation ``hint`` types it: JSON lists become tuples, nested records
    their dataclasses (through their own ``from_dict`` where they have one); anything else of
    the wrong type is refused."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms:
            try:
                return typed(arm, value, what)
            except SpecError:
                if len(arms) == 1:
                    raise
        raise SpecError(f"{what}: {short(value)} is not {' or '.join(map(name_of, arms))}")
    if dataclasses.is_dataclass(hint):
        reader = getattr(hint, "from_dict", None)
        return reader(value) if reader is not None else from_fields(hint, value, what)
    if origin is tuple:  # tuple[X, ...]: the records' only tuples
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{what}: {short(value)} is not a list")
        return tuple(typed(args[0], v, what) for v in value)
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise SpecError(f"{what}: {short(value)} is not a list")
        return [typed(args[0], v, what) for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SpecError(f"{what}: {short(value)} is not an object")
        return {k: typed(args[1], v, f"{what}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SpecError(f"{what}: {short(value)} is not {name_of(hint)}")
    return value


def name_of(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
