"""Files: atomic output (a file appears complete under its name, or not at all) and content
digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
