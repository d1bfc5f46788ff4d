"""The loop's objectives: masked-language modelling, classification on gold labels, and
distillation from a teacher's logits. Each turns (seed, step) into a batch and a batch into a
loss."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eelbert_export.errors import InputError
from eelbert_export.hashing import HashSpec
from eelbert_export.model import hash_stage
from eelbert_export.tasks import Examples
from eelbert_export.text import CLS, SEP, TextEncoder, vocabulary
from eelbert_export.training.loop import Batch, Recipe

MASK, SPECIAL_IDS = "[MASK]", 999  # ids below 999 are [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK]


def epoch_rows(rows: int, batch: int, seed: int, step: int) -> np.ndarray:
    """The row indices of a step: a fresh permutation per epoch, seeded by (seed, epoch)."""
    per_epoch = max(1, rows // batch)
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    return order[index * batch:(index + 1) * batch]


@functools.lru_cache(maxsize=4)
def vocabulary_stage(spec: HashSpec) -> torch.Tensor:
    """The hash stage's outputs for the shipped vocabulary, computed once per spec and process."""
    module = hash_stage(spec)
    module.cache_vocabulary(vocabulary())
    return module.vocab_cache


def cache_vocabulary(model: nn.Module, device: torch.device | str = "cpu") -> None:
    """A hash model reads its stage's outputs by WordPiece id while training (not a buffer: it is
    never saved nor exported, so it moves to the device here)."""
    spec = model.encoder.hash_spec
    if spec is not None:
        model.encoder.embeddings.word.vocab_cache = vocabulary_stage(spec).to(device)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def id_batch(ids: np.ndarray, types: np.ndarray | None = None) -> Batch:
    """WordPiece id rows (0-padded) cut to their longest row, with mask and token types."""
    length = max(1, int((ids != 0).sum(axis=1).max()))
    ids = ids[:, :length]
    types = np.zeros_like(ids) if types is None else types[:, :length]
    return {"ids": torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int32)),
            "mask": torch.from_numpy((ids != 0).astype(np.int32)),
            "types": torch.from_numpy(np.ascontiguousarray(types, dtype=np.int32))}


def student_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """A classifier's logits for a batch of ids (a hash model reads its vocabulary cache) or of
    encoded texts (``tokens``: codes or ids)."""
    table = unwrap(model).encoder.config.embedding == "table"
    tokens = batch.get("tokens", batch["ids"] if table else None)
    return model(tokens, batch["mask"], batch["types"], batch.get("ids"))


# --- masked-language modelling -----------------------------------------------------------------

def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path} is missing: run `eelbert-export data prepare` first")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if not lines:
        raise InputError(f"{path}: no text")
    return lines


def pack(lines: list[str], encoder: TextEncoder, seq: int) -> np.ndarray:
    """WordPiece ids packed into [n, seq] rows: [CLS] line [SEP] line [SEP] ..., 0-padded."""
    cls, sep = encoder.special_ids[CLS], encoder.special_ids[SEP]
    rows, row = [], [cls]
    for tokens in encoder.tokenize(lines):
        ids = [i for _, i in tokens] + [sep]
        while ids:
            take = ids[: seq - len(row)]
            row += take
            ids = ids[len(take):]
            if len(row) == seq:
                rows.append(row)
                row = [cls]
    if len(row) > 1:
        rows.append(row + [0] * (seq - len(row)))
    return np.array(rows, dtype=np.int32)


