"""Atomic output: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eelbert_export.errors import InputError


def check_writable(path: Path, force: bool = True, folder: bool = False) -> None:
    """Fail before any work is done if ``path`` (a file, or a folder artifact such as an
    .mlpackage) cannot be written."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} already exists (use --force to overwrite)")
    if path.is_dir() and not folder:
        raise InputError(f"cannot write {path}: it is a folder")
    if path.is_file() and folder:
        raise InputError(f"cannot write {path}: it is a file")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write {path}: permission denied")


@contextlib.contextmanager
def atomic_path(path: Path, force: bool = True, folder: bool = False) -> Iterator[Path]:
    """Yield a fresh path beside ``path``; move what was written there into place only if the
    block succeeds. A folder that is replaced is swapped out whole, never merged."""
    path = Path(path)
    check_writable(path, force, folder)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent or "."))
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    try:
        yield work / path.name
        if path.is_dir():
            os.replace(path, work / "replaced")
        os.replace(work / path.name, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
