"""Reading versioned specs (hash, text, model config) from plain dicts, as stored in checkpoints
and sidecars: a newer version or an unknown field fails in one line instead of half-working."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

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
    try:
        return cls(**data)
    except TypeError as e:
        raise SpecError(f"{what} is incomplete or malformed: {e}") from None
