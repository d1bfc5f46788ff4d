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
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eelbert_export.errors import InputError, SpecError
from eelbert_export.hashing import HashSpec
from eelbert_export.specs import from_fields
from eelbert_export.text import TextSpec

SIDECAR_VERSION = 2  # 2: the front end's files (tokenizer, tables, test vectors)
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


@dataclass(frozen=True)
class Sidecar:
    """What an export writes beside its artifact. ``conversion`` and ``verification`` are the
    format's own record (converter, runtime, shapes; the figures against PyTorch), free-form
    except that ``conversion`` names its ``runtime``; ``verification`` is None when skipped."""

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
    conversion: dict[str, Any]
    size: dict[str, int]
    verification: dict[str, Any] | None
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
        fields = dict(data)
        try:
            fields["model"] = from_fields(ModelInfo, data.get("model"), "sidecar model")
            fields["inputs"] = tuple(from_fields(TensorInfo, t, "sidecar input")
                                     for t in data.get("inputs", ()))
            fields["outputs"] = tuple(from_fields(TensorInfo, t, "sidecar output")
                                      for t in data.get("outputs", ()))
        except TypeError:
            raise SpecError("sidecar inputs and outputs must be lists") from None
        fields["front_end"] = from_fields(FrontEnd, data.get("front_end"), "sidecar front_end")
        if not isinstance(data.get("text"), dict):
            raise SpecError("no text spec: the sidecar cannot say how to encode text")
        fields["text"] = TextSpec.from_dict(data["text"])
        spec = data.get("hash_spec")
        fields["hash_spec"] = None if spec is None else HashSpec.from_dict(spec)
        sidecar = from_fields(cls, fields, "sidecar")
        sidecar.check()
        return sidecar

    def check(self) -> None:
        """What a reader relies on, beyond field names: a classifier's labels match its logits,
        the runtime is named, the inputs are the contract's."""
        logits = [o for o in self.outputs if o.name == "logits"]
        if logits and logits[0].shape[-1] != len(self.model.labels):
            raise SpecError(f"{len(self.model.labels)} labels for {logits[0].shape[-1]} logits")
        if not isinstance(self.conversion.get("runtime"), str):
            raise SpecError("conversion.runtime is missing")
        names = self.input_names
        if names[:2] not in (input_names(True, False)[:2], input_names(False, False)[:2]) or \
                (names[0] == "token_codes") != (self.max_chars is not None):
            raise SpecError(f"inputs {names} are not the export contract's")


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".json")


def read_sidecar(artifact: Path) -> Sidecar:
    """The sidecar of ``artifact``, checked; every failure one line naming the file."""
    path = sidecar_path(artifact)
    try:
        return Sidecar.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise InputError(f"{path} is missing: the artifact's sidecar says how to call it") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: not a valid sidecar (JSON)") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except SpecError as e:
        raise InputError(f"{path}: {e}") from None


def json_schema() -> str:
    """The sidecar's JSON Schema, derived from the dataclasses (``make schema`` writes it to
    docs/sidecar.schema.json; a test keeps the two equal)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Sidecar).json_schema(mode="serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": f"eelbert-export/sidecar/v{SIDECAR_VERSION}",
              "description": "The JSON written beside an exported artifact (<artifact>.json)."} \
        | schema
    return json.dumps(schema, indent=2) + "\n"
