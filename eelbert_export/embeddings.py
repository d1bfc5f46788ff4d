"""The word-embedding kinds, each defined once (torch-free): what its integer stage computes
from a token's codes (the stage every artifact is checked against bit for bit), its Python
reference, the torch module that computes it (``model.py``, as converters name it), and how it
describes itself. A ``HashSpec`` names its kind (``spec.kind``); the model, the cards, the
collision report and the exporters ask the kind instead of testing ``table > 0`` themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eelbert_export.hashing import HashSpec, bucket_reference, embed_reference


@dataclass(frozen=True)
class EmbeddingKind:
    name: str
    hashed: bool  # token_codes in (a hash stage), else token ids into a table
    stage_dtype: str | None  # the integer stage's output: float32 values or int32 row ids
    stage_module: str | None  # the torch module of the stage in model.py
    reference: Callable[[list[str], HashSpec], np.ndarray] | None
    describe: Callable[[HashSpec | None], str]
    # the stage's output per token: the embedding's values, or the table's row ids
    stage_shape: Callable[[HashSpec], tuple[int, ...]] | None = None


FIXED_HASH = EmbeddingKind(
    "fixed-hash", True, "float32", "HashEmbedding", embed_reference,
    lambda spec: f"fixed hash embedding ({spec.dim} dims)", lambda spec: (spec.dim,))
NGRAM_TABLE = EmbeddingKind(
    "ngram-table", True, "int32", "NgramBuckets", bucket_reference,
    lambda spec: f"n-gram table embedding ({spec.table:,} rows x {spec.dim}, hashed)",
    lambda spec: (spec.gram_slots, spec.probes))
TABLE = EmbeddingKind("table", False, None, None, None, lambda spec: "embedding table")
KINDS = {kind.name: kind for kind in (FIXED_HASH, NGRAM_TABLE, TABLE)}
HASHED = tuple(kind for kind in KINDS.values() if kind.hashed)


def kind_of(spec: HashSpec | None) -> EmbeddingKind:
    """A model's kind from its hash spec (None: a table model)."""
    return TABLE if spec is None else KINDS[spec.kind]


def stage_reference(tokens: list[str], spec: HashSpec) -> np.ndarray:
    """What the hash stage must compute for ``tokens``, by the kind's Python reference."""
    return kind_of(spec).reference(tokens, spec)
