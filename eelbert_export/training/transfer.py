"""The transfer set a teacher labels for distillation: the task's training texts, augmented
copies of them, and windows of the pretraining corpus, as WordPiece id rows. Labels alone are too
few for a transformer that starts from nothing; a teacher's logits on many more rows are not.
The set is a pure function of the task, the corpus and the spec (seed included)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelbert_export.errors import InputError
from eelbert_export.tasks import TaskData, examples
from eelbert_export.text import CLS, SEP, TextEncoder, TextSpec, vocabulary
from eelbert_export.training.objectives import MASK, SPECIAL_IDS, pack, read_lines


@dataclass(frozen=True)
class TransferSpec:
    copies: int = 20  # augmented copies of each training text
    mask_rate: float = 0.1  # of each copy's WordPieces replaced by [MASK]
    windows: int = 200_000  # random windows of the corpus (single-text tasks)
    min_window: int = 8
    max_window: int = 62
    max_length: int = 64  # tokens per row, [CLS] and [SEP] included
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0 or self.windows < 0 or not 0 <= self.mask_rate <= 1:
            raise InputError("--copies and --windows must be at least 0 and --mask-rate in "
                             f"[0, 1] (got {self.copies}, {self.windows}, {self.mask_rate})")
        if not 3 <= self.max_length <= 512:
            raise InputError(f"--transfer-length must be in [3, 512], got {self.max_length}")
        if not 1 <= self.min_window <= self.max_window:
            raise InputError(f"corpus windows of {self.min_window}-{self.max_window} tokens")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TransferSet:
    ids: np.ndarray  # int32 [rows, max_length], 0-padded
    types: np.ndarray | None  # int32 token types for text pairs, else None
    gold: np.ndarray  # int64 label index of the original training texts, -1 elsewhere
    spec: TransferSpec
    counts: dict  # rows of each kind

    @property
    def key(self) -> str:
        """The content's sha256: what the teacher's label cache is keyed by."""
        digest = hashlib.sha256(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        for array in (self.ids, self.types, self.gold):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {"rows": len(self.ids), **self.counts, "spec": self.spec.to_dict(),
                "sha256": self.key}


def build(task: TaskData, corpus: Path | None, spec: TransferSpec) -> TransferSet:
    """The training texts, ``copies`` masked copies of each (every second one of a single text
    also cut to a random contiguous window, a short phrase), and ``windows`` corpus windows with
    any [CLS]/[SEP] inside masked; every row [CLS] ... [SEP] (pairs: [CLS] a [SEP] b [SEP])."""
    data = examples(task.train, task.labels)
    encoder = TextEncoder(TextSpec(max_length=spec.max_length), None)
    batch = encoder.encode(data.texts, data.pairs, pad_to=spec.max_length)
    ids, types = batch.input_ids, batch.token_type_ids
    mask_id, cls, sep = (vocabulary().index(t) for t in (MASK, CLS, SEP))
    rows, row_types = [ids], [types]
    for copy in range(spec.copies):
        rng = np.random.default_rng([spec.seed, 1, copy])
        masked = np.where((ids >= SPECIAL_IDS) & (rng.random(ids.shape) < spec.mask_rate),
                          mask_id, ids).astype(np.int32)
        if copy % 2 and data.pairs is None:
            masked = phrase_windows(masked, rng, cls, sep)
        rows.append(masked)
        row_types.append(types)
    windows = np.zeros((0, spec.max_length), dtype=np.int32)
    if spec.windows and data.pairs is None:
        if corpus is None:
            raise InputError("corpus windows need the prepared corpus (--corpus)")
        windows = corpus_windows(corpus, encoder, spec, mask_id, cls, sep)
        rows.append(windows)
        row_types.append(np.zeros_like(windows))
    gold = np.full(sum(len(r) for r in rows), -1, dtype=np.int64)
    gold[:len(ids)] = data.labels
    return TransferSet(np.concatenate(rows), None if data.pairs is None else
                       np.concatenate(row_types), gold, spec,
                       {"originals": len(ids), "copies": len(ids) * spec.copies,
                        "corpus_windows": len(windows)})


def phrase_windows(ids: np.ndarray, rng: np.random.Generator, cls: int, sep: int) -> np.ndarray:
    """Each row cut to a random contiguous window of its text, rewrapped in [CLS] ... [SEP]."""
    out = np.zeros_like(ids)
    lengths = (ids != 0).sum(axis=1) - 2  # the text's tokens between [CLS] and [SEP]
    for r, n in enumerate(lengths):
        width = int(rng.integers(1, n + 1)) if n > 0 else 0
        start = 1 + int(rng.integers(0, n - width + 1)) if n > 0 else 1
        out[r, :width + 2] = [cls, *ids[r, start:start + width], sep]
    return out


def corpus_windows(corpus: Path, encoder: TextEncoder, spec: TransferSpec, mask_id: int,
                   cls: int, sep: int) -> np.ndarray:
    packed = pack(read_lines(corpus / "train.txt"), encoder, 128)[:-1]  # the last is padded
    rng = np.random.default_rng([spec.seed, 2])
    high = min(spec.max_window, spec.max_length - 2, packed.shape[1])
    widths = rng.integers(min(spec.min_window, high), high + 1, spec.windows)
    which = rng.integers(0, len(packed), spec.windows)
    starts = rng.integers(0, packed.shape[1] - widths + 1)
    out = np.zeros((spec.windows, spec.max_length), dtype=np.int32)
    for r, (row, start, width) in enumerate(zip(which, starts, widths)):
        window = packed[row, start:start + width]
        out[r, :width + 2] = [cls, *np.where((window == cls) | (window == sep), mask_id,
                                             window), sep]
    return out
