"""Atomic output: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eelbert_export.errors import InputError


@contextlib.contextmanager
def atomic_path(path: Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} already exists (use --force to overwrite)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except FileNotFoundError:
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
