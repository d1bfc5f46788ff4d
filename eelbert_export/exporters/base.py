"""What every export format shares, without importing any of them: the ``Format`` interface a
format module implements, each format's facts and typed options (the registry, keyed by artifact
suffix), the one way to pick a format from a path, and the one ``quiet()``. A format's module
(torch, onnxruntime, coremltools, litert) is imported only when it is used, so ``predict`` on an
``.onnx`` file never loads torch, coremltools or litert.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from eelbert_export.contract import Feeds, Size
from eelbert_export.errors import EelbertError, InputError
from eelbert_export.files import artifact_bytes

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


OPSETS = (18, 21)  # opset_version the dynamo exporter honours (it writes 18 for anything lower)
COREML_TARGETS = ("iOS16", "iOS17", "iOS18")


@dataclass(frozen=True)
class ModelFacts:
    """What an export's options are checked against once the model is read (before any
    conversion): the tokens its front end produces, its token width, whether it takes pairs."""

    max_length: int
    max_chars: int | None
    pairs: bool


def cli(help: str, flag: str | None = None, choices: tuple | None = None,
        range: tuple[int, int] | None = None) -> dict:
    """A field's command-line option, read by the CLI (``--field-name`` unless ``flag``)."""
    return {"help": help, "flag": flag, "choices": choices, "range": range}


class FormatOptions:
    """A format's typed options, each field a command-line option (``cli`` metadata). ``check``
    refuses what is wrong on its face (before the model loads), ``fit`` what does not fit the
    model; ``max_tokens`` narrows the front end for a format whose artifact takes fewer tokens
    than the model (a static shape)."""

    def check(self, quantization: str) -> None:
        """Nothing to refuse by default."""

    def fit(self, facts: ModelFacts) -> None:
        """Everything fits by default."""

    @property
    def max_tokens(self) -> int | None:
        return None


@dataclass(frozen=True)
class OnnxOptions(FormatOptions):
    opset: int = field(default=18, metadata=cli("ONNX opset.", range=OPSETS))

    def check(self, quantization: str) -> None:
        if not OPSETS[0] <= self.opset <= OPSETS[1]:
            raise InputError(f"--opset {self.opset}: torch's exporter writes opsets "
                             f"{OPSETS[0]}-{OPSETS[1]}")


@dataclass(frozen=True)
class CoreMLOptions(FormatOptions):
    deployment_target: str = field(default="iOS18", metadata=cli(
        "Minimum iOS of the mlprogram.", choices=COREML_TARGETS))
    seq_lens: tuple[int, ...] = field(default=(16, 32, 64, 128), metadata=cli(
        "Enumerated sequence lengths, batch 1; repeat the option.", flag="--seq-len",
        range=(1, 512)))
    flexible: bool = field(default=False, metadata=cli(
        "A ranged shape (batch 1-64, any seq) instead of enumerated shapes."))

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

    def fit(self, facts: ModelFacts) -> None:
        if not self.flexible and max(self.seq_lens) < facts.max_length:
            raise InputError(f"--seq-len: the longest length must be at least the model's "
                             f"{facts.max_length} tokens (got {max(self.seq_lens)})")


@dataclass(frozen=True)
class TFLiteOptions(FormatOptions):
    seq_len: int | None = field(default=None, metadata=cli(
        "Static sequence length [default: the model's max_length]; texts are cut to it.",
        range=(3, 512)))

    def check(self, quantization: str) -> None:
        if self.seq_len is not None and self.seq_len < 3:
            raise InputError(f"--seq-len must be at least 3 ([CLS], a token, [SEP]), got "
                             f"{self.seq_len}")

    def fit(self, facts: ModelFacts) -> None:
        if self.seq_len is not None and self.seq_len > facts.max_length:
            raise InputError(f"--seq-len {self.seq_len} is past the model's {facts.max_length} "
                             "tokens")

    @property
    def max_tokens(self) -> int | None:
        """A shorter static length is the artifact's front end: texts are cut to it."""
        return self.seq_len


@dataclass(frozen=True)
class ExecuTorchOptions(FormatOptions):
    """Nothing to choose: dynamic batch and sequence axes, the XNNPACK delegate."""


