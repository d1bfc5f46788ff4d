"""One export: checkpoint -> deployable module -> convert -> (quantize) -> check -> verify in the
format's own runtime -> artifact and sidecar, written as one unit. Everything a request can get
wrong is refused before the model is loaded."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eelbert_export import __version__, checkpoint, contract
from eelbert_export.errors import InputError, SpecError, VerificationError
from eelbert_export.exporters import verify
from eelbert_export.exporters.base import FormatInfo, Options, artifact_size, copy_artifact
from eelbert_export.exporters.deployable import (
    Deployable,
    resize_hash,
    tracing_example,
    trim_positions,
)
from eelbert_export.files import atomic_path, check_writable, sha256_file
from eelbert_export.text import text_rules
from eelbert_export.zoo import default_model


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how. ``options``: the format's options type (its defaults if None);
    ``max_chars``: another token width than the model's; ``data_dir``: where the model's task
    data may be prepared (verification then uses its dev split)."""

    format: FormatInfo
    model: Path | None = None  # default: the default model
    out_dir: Path = Path(".")
    quantization: str = "none"
    output: str = "logits"
    options: Options | None = None
    max_chars: int | None = None
    verify: bool = True
    data_dir: Path | None = Path("data")
    force: bool = False

    @property
    def model_path(self) -> Path:
        return Path(self.model or default_model())

    @property
    def artifact(self) -> Path:
        parts = [self.model_path.stem] + ([self.output] if self.output != "logits" else []) + \
            ([self.quantization] if self.quantization != "none" else [])
        return self.out_dir / (".".join(parts) + self.format.suffix)

    @property
    def format_options(self) -> Options:
        return self.options or self.format.options()

    def check(self) -> None:
        """Refuse a bad request in one line before any work."""
        fmt = self.format
        if self.quantization not in fmt.quantizations:
            raise InputError(f"{fmt.name} quantization must be one of "
                             f"{', '.join(fmt.quantizations)}")
        if self.output not in contract.OUTPUTS:
            raise InputError(f"output must be one of {', '.join(contract.OUTPUTS)}")
        if not isinstance(self.format_options, fmt.options):
            raise InputError(f"{fmt.name} takes {fmt.options.__name__}")
        self.format_options.check(self.quantization)
        if not self.out_dir.is_dir():
            raise InputError(f"output folder {self.out_dir} does not exist")
        check_writable(self.artifact, self.force, fmt.folder)
        check_writable(contract.sidecar_path(self.artifact), self.force)


@dataclass
class Memo:
    """What exporting one model in many modes (``all``) computes once: each format's conversion
    of each kind (copied into ``folder``), and the PyTorch reference outputs."""

    folder: Path
    conversions: dict = dataclasses.field(default_factory=dict)
    references: dict = dataclasses.field(default_factory=dict)


def prepared(request: ExportRequest) -> checkpoint.Checkpoint:
    """The checkpoint as the artifact will hold it: refused if it cannot export, its tokens
    narrowed to ``max_chars``, its position table cut to what the front end reaches."""
    path = request.model_path
    ckpt = checkpoint.load(path)
    if ckpt.kind != "classifier":
        raise InputError(f"{path}: only fine-tuned classifiers are exported")
    if ckpt.hash_spec is not None and ckpt.hash_spec.variant != "portable":
        raise SpecError(f"{path}: has the int64 hash; only the portable hash exports "
                        "(bit-exact integer ops in every runtime)")
    if request.max_chars is not None and ckpt.hash_spec is None:
        raise InputError(f"{path}: has an embedding table: --max-chars does not apply")
    if request.max_chars is not None and request.max_chars != ckpt.max_chars:
        resize_hash(ckpt, request.max_chars)
    trim_positions(ckpt)
    return ckpt


def export(request: ExportRequest, memo: Memo | None = None) -> contract.Sidecar:
    """Export one artifact and its sidecar; returns the sidecar. Raises VerificationError
    (after writing nothing) when the artifact misses its tolerance. With a ``memo``, a
    conversion or a reference already computed for the same model and options is reused."""
    request.check()
    info, fmt = request.format, request.format.load()
    ckpt = prepared(request)
    deployable = Deployable.of(ckpt, request.output, request.model_path.stem)
    model_key = (str(request.model_path), request.output, request.max_chars)
    quantized = request.quantization != "none"
    with tempfile.TemporaryDirectory(dir=request.out_dir, prefix=".export-") as work:
        staged = Path(work) / request.artifact.name
        calibration = verify.calibration_feeds(ckpt, deployable, request.data_dir) \
            if quantized else []
        conversion = fmt.conversion(request.quantization)
        key = model_key + (info.name, repr(request.format_options), conversion)
        if memo is not None and key in memo.conversions:
            kept, details = memo.conversions[key]
            copy_artifact(kept, staged)
        else:
            details = fmt.convert(deployable, tracing_example(ckpt, deployable), staged,
                                  request.format_options, conversion, calibration)
            if memo is not None:
                kept = memo.folder / f"{len(memo.conversions)}{info.suffix}"
                copy_artifact(staged, kept)
                memo.conversions[key] = (kept, details)
        details = dict(details)
        if quantized:
            details |= fmt.quantize(staged, request.quantization, calibration)
        fmt.check(staged)
        details["ops"] = fmt.ops(staged)
        figures = None
        if request.verify:
            texts = verify.verification_texts(ckpt, request.data_dir)
            ref_key = model_key + (texts[0],)
            reference = memo.references.get(ref_key) if memo is not None else None
            if reference is None:
                reference = deployable.outputs(verify.encoded(ckpt, deployable, texts[1]))
                if memo is not None:
                    memo.references[ref_key] = reference
            figures = verify.verify(info, staged, ckpt, deployable, texts,
                                    request.quantization, reference)
            if not figures["passed"]:
                raise VerificationError(f"{request.artifact.name}: "
                                        f"{verify.describe_failure(figures)}")
        sidecar = make_sidecar(request, ckpt, deployable, staged, details, figures)
        with atomic_path(request.artifact, request.force, info.folder) as tmp:
            staged.rename(tmp)
        with atomic_path(contract.sidecar_path(request.artifact), request.force) as tmp:
            tmp.write_text(json.dumps(sidecar.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return sidecar


def make_sidecar(request: ExportRequest, ckpt: checkpoint.Checkpoint, deployable: Deployable,
                 staged: Path, details: dict, figures: dict | None) -> contract.Sidecar:
    seq = "seq"
    first = ["batch", seq] + ([ckpt.max_chars] if ckpt.hash_spec else [])
    shapes = {"token_codes": first, "input_ids": first}
    inputs = tuple(contract.TensorInfo(name, "int32", tuple(shapes.get(name, ["batch", seq])))
                   for name in deployable.input_names)
    shape = ("batch", len(ckpt.labels)) if deployable.output == "logits" else \
        ("batch", seq, ckpt.config.hidden)
    path = request.model_path
    return contract.Sidecar(
        artifact=request.artifact.name, format=request.format.name, eelbert_export=__version__,
        model=contract.ModelInfo(path.name, sha256_file(path), ckpt.config.name,
                                 ckpt.provenance.get("task"), tuple(ckpt.labels)),
        inputs=inputs,
        outputs=(contract.TensorInfo(deployable.output_name, "float32", shape),),
        max_chars=ckpt.max_chars, text=ckpt.text_spec,
        text_rules=text_rules(ckpt.text_spec, ckpt.hash_spec is not None),
        hash_spec=ckpt.hash_spec, quantization=request.quantization, conversion=details,
        size=artifact_size(staged), verification=figures)
