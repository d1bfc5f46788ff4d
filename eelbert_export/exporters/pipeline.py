"""One export: checkpoint -> deployable module -> convert -> (quantize) -> check -> verify in the
format's own runtime -> artifact and sidecar, written as one unit. Everything a request can get
wrong is refused before the model is loaded."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eelbert_export import __version__, checkpoint, contract, front_end
from eelbert_export.errors import InputError, SpecError, VerificationError
from eelbert_export.exporters import verify
from eelbert_export.exporters.base import (
    FORMATS,
    FormatInfo,
    ModelFacts,
    Options,
    artifact_size,
    copy_artifact,
)
from eelbert_export.exporters.deployable import (
    Deployable,
    resize_hash,
    tracing_example,
    trim_positions,
)
from eelbert_export.files import (
    atomic_path,
    check_temp_folder,
    check_writable,
    folder_lock,
    made_folder,
    os_reason,
    output_folder,
    sha256_file,
    sha256_text,
    write_text,
)
from eelbert_export.text import CLS, MAX_WORD_CHARS, SEP, UNK, text_rules
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
        output_folder(self.out_dir)
        check_temp_folder()
        check_writable(self.artifact, self.force, fmt.folder)
        for companion in (contract.sidecar_path(self.artifact),
                          front_end.vectors_path(self.artifact)):
            check_writable(companion)  # without its artifact, left by an interrupted export


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
    options = request.format_options
    options.fit(ModelFacts(ckpt.text_spec.max_length, ckpt.max_chars, ckpt.pairs))
    if options.max_tokens is not None and options.max_tokens < ckpt.text_spec.max_length:
        ckpt.text_spec = dataclasses.replace(ckpt.text_spec, max_length=options.max_tokens)
    trim_positions(ckpt)
    return ckpt


def export(request: ExportRequest, memo: Memo | None = None) -> contract.Sidecar:
    """Export one artifact (``export_in``), leaving no folder it created when it fails."""
    with made_folder(request.out_dir):
        return export_in(request, memo)


def export_in(request: ExportRequest, memo: Memo | None = None) -> contract.Sidecar:
    """Export one artifact, its sidecar and test vectors, and the front-end files its folder
    shares; returns the sidecar. Raises VerificationError (after writing nothing) when the
    artifact misses its tolerance. With a ``memo``, a conversion or a reference already
    computed for the same model and options is reused."""
    request.check()
    info, fmt = request.format, request.format.load()
    ckpt = prepared(request)
    shared = front_end.files(ckpt.text_spec)
    check_shared(request, shared)
    deployable = Deployable.of(ckpt, request.output, request.model_path.stem)
    model_key = (str(request.model_path), request.output, request.max_chars)
    quantized = request.quantization != "none"
    try:
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
            quantization = fmt.quantize(staged, request.quantization, calibration)["quantization"] \
                if quantized else None
            fmt.check(staged)
            record = contract.Conversion(
                converter=details.pop("converter"), runtime=details.pop("runtime"),
                ops=tuple(fmt.ops(staged)), quantization=quantization,
                tensor_names=details.pop("tensor_names", {}), details=details)
            vectors, vector_check = verify.vectors(info, staged, ckpt, deployable,
                                                   request.verify)
            check = verify_artifact(request, memo, model_key, staged, ckpt, deployable,
                                    vector_check) if request.verify else None
            sidecar = make_sidecar(request, ckpt, deployable, staged, record, check, shared)
            write_unit(request, staged, sidecar, vectors, shared)
    except OSError as e:  # a full disk or a denied write, in the staging folder or the output
        raise InputError(f"cannot write {request.artifact}: {os_reason(e)}") from None
    return sidecar


def verify_artifact(request: ExportRequest, memo: Memo | None, model_key: tuple, staged: Path,
                    ckpt: checkpoint.Checkpoint, deployable: Deployable,
                    vectors: contract.VectorsCheck) -> contract.Verification:
    texts = verify.verification_texts(ckpt, request.data_dir)
    ref_key = model_key + (texts[0],)
    reference = memo.references.get(ref_key) if memo is not None else None
    if reference is None:
        reference = deployable.outputs(verify.encoded(ckpt, deployable, texts[1]))
        if memo is not None:
            memo.references[ref_key] = reference
    check = verify.verify(request.format, staged, ckpt, deployable, texts, request.quantization,
                          vectors, reference)
    if not check.passed:
        raise VerificationError(f"{request.artifact.name}: {check.describe_failure()}")
    return check


def check_shared(request: ExportRequest, shared: dict[str, str]) -> None:
    """The front-end files the folder's artifacts share: one that is the same is kept; a
    different one is refused, and with ``--force`` replaced only when no other artifact in the
    folder was exported with it (replacing it would break that artifact)."""
    for name, content in shared.items():
        path = request.out_dir / name
        if path.is_file() and path.read_text(encoding="utf-8") != content:
            if not request.force:
                raise InputError(f"{path} already exists for a different text front end: "
                                 "export into another folder (or use --force to replace it)")
            users = users_of(path, request.artifact)
            if users:
                raise InputError(f"{path} belongs to {users[0]}, and this model's text front "
                                 "end differs: export into another folder (--force would break "
                                 f"{users[0]})")
        check_writable(path, True)


def users_of(shared: Path, artifact: Path) -> list[str]:
    """The artifacts beside ``shared`` (other than ``artifact``) exported with it as it is."""
    digest = sha256_text(shared.read_text(encoding="utf-8"))
    users = []
    for other in sorted(shared.parent.iterdir()):
        if other == artifact or other.suffix not in FORMATS or \
                not contract.sidecar_path(other).is_file():
            continue
        try:
            files = contract.read_sidecar(other).front_end.shared
        except InputError:  # a broken sidecar: its artifact does not run as it is
            continue
        if files.get(shared.name) == digest:
            users.append(other.name)
    return users


def write_unit(request: ExportRequest, staged: Path, sidecar: contract.Sidecar,
               vectors: list[front_end.Vector], shared: dict[str, str]) -> None:
    """The shared front-end files, then the vectors and the sidecar, then the artifact last:
    the artifact's appearance commits the export (an older sidecar or vectors file without its
    artifact is replaced). Exports into one folder commit one at a time, each checking under
    the folder's lock that the name and the shared files are still its to write, so a second
    export to one name writes nothing."""
    with folder_lock(request.out_dir):
        check_writable(request.artifact, request.force, request.format.folder)
        check_shared(request, shared)
        for name, content in shared.items():
            path = request.out_dir / name
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                write_text(path, content)
        write_text(front_end.vectors_path(request.artifact),
                   "".join(v.to_json() + "\n" for v in vectors))
        write_text(contract.sidecar_path(request.artifact),
                   json.dumps(sidecar.to_dict(), indent=2, ensure_ascii=False) + "\n")
        with atomic_path(request.artifact, request.force, request.format.folder) as tmp:
            staged.rename(tmp)


def make_sidecar(request: ExportRequest, ckpt: checkpoint.Checkpoint, deployable: Deployable,
                 staged: Path, conversion: contract.Conversion,
                 check: contract.Verification | None, shared: dict[str, str]) -> contract.Sidecar:
    fixed = request.format.load().fixed_dims(staged)
    batch, seq = fixed.get("batch", "batch"), fixed.get("seq", "seq")
    first = [batch, seq] + ([ckpt.max_chars] if ckpt.hash_spec else [])
    shapes = {"token_codes": first, "input_ids": first}
    inputs = tuple(contract.TensorInfo(name, "int32", tuple(shapes.get(name, [batch, seq])))
                   for name in deployable.input_names)
    shape = (batch, len(ckpt.labels)) if deployable.output == "logits" else \
        (batch, seq, ckpt.config.hidden)
    path = request.model_path
    tokenizer = shared.get(front_end.TOKENIZER_FILE)
    return contract.Sidecar(
        artifact=request.artifact.name, format=request.format.name, eelbert_export=__version__,
        model=contract.ModelInfo(path.name, sha256_file(path), ckpt.config.name,
                                 ckpt.provenance.get("task"), tuple(ckpt.labels)),
        inputs=inputs,
        outputs=(contract.TensorInfo(deployable.output_name, "float32", shape),),
        max_chars=ckpt.max_chars, text=ckpt.text_spec,
        text_rules=text_rules(ckpt.text_spec, ckpt.hash_spec is not None, ckpt.pairs),
        front_end=contract.FrontEnd(
            tables=front_end.TABLES_FILE, tables_sha256=sha256_text(shared[front_end.TABLES_FILE]),
            tokenizer=front_end.TOKENIZER_FILE if tokenizer else None,
            tokenizer_sha256=sha256_text(tokenizer) if tokenizer else None,
            vectors=front_end.vectors_path(request.artifact).name,
            special_tokens=(CLS, SEP, UNK), max_word_chars=MAX_WORD_CHARS,
            truncation="longest_first" if ckpt.pairs else "from the end"),
        hash_spec=ckpt.hash_spec, quantization=request.quantization, conversion=conversion,
        size=artifact_size(staged), verification=check)
