"""What every export format shares, without importing any of them: the ``Format`` interface a
format module implements, each format's facts and typed options (the registry, keyed by artifact
suffix), the one way to pick a format from a path, and the one ``quiet()``. A format's module
(torch, onnxruntime, coremltools, litert) is imported only when it is used, so ``predict`` on an
``.onnx`` file never loads torch, coremltools or litert.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib
import io
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from eelbert_export.contract import Feeds
from eelbert_export.errors import EelbertError, InputError

CHECKPOINT = ".pt"
HASH_SCOPE = "encoder.embeddings.word"  # the hash stage's module path in every model
# Loggers that narrate conversions (torch.onnx passes, coremltools' runtime and version notes,
# torchao's CUDA kernels and torch internals): silenced while a converter works.
NOISY_LOGGERS = ("torch.onnx", "coremltools", "torch.utils._pytree", "torchao")


@dataclass(frozen=True)
class Tensor:
    """One stored tensor of an artifact, as the audit counts it: its bytes as stored."""

    name: str
    dtype: str
    count: int
    nbytes: int


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = 18

    def check(self, quantization: str) -> None:
        if not OPSETS[0] <= self.opset <= OPSETS[1]:
            raise InputError(f"--opset {self.opset}: torch's exporter writes opsets "
                             f"{OPSETS[0]}-{OPSETS[1]}")


@dataclass(frozen=True)
class CoreMLOptions:
    deployment_target: str = "iOS18"
    seq_lens: tuple[int, ...] = (16, 32, 64, 128)  # enumerated shapes, batch 1
    flexible: bool = False  # a ranged shape instead

    def check(self, quantization: str) -> None:
        targets = COREML_TARGETS
        if self.deployment_target not in targets:
            raise InputError(f"--deployment-target must be one of {', '.join(targets)}")
        if quantization == "int4" and \
                targets.index(self.deployment_target) < targets.index("iOS18"):
            raise InputError(f"--quantize int4 needs --deployment-target iOS18 (got "
                             f"{self.deployment_target})")
        if not self.flexible and len(set(self.seq_lens)) > 1 and \
                targets.index(self.deployment_target) < targets.index("iOS18"):
            raise InputError(f"enumerated shapes on several inputs need iOS18 (got "
                             f"{self.deployment_target}): give one --seq-len, --flexible, or "
                             "--deployment-target iOS18")


@dataclass(frozen=True)
class TFLiteOptions:
    seq_len: int | None = None  # the static sequence length [default: the model's max_length]

    def check(self, quantization: str) -> None:
        if self.seq_len is not None and self.seq_len < 1:
            raise InputError(f"--seq-len must be positive, got {self.seq_len}")


OPSETS = (18, 21)  # opset_version the dynamo exporter honours (it writes 18 for anything lower)
COREML_TARGETS = ("iOS16", "iOS17", "iOS18")
Options = OnnxOptions | CoreMLOptions | TFLiteOptions


@dataclass(frozen=True)
class FormatInfo:
    """A format's facts, known without importing it. ``min_cosine``: the format's own cosine
    floor for a lossy mode, where it states one."""

    name: str
    suffix: str
    folder: bool  # the artifact is a folder (an .mlpackage)
    quantizations: tuple[str, ...]
    options: type
    module: str
    min_cosine: dict[str, float] = dataclasses.field(default_factory=dict)

    def load(self) -> Format:
        return importlib.import_module(self.module)


class Format(Protocol):
    """What a format module implements. ``conversion(mode)`` names the conversion a mode starts
    from (modes sharing one are converted once by ``all``)."""

    def conversion(self, quantization: str) -> str: ...

    def convert(self, deployable, example: Feeds, path: Path, options: Options,
                conversion: str, calibration: list[Feeds]) -> dict[str, Any]: ...

    def quantize(self, path: Path, mode: str, calibration: list[Feeds]) -> dict[str, Any]: ...

    def check(self, path: Path) -> None: ...

    def ops(self, path: Path) -> list[str]: ...

    def runner(self, path: Path, threads: int | None = None) -> Callable[[Feeds], np.ndarray]:
        ...

    def hash_runner(self, path: Path) -> Callable[[np.ndarray], np.ndarray]: ...

    def tensors(self, path: Path) -> list[Tensor]: ...

    def fixed_dims(self, path: Path) -> dict[str, int]:
        """The input dimensions the artifact fixes (``batch``, ``seq``); others are free."""
        ...



FORMATS = {info.suffix: info for info in (
    FormatInfo("onnx", ".onnx", False, ("none", "fp16", "int8"), OnnxOptions,
               "eelbert_export.exporters.onnx"),
    FormatInfo("coreml", ".mlpackage", True,
               ("none", "fp16", "int8", "int4", "palette4", "palette6"), CoreMLOptions,
               "eelbert_export.exporters.coreml"),
    # int8-full quantizes activations too: held to its own stated floor (docs/tflite.md).
    FormatInfo("tflite", ".tflite", False, ("none", "fp16", "int8", "int8-weights", "int8-full"),
               TFLiteOptions, "eelbert_export.exporters.tflite", {"int8-full": 0.98}),
)}
BY_NAME = {info.name: info for info in FORMATS.values()}


def format_of(path: Path, what: str = "an exported artifact") -> FormatInfo | None:
    """The format of an artifact path by its suffix (None: a ``.pt`` checkpoint), refusing in
    one line a path that does not exist, an unknown suffix, or a file where a folder belongs."""
    path = Path(path)
    if path.suffix != CHECKPOINT and path.suffix not in FORMATS:
        raise InputError(f"{path}: not a checkpoint ({CHECKPOINT}) or {what} "
                         f"({', '.join(FORMATS)})")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    info = FORMATS.get(path.suffix)
    if info is not None and path.is_dir() != info.folder:
        kind = "a folder" if info.folder else "a file"
        raise InputError(f"{path}: a {path.suffix} artifact is {kind}")
    return info


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn a runtime's own failure to read a file (truncated, foreign, renamed) into one line."""
    try:
        yield
    except EelbertError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read it as {Path(path).suffix}: {first[:200]}") \
            from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Converters narrate every pass, warn about versions and log from C++ straight to file
    descriptor 2: while they work, Python's streams, warnings, the noisy loggers and descriptor
    2 are silenced. The checks and verification after a conversion speak to the artifact."""
    sys.stdout.flush()
    sys.stderr.flush()
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def artifact_size(path: Path) -> dict:
    """Bytes on disk and gzipped (level 9, as a download would be), and a folder's files."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    data = b"".join(p.read_bytes() for p in files)
    size = {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}
    if path.is_dir():
        size["files"] = {str(p.relative_to(path)): p.stat().st_size for p in files}
    return size


def copy_artifact(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
