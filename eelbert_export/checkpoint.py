"""The checkpoint format: one ``.pt`` file with the config, hash spec, text spec, label names,
weights and provenance, read back with torch's weights-only loader (no pickled code runs)."""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from eelbert_export.errors import CheckpointError, InputError, SpecError
from eelbert_export.files import atomic_path
from eelbert_export.hashing import HashSpec
from eelbert_export.model import (
    Classifier,
    MaskedLM,
    ModelConfig,
    default_hash_spec,
    named_configs,
)
from eelbert_export.tasks import PAIR_TASKS
from eelbert_export.text import TextEncoder, TextSpec

FORMAT = "eelbert-export/checkpoint"
FORMAT_VERSION = 2  # 2 stores ``pairs``; version 1 kept it in the provenance (boolq implied it)
KINDS = {"classifier": Classifier, "mlm": MaskedLM}


@dataclass
class Checkpoint:
    model: nn.Module  # a Classifier or MaskedLM with its weights, in eval mode
    text_spec: TextSpec
    labels: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    pairs: bool = False  # takes text pairs (token_type_ids): BoolQ, a CSV with text_b

    @property
    def kind(self) -> str:
        return next(k for k, cls in KINDS.items() if isinstance(self.model, cls))

    @property
    def config(self) -> ModelConfig:
        return self.model.encoder.config

    @property
    def hash_spec(self) -> HashSpec | None:
        return self.model.encoder.hash_spec

    @property
    def max_chars(self) -> int | None:
        """The width of ``token_codes``; None for a table model, which takes token ids."""
        return None if self.hash_spec is None else self.hash_spec.max_chars

    def text_encoder(self) -> TextEncoder:
        return TextEncoder(self.text_spec, self.max_chars)


def new_model(kind: str, config: ModelConfig, hash_spec: HashSpec | None,
              num_labels: int = 2) -> nn.Module:
    if kind == "classifier":
        return Classifier(config, hash_spec, num_labels)
    return MaskedLM(config, hash_spec)


def save(path: Path, ckpt: Checkpoint) -> None:
    encoder = ckpt.model.encoder
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": ckpt.kind,
        "config": encoder.config.to_dict(),
        "hash_spec": encoder.hash_spec.to_dict() if encoder.hash_spec else None,
        "text_spec": ckpt.text_spec.to_dict(),
        "labels": list(ckpt.labels),
        "provenance": dict(ckpt.provenance),
        "pairs": ckpt.pairs,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()},
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as e:  # torch's writer reports a full disk as a RuntimeError
        found = re.search(r"No space left on device|File too large|Permission denied", str(e))
        raise InputError(f"cannot write {path}: "
                         f"{found.group(0) if found else 'the write failed (a full disk?)'}") \
            from None


def load(path: Path | str) -> Checkpoint:
    """Read and validate a checkpoint; every failure is a one-line CheckpointError/SpecError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        raise CheckpointError(f"{path}: truncated or damaged checkpoint (its zip archive is "
                              "incomplete)" if zip_start else f"{path}: not a PyTorch checkpoint "
                              "(torch.save writes a zip archive; this file is not one)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: holds objects the safe loader refuses; not an "
                              "eelbert-export checkpoint") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable or truncated)") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an eelbert-export checkpoint (a plain state_dict "
                              "or another tool's file?)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this "
                              f"eelbert-export supports ({FORMAT_VERSION}); upgrade eelbert-export")
    try:
        kind = data["kind"]
        if kind not in KINDS:
            raise CheckpointError(f"unknown model kind {kind!r}")
        labels = [str(label) for label in data["labels"]]
        model = new_model(kind, ModelConfig.from_dict(data["config"]),
                          HashSpec.from_dict(data["hash_spec"]) if data["hash_spec"] else None,
                          len(labels))
        text_spec = TextSpec.from_dict(data["text_spec"])
        check_weights(model, data["state_dict"])
        model.load_state_dict(data["state_dict"])
        provenance = data["provenance"]
        if not isinstance(provenance, dict):
            raise CheckpointError("its provenance is not a mapping")
        if text_spec.max_length > model.encoder.config.max_positions:
            raise CheckpointError(f"its text spec's max_length {text_spec.max_length} is past "
                                  f"its {model.encoder.config.max_positions} positions")
        pairs = data["pairs"] if version >= 2 else \
            provenance.get("pairs", provenance.get("task") in PAIR_TASKS)
        return Checkpoint(model.eval(), text_spec, labels, dict(provenance), bool(pairs))
    except (SpecError, CheckpointError) as e:
        raise type(e)(f"{path}: {e}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint (missing or bad field {e})") from None


def check_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Name the first mismatch between weights and the model the config builds, in one line."""
    expected = model.state_dict()
    problems = [f"{k} is missing" for k in expected if k not in state_dict]
    problems += [f"{k} is not in the model" for k in state_dict if k not in expected]
    problems += [f"{k} has shape {list(state_dict[k].shape)}, the config needs "
                 f"{list(v.shape)}" for k, v in expected.items()
                 if k in state_dict and state_dict[k].shape != v.shape]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"weights do not match the config: {problems[0]}{more}")


def model_or_config(name_or_path: str) -> tuple[str, nn.Module]:
    """A named config (fresh weights) or a checkpoint file -> (title, model)."""
    configs = named_configs()
    if name_or_path in configs:
        config = configs[name_or_path]
        return f"{name_or_path} (config)", new_model("classifier", config,
                                                     default_hash_spec(config))
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".pt":
        return str(path), load(path).model
    raise InputError(f"{name_or_path!r} is neither a checkpoint file nor a named config "
                     f"({', '.join(configs)})")


def named_config(name: str) -> ModelConfig:
    configs = named_configs()
    if name not in configs:
        raise InputError(f"unknown config {name!r} (one of {', '.join(configs)})")
    return configs[name]