Options = OnnxOptions | CoreMLOptions | TFLiteOptions | ExecuTorchOptions


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
    summary: str  # its export command's help
    min_cosine: dict[str, float] = field(default_factory=dict)
    platforms: tuple[str, ...] = ()  # where bench can time its runtime (platform.system())

    def load(self) -> Format:
        module = importlib.import_module(self.module)
        if not isinstance(module, Format):
            missing = [m for m in protocol_members() if not hasattr(module, m)]
            raise TypeError(f"{self.module} is not a Format: it lacks {', '.join(missing)}")
        return module


@runtime_checkable
class Format(Protocol):
    """What a format module implements; ``FormatInfo.load`` refuses a module that lacks any of
    it, and a test checks every registered format's signatures against this one.
    ``conversion(mode)`` names the conversion a mode starts from (modes sharing one are
    converted once by ``all``); ``MEMORY_PROBE`` is the code an app's process runs to load and
    run an artifact (``PATH``, ``FEEDS``: bench's peak-memory probe); ``tensors`` names each
    stored tensor by the model's parameter where the format can (the audit groups by it)."""

    MEMORY_PROBE: str

    def conversion(self, quantization: str) -> str: ...

    def convert(self, deployable, example: Feeds, path: Path, options: Options,
                conversion: str, calibration: list[Feeds]) -> dict[str, Any]: ...

    def quantize(self, path: Path, mode: str, calibration: list[Feeds]) -> dict[str, Any]: ...

    def check(self, path: Path) -> None: ...

    def ops(self, path: Path) -> list[str]: ...

    def runner(self, path: Path, threads: int | None = None) -> Callable[[Feeds], np.ndarray]:
        ...

    def hash_runner(self, path: Path, spec) -> Callable[[np.ndarray], np.ndarray]: ...

    def tensors(self, path: Path) -> list[Tensor]: ...

    def fixed_dims(self, path: Path) -> dict[str, int]:
        """The input dimensions the artifact fixes (``batch``, ``seq``); others are free."""
        ...


FORMATS = {info.suffix: info for info in (
    FormatInfo("onnx", ".onnx", False, ("none", "fp16", "int8"), OnnxOptions,
               "eelbert_export.exporters.onnx", "ONNX, verified in onnxruntime."),
    FormatInfo("coreml", ".mlpackage", True,
               ("none", "fp16", "int8", "int4", "palette4", "palette6"), CoreMLOptions,
               "eelbert_export.exporters.coreml", "a Core ML mlprogram (.mlpackage), verified "
               "by evaluating the converted program (MLModel.predict on macOS).",
               platforms=("Darwin",)),
    # int8-full quantizes activations too: held to its own stated floor (docs/tflite.md).
    FormatInfo("tflite", ".tflite", False, ("none", "fp16", "int8", "int8-weights", "int8-full"),
               TFLiteOptions, "eelbert_export.exporters.tflite", "TFLite (builtin ops only), "
               "verified in the LiteRT interpreter.", {"int8-full": 0.98}),
    FormatInfo("executorch", ".pte", False, ("none", "int8"), ExecuTorchOptions,
               "eelbert_export.exporters.executorch", "ExecuTorch (.pte, XNNPACK delegate), "
               "verified in ExecuTorch's runtime."),
)}
BY_NAME = {info.name: info for info in FORMATS.values()}


def protocol_members() -> list[str]:
    """The names a format module must define: the ``Format`` protocol's members."""
    return sorted(n for n in vars(Format) | Format.__annotations__
                  if not n.startswith("_"))


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


def artifact_size(path: Path) -> Size:
    """Bytes on disk and gzipped (level 9, as a download would be), and a folder's files."""
    data = artifact_bytes(path)
    return Size(len(data), len(gzip.compress(data, compresslevel=9, mtime=0)),
                hashlib.sha256(data).hexdigest(),
                {str(p.relative_to(path)): p.stat().st_size
                 for p in sorted(path.rglob("*")) if p.is_file()} if path.is_dir() else None)


def copy_artifact(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
