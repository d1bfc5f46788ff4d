"""Files: atomic output (a file appears complete under its name, or not at all) and content
digests."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
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
    except OSError as e:  # a full disk or a denied write: one line naming the target
        raise InputError(f"cannot write {path}: {os_reason(e)}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Hold the folder's exclusive lock, so that writers into one folder commit one at a time
    and each checks what it may write after the other has written. An flock on the folder
    itself: it ends with the process, so a killed writer leaves nothing behind."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_temp_folder() -> None:
    """Converters (torch's compile caches) write to the temporary folder: with none that can be
    written, refuse before any work instead of failing deep inside them."""
    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        raise InputError(f"no temporary folder can be written (TMPDIR="
                         f"{os.environ.get('TMPDIR', 'unset')}, /tmp, /var/tmp and the current "
                         "folder were tried): set TMPDIR to a writable folder") from None


def os_reason(e: OSError) -> str:
    """The reason of an OSError in a few words, also when a library wraps it (shutil.Error
    holds a list of failed copies)."""
    if e.strerror:
        return e.strerror
    found = re.search(r"\[Errno \d+\] ([^:'\"]+)", str(e))
    return found.group(1).strip() if found else (str(e).splitlines() or [type(e).__name__])[0][:200]


def output_folder(path: Path) -> Path:
    """An output folder, created (with its parents) when it does not exist, as Optimum does."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"-o {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create folder {path}: {e.strerror}") from None
    return path


@contextlib.contextmanager
def made_folder(path: Path) -> Iterator[Path]:
    """``output_folder`` for one command: the folders it creates are removed again, deepest
    first, when the command fails and leaves them empty."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    output_folder(path)
    try:
        yield path
    except BaseException:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def check_output(path: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """An output file the user named: refused if it is one of the command's inputs, or exists
    without ``--force``; checked before any work."""
    path = Path(path)
    if any(path.resolve() == Path(i).resolve() for i in inputs):
        raise InputError(f"{path} is also an input: write the output elsewhere")
    check_writable(path, force)


COMPANION_LIMIT = 64 << 20  # bytes: a sidecar or vectors file is kB to a few MB


def read_text(path: Path, limit: int | None = None) -> str:
    """A UTF-8 text file (a BOM is dropped), every failure one line naming it. With ``limit``,
    at most that many bytes are read (a file linked to /dev/zero ends there)."""
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise InputError(f"{path}: over {limit:,} bytes, not a file this tool wrote")
        return data.decode("utf-8-sig")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None


def read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict]]:
    """A CSV with a header: (columns, rows as dicts, each with its ``line``). Fields of any
    length; an unterminated quote, a row with more fields than the header or a missing
    ``required`` column is refused in one line."""
    text = read_text(path)
    csv.field_size_limit(sys.maxsize)
    reader = csv.DictReader(io.StringIO(text), strict=True)
    try:
        columns = reader.fieldnames or []
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise InputError(f"{path}: column {twice[0]} appears twice in the header")
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(missing)} (found: {', '.join(columns) or 'none'})")
        rows = []
        for row in reader:
            if None in row:
                raise InputError(f"{path}: line {reader.line_num} has more fields than the "
                                 "header")
            rows.append(row | {"line": reader.line_num})
    except csv.Error as e:
        # line_num counts the lines read before the record that failed
        raise InputError(f"{path}: line {reader.line_num + 1}: not valid CSV ({e})") from None
    return columns, rows


def artifact_bytes(path: Path) -> bytes:
    """An artifact's content: a file's bytes, or a folder's (.mlpackage) files' bytes in sorted
    path order; what its size, gzip size and sha256 are taken over."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return b"".join(p.read_bytes() for p in files)


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
