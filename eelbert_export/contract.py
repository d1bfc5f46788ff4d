"""The contract between an export and the app that runs it: the tensors every artifact takes and
returns, and the sidecar (``<artifact>.json``), the one file an app reads to call it. Torch-free:
``predict`` on an ONNX or TFLite file needs only this, the text front end and the runtime.

Every artifact takes int32 ``token_codes`` [batch, seq, max_chars] (a table model, the bert-tiny
baseline: ``input_ids`` [batch, seq]), ``attention_mask`` [batch, seq] and, for pair models only,
``token_type_ids`` [batch, seq]; it returns float32 ``logits`` [batch, labels] or the encoder's
``last_hidden_state`` [batch, seq, hidden]. Padding is masked: zeros past a text's tokens.
The sidecar's JSON Schema is docs/sidecar.schema.json (``make schema``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelbert_export.errors import InputError, SpecError
from eelbert_export.files import COMPANION_LIMIT, artifact_bytes, read_text
from eelbert_export.hashing import HashSpec
from eelbert_export.specs import from_fields
from eelbert_export.text import TextSpec

SIDECAR_VERSION = 4  # 2: the front end's files; 3: typed size, conversion and verification;
# 4: the artifact's sha256, so a sidecar copied beside another artifact is refused
Feeds = dict[str, np.ndarray]  # an artifact's named inputs
OUTPUTS = {"logits": "logits", "hidden": "last_hidden_state"}  # --output -> the output's name


def input_names(hashed: bool, pairs: bool) -> list[str]:
    return ["token_codes" if hashed else "input_ids", "attention_mask"] + \
        (["token_type_ids"] if pairs else [])


def feeds(batch, names: list[str]) -> Feeds:
    """The named inputs of an encoded ``text.Batch``."""
    return {name: getattr(batch, name) for name in names}


def pad_to(feeds: Feeds, seq: int) -> Feeds:
    """Inputs cut or zero-padded along the sequence axis to ``seq`` tokens (padding is masked)."""
    return {name: np.pad(value[:, :seq], [(0, 0), (0, max(0, seq - value.shape[1]))]
                         + [(0, 0)] * (value.ndim - 2)) for name, value in feeds.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: a symbolic axis is a name (``batch``, ``seq``), a fixed one a size."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ModelInfo:
    checkpoint: str  # the file name it was exported from
    sha256: str
    config: str
    task: str | None
    labels: tuple[str, ...]  # label i is logit i


@dataclass(frozen=True)
class FrontEnd:
    """The files beside the artifact that reproduce its text front end in an app (names relative
    to the artifact's folder; docs/front-end.md says how to use them)."""

    tables: str  # front-end.json: the normalizer and pre-tokenizer as code-point tables
    tables_sha256: str
    tokenizer: str | None  # tokenizer.json (Hugging Face), WordPiece models; None in words mode
    tokenizer_sha256: str | None
    vectors: str  # <artifact>.vectors.jsonl: texts with their tokens, inputs and outputs
    special_tokens: tuple[str, ...]  # [CLS], [SEP], [UNK]: added by the template, never matched
    max_word_chars: int  # a longer word is one [UNK] token (WordPiece)
    truncation: str

    @property
    def shared(self) -> dict[str, str]:
        """The files other artifacts in the folder may share: name -> sha256."""
        return {self.tables: self.tables_sha256} | \
            ({self.tokenizer: self.tokenizer_sha256} if self.tokenizer else {})


@dataclass(frozen=True)
class Size:
    """Bytes on disk and gzipped (level 9, as a download would be); a folder's files."""

    bytes: int
    gzip_bytes: int
    sha256: str  # of files.artifact_bytes: the file, or a folder's files in path order
    files: dict[str, int] | None = None  # a folder artifact's (.mlpackage) files


@dataclass(frozen=True)
class Conversion:
    """How the artifact was made and what runs it: ``details`` are the format's own facts
    (opset, shapes, deployment target), ``quantization`` what the quantizer did."""

    converter: str
    runtime: str
    ops: tuple[str, ...]
    quantization: str | None = None
    details: dict[str, str | int] = dataclasses.field(default_factory=dict)
    # sha256 of a stored blob -> the parameter it holds, where the artifact names none (.pte)
    tensor_names: dict[str, TensorInfo] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Tolerance:
    """The one rule an artifact is held to against PyTorch: an unquantized artifact within
    ``max_abs_diff`` of its logits; a lossy one agreeing on labels and close in cosine."""

    exact: bool
    max_abs_diff: float = 1e-4
    min_label_agreement: float = 0.99
    min_cosine: float = 0.999

    def met(self, max_abs_diff: float, label_agreement: float, cosine: float) -> bool:
        if self.exact:
            return max_abs_diff <= self.max_abs_diff  # NaN is never within
        return label_agreement >= self.min_label_agreement and cosine >= self.min_cosine

    def describe(self) -> str:
        return f"max_abs_diff <= {self.max_abs_diff}" if self.exact else \
            f"label_agreement >= {self.min_label_agreement}, cosine >= {self.min_cosine}"


@dataclass(frozen=True)
class HashStageCheck:
    """The artifact's own hash stage on adversarial tokens against the Python reference."""

    tokens: int
    bit_exact: bool
    mismatched_values: int


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: float
    cosine: float
    label_agreement: float


@dataclass(frozen=True)
class VectorsCheck:
    """The test vectors replayed as an app meets them: each text's tokens and inputs, and the
    artifact's outputs within ``max_abs_diff`` of the file's; ``pytorch``: the artifact's
    outputs on them against PyTorch's, where the export computed them."""

    vectors: int
    tokens_equal: int
    inputs_equal: int
    max_abs_diff: float
    tolerance: float
    pytorch: Agreement | None = None

    @property
    def reproduced(self) -> bool:
        """An empty file reproduces nothing; a NaN difference is never within."""
        return 0 < self.tokens_equal == self.inputs_equal == self.vectors and \
            self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        if not self.vectors:
            return "test vectors failed: the vectors file holds none"
        return (f"test vectors failed: tokens equal {self.tokens_equal}/{self.vectors}, inputs "
                f"equal {self.inputs_equal}/{self.vectors}, max |diff| {self.max_abs_diff:.2e}"
                + (f", vs PyTorch max |diff| {self.pytorch.max_abs_diff:.2e}"
                   if self.pytorch else ""))


@dataclass(frozen=True)
class Verification:
    """The artifact in its own runtime against PyTorch on ``texts``. ``passed`` is
    ``judge(...)`` of the other fields; a sidecar whose ``passed`` disagrees is refused."""

    texts: str
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    label_agreement: float
    tolerance: Tolerance
    passed: bool
    accuracy_pytorch: float | None = None
    accuracy_artifact: float | None = None
    hash_stage: HashStageCheck | None = None  # table models have none
    vectors: VectorsCheck | None = None

    @staticmethod
    def judge(tolerance: Tolerance, max_abs_diff: float, label_agreement: float, cosine: float,
              hash_stage: HashStageCheck | None, vectors: VectorsCheck | None) -> bool:
        """The pass rule: the figures within the tolerance, the hash stage bit-exact, the test
        vectors reproduced and, for an unquantized artifact, within it of PyTorch too."""
        return tolerance.met(max_abs_diff, label_agreement, cosine) and \
            (hash_stage is None or hash_stage.bit_exact) and \
            (vectors is None or vectors.reproduced and not (
                tolerance.exact and vectors.pytorch is not None and
                not tolerance.met(vectors.pytorch.max_abs_diff, 1.0, 1.0)))

    def judged(self) -> bool:
        return self.judge(self.tolerance, self.max_abs_diff, self.label_agreement, self.cosine,
                          self.hash_stage, self.vectors)

    def describe_failure(self) -> str:
        parts = [f"max |diff| {self.max_abs_diff:.2e}", f"cosine {self.cosine:.5f}",
                 f"label agreement {100 * self.label_agreement:.2f}%"]
        if self.hash_stage and not self.hash_stage.bit_exact:
            parts.append(f"hash stage not bit-exact ({self.hash_stage.mismatched_values} "
                         "values differ)")
        if self.vectors and not self.vectors.reproduced:
            parts.append(self.vectors.describe())
        return f"verification failed ({self.tolerance.describe()}): " + ", ".join(parts)


@dataclass(frozen=True)
class Sidecar:
    """What an export writes beside its artifact; ``verification`` is None when skipped."""

    artifact: str
    format: str
    eelbert_export: str
    model: ModelInfo
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_chars: int | None  # token_codes' last axis; None for a table model
    text: TextSpec
    text_rules: str  # the front end in words
    front_end: FrontEnd
    hash_spec: HashSpec | None
    quantization: str
    conversion: Conversion
    size: Size
    verification: Verification | None
    sidecar_version: int = SIDECAR_VERSION

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def to_dict(self) -> dict:
        """The JSON the sidecar file holds (lists, not tuples)."""
        data = {"sidecar_version": self.sidecar_version} | dataclasses.asdict(self)
        data |= {"text": self.text.to_dict(),
                 "hash_spec": None if self.hash_spec is None else self.hash_spec.to_dict()}
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: object) -> Sidecar:
        if not isinstance(data, dict):
            raise SpecError("a sidecar is a JSON object")
        version = data.get("sidecar_version")
        if version is None or (isinstance(version, int) and version < SIDECAR_VERSION):
            raise SpecError(f"sidecar version {version}: written by an older eelbert-export "
                            "(export the model again)")
        if not isinstance(version, int) or version > SIDECAR_VERSION:
            raise SpecError(f"sidecar version {version} is newer than this eelbert-export reads "
                            f"({SIDECAR_VERSION}); upgrade eelbert-export")
        if not isinstance(data.get("text"), dict):
            raise SpecError("no text spec: the sidecar cannot say how to encode text")
        sidecar = from_fields(cls, data, "sidecar")
        sidecar.check()
        return sidecar

    def check(self) -> None:
        """What a reader relies on, beyond types: a classifier's labels match its logits, the
        inputs are the contract's, a recorded verification passed by the pass rule."""
        logits = [o for o in self.outputs if o.name == "logits"]
        if logits and not logits[0].shape:
            raise SpecError("the logits output has no shape")
        if logits and logits[0].shape[-1] != len(self.model.labels):
            raise SpecError(f"{len(self.model.labels)} labels for {logits[0].shape[-1]} logits")
        names = self.input_names
        if names[:2] not in (input_names(True, False)[:2], input_names(False, False)[:2]) or \
                (names[0] == "token_codes") != (self.max_chars is not None):
            raise SpecError(f"inputs {names} are not the export contract's")
        check = self.verification
        if check is not None and (not check.passed or not check.judged()):
            raise SpecError("its verification did not pass: export the model again")


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".json")