def mlm_batch(rows: np.ndarray, step: int, recipe: Recipe, vocab_size: int, mask_id: int):
    """The batch of a step: rows by a per-epoch permutation, BERT's 80/10/10 dynamic masking."""
    per_epoch = max(1, len(rows) // recipe.batch)
    epoch, index = divmod(step, per_epoch)
    ids = rows[epoch_rows(len(rows), recipe.batch, recipe.seed, step)].copy()
    rng = np.random.default_rng([recipe.seed, epoch, index, 1])
    candidates = ids >= SPECIAL_IDS
    chosen = candidates & (rng.random(ids.shape) < 0.15)
    targets = np.where(chosen, ids, -100)
    roll = rng.random(ids.shape)
    ids = np.where(chosen & (roll < 0.8), mask_id, ids)
    random_ids = rng.integers(SPECIAL_IDS, vocab_size, ids.shape)
    ids = np.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
    return torch.from_numpy(ids), torch.from_numpy(targets.astype(np.int64))


def mlm_loss(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    mask = (ids != 0).to(torch.int32)
    types = torch.zeros_like(mask)
    predict = targets != -100
    tokens = ids if unwrap(model).encoder.config.embedding == "table" else None
    logits = model(tokens, mask, types, ids, predict)
    return F.cross_entropy(logits.float(), targets[predict])


class MaskedLanguageModel:
    def __init__(self, rows: np.ndarray, recipe: Recipe, vocab_size: int):
        self.data, self.recipe, self.vocab_size = rows, recipe, vocab_size
        self.rows, self.mask_id = len(rows), vocabulary().index(MASK)

    def batch(self, step: int) -> Batch:
        ids, targets = mlm_batch(self.data, step, self.recipe, self.vocab_size, self.mask_id)
        return {"ids": ids, "targets": targets}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return mlm_loss(model, batch["ids"], batch["targets"])

    def tokens(self, batch: Batch) -> int:
        return int((batch["ids"] != 0).sum())


# --- classification on gold labels -------------------------------------------------------------

class Classification:
    """Cross-entropy on the labelled texts, encoded by the model's own front end."""

    def __init__(self, data: Examples, encoder: TextEncoder, embedding: str, cached: bool,
                 recipe: Recipe):
        self.data, self.encoder, self.recipe = data, encoder, recipe
        self.embedding, self.cached, self.rows = embedding, cached, len(data.texts)

    def batch(self, step: int) -> Batch:
        pick = epoch_rows(self.rows, self.recipe.batch, self.recipe.seed, step)
        pairs = [self.data.pairs[j] for j in pick] if self.data.pairs is not None else None
        encoded = self.encoder.encode([self.data.texts[j] for j in pick], pairs)
        out = {"mask": torch.from_numpy(encoded.attention_mask),
               "types": torch.from_numpy(encoded.token_type_ids),
               "labels": torch.from_numpy(self.data.labels[pick])}
        if encoded.input_ids is not None:
            out["ids"] = torch.from_numpy(encoded.input_ids)
        if not (self.cached and encoded.input_ids is not None):
            out["tokens"] = torch.from_numpy(encoded.model_tokens(self.embedding))
        return out

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(student_logits(model, batch).float(), batch["labels"])

    def tokens(self, batch: Batch) -> int:
        return int(batch["mask"].sum())


# --- distillation ------------------------------------------------------------------------------

LOSSES = ("mse", "kl")


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float
              ) -> torch.Tensor:
    """MSE between logits, or Hinton's KL at a temperature (scaled by T^2)."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    log_target=True, reduction="batchmean") * t * t


class Distillation:
    """The teacher's logits on the transfer set as soft targets, plus cross-entropy on the gold
    label of the rows that are original training texts (gold >= 0)."""

    def __init__(self, ids: np.ndarray, types: np.ndarray | None, soft: np.ndarray,
                 gold: np.ndarray, recipe: Recipe, loss: str = "mse",
                 temperature: float = 2.0):
        self.ids, self.types, self.soft, self.gold = ids, types, soft, gold
        self.recipe, self.kind, self.temperature, self.rows = recipe, loss, temperature, len(ids)

    def batch(self, step: int) -> Batch:
        pick = np.sort(epoch_rows(self.rows, self.recipe.batch, self.recipe.seed, step))
        return id_batch(self.ids[pick], None if self.types is None else self.types[pick]) | {
            "soft": torch.from_numpy(self.soft[pick]),
            "gold": torch.from_numpy(self.gold[pick])}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = student_logits(model, batch).float()
        loss = soft_loss(logits, batch["soft"], self.kind, self.temperature)
        gold = batch["gold"] >= 0
        if bool(gold.any()):
            loss = loss + F.cross_entropy(logits[gold], batch["gold"][gold])
        return loss

    def tokens(self, batch: Batch) -> int:
        return int(batch["mask"].sum())