def read_sidecar(artifact: Path) -> Sidecar:
    """The sidecar of ``artifact``, checked; every failure one line naming the file."""
    path = sidecar_path(artifact)
    if not path.exists():
        raise InputError(f"{path} is missing: the artifact's sidecar says how to call it")
    try:
        sidecar = Sidecar.from_dict(json.loads(read_text(path, COMPANION_LIMIT)))
    except json.JSONDecodeError:
        raise InputError(f"{path}: not a valid sidecar (JSON)") from None
    except SpecError as e:
        raise InputError(f"{path}: {e}") from None
    if artifact.exists() and \
            hashlib.sha256(artifact_bytes(artifact)).hexdigest() != sidecar.size.sha256:
        raise InputError(f"{path} is not the sidecar of {artifact.name} (it records another "
                         f"file's sha256, an export of {sidecar.artifact}): keep each artifact "
                         "with its own sidecar, or export it again")
    return sidecar


def json_schema() -> str:
    """The sidecar's JSON Schema, derived from the dataclasses (``make schema`` writes it to
    docs/sidecar.schema.json; a test keeps the two equal)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Sidecar).json_schema(mode="serialization")
    # A reader takes exactly its own version: the field is required and constant.
    schema["properties"]["sidecar_version"] = {"const": SIDECAR_VERSION,
                                               "title": "Sidecar Version"}
    schema["required"] = sorted(set(schema.get("required", [])) | {"sidecar_version"})
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": f"eelbert-export/sidecar/v{SIDECAR_VERSION}",
              "description": "The JSON written beside an exported artifact (<artifact>.json)."} \
        | schema
    return json.dumps(schema, indent=2) + "\n"
