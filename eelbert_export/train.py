"""Training: masked-language-model pretraining and classification fine-tuning on a 2-core CPU.

Every batch is a pure function of (seed, step), so ``--resume`` continues exactly where a run
stopped. Under ``torchrun --nproc-per-node N`` pretraining runs data-parallel: each process
takes its share of the same global batch and DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from eelbert_export import checkpoint
from eelbert_export.checkpoint import Checkpoint, new_model
from eelbert_export.errors import InputError
from eelbert_export.files import atomic_path, check_writable
from eelbert_export.hashing import HashSpec
from eelbert_export.model import (
    Classifier,
    MaskedLM,
    ModelConfig,
    default_hash_spec,
    hash_stage,
    named_configs,
)
from eelbert_export.tasks import Examples, TaskData, batches, examples
from eelbert_export.text import CLS, SEP, TextEncoder, TextSpec, vocabulary

MASK, SPECIAL_IDS = "[MASK]", 999  # ids below 999 are [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK]


@dataclass
class Recipe:
    """The optimisation recipe shared by every model in a comparison."""

    steps: int
    batch: int
    lr: float
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    seq: int = 128
    checkpoint_every: int = 200
    eval_every: int = 250  # fine-tuning: dev checks between epoch ends, for model selection

    def __post_init__(self) -> None:
        if min(self.steps, self.batch, self.seq, self.checkpoint_every, self.eval_every) < 1 \
                or not self.lr > 0:
            raise InputError("steps, batch, seq, checkpoint and eval intervals must be at least "
                             f"1 and the learning rate positive (got {self})")


def machine() -> str:
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def schedule(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """Linear warm-up, then linear decay to zero at the last step."""
    total, warm = recipe.steps, max(1, int(recipe.warmup * recipe.steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=recipe.lr)


@functools.lru_cache(maxsize=4)
def vocabulary_stage(spec: HashSpec) -> torch.Tensor:
    """The hash stage's outputs for the shipped vocabulary, computed once per spec and process."""
    module = hash_stage(spec)
    module.cache_vocabulary(vocabulary())
    return module.vocab_cache


def cache_vocabulary(model: nn.Module) -> None:
    spec = model.encoder.hash_spec
    if spec is not None:
        model.encoder.embeddings.word.vocab_cache = vocabulary_stage(spec)


# --- pretraining ---------------------------------------------------------------------------------

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
    order = np.random.default_rng([recipe.seed, epoch]).permutation(len(rows))
    ids = rows[order[index * recipe.batch:(index + 1) * recipe.batch]].copy()
    rng = np.random.default_rng([recipe.seed, epoch, index, 1])
    candidates = ids >= SPECIAL_IDS
    chosen = candidates & (rng.random(ids.shape) < 0.15)
    targets = np.where(chosen, ids, -100)
    roll = rng.random(ids.shape)
    ids = np.where(chosen & (roll < 0.8), mask_id, ids)
    random_ids = rng.integers(SPECIAL_IDS, vocab_size, ids.shape)
    ids = np.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
    return torch.from_numpy(ids), torch.from_numpy(targets.astype(np.int64))


def mlm_loss(model: MaskedLM | nn.Module, ids: torch.Tensor, targets: torch.Tensor
             ) -> torch.Tensor:
    mask = (ids != 0).to(torch.int32)
    types = torch.zeros_like(mask)
    predict = targets != -100
    tokens = ids if _table(model) else None
    logits = model(tokens, mask, types, ids, predict)
    return F.cross_entropy(logits, targets[predict])


def _table(model: nn.Module) -> bool:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return inner.encoder.config.embedding == "table"


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def pretrain(config: ModelConfig, hash_spec, corpus: Path, out: Path, recipe: Recipe,
             resume: bool = False, command: str = "", force: bool = False) -> dict:
    check_writable(out, force)
    rank, world = distributed()
    if recipe.batch % world:
        raise InputError(f"--batch {recipe.batch} must be divisible by {world} processes")
    torch.manual_seed(recipe.seed)
    text_spec = TextSpec(max_length=recipe.seq)
    encoder = TextEncoder(text_spec, None if hash_spec is None else hash_spec.max_chars)
    rows = pack(read_lines(corpus / "train.txt"), encoder, recipe.seq)
    valid = pack(read_lines(corpus / "valid.txt"), encoder, recipe.seq)
    if len(rows) < recipe.batch:
        raise InputError(f"the corpus packs into {len(rows)} rows, fewer than --batch")
    model = new_model("mlm", config, hash_spec)
    check_space(out, model)
    cache_vocabulary(model)
    optimizer = optimizer_for(model, recipe)
    scheduler = schedule(optimizer, recipe)
    state_path = out.with_name(out.name + ".state")
    start, elapsed = 0, 0.0
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, elapsed = state["step"], state["elapsed"]
    trained = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) \
        if world > 1 else model
    mask_id = vocabulary().index(MASK)
    bar = tqdm(total=recipe.steps, initial=start, desc=f"pretrain {config.name}",
               disable=rank != 0, file=sys.stderr, dynamic_ncols=True)
    t0, tokens_seen, loss_avg = time.perf_counter(), 0, None
    model.train()
    for step in range(start, recipe.steps):
        ids, targets = mlm_batch(rows, step, recipe, config.vocab_size, mask_id)
        ids, targets = ids[rank::world], targets[rank::world]
        torch.manual_seed(recipe.seed * 1_000_003 + step)  # dropout, reproducible on resume
        loss = mlm_loss(trained, ids, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        tokens_seen += int((ids != 0).sum()) * world
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        rate = tokens_seen / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss_avg:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
        bar.update()
        done = step + 1
        if rank == 0 and done % recipe.checkpoint_every == 0 and done < recipe.steps:
            with atomic_path(state_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "step": done,
                            "elapsed": elapsed + time.perf_counter() - t0}, tmp)
    bar.close()
    session = time.perf_counter() - t0
    elapsed += session
    model.eval()
    with torch.no_grad():
        valid_loss = float(np.mean([mlm_loss(model, *mlm_batch(valid, i, recipe,
                                     config.vocab_size, mask_id)).item()
                                    for i in range(max(1, len(valid) // recipe.batch))]))
    report = {"steps": recipe.steps, "batch": recipe.batch, "seq": recipe.seq, "lr": recipe.lr,
              "seed": recipe.seed, "processes": world, "train_rows": len(rows),
              "final_train_loss": loss_avg, "valid_mlm_loss": valid_loss,
              "train_seconds": round(elapsed, 1),
              "tokens_per_second": round(tokens_seen / max(session, 1e-9)),
              "hardware": machine(), "command": command}
    if rank == 0:
        save_trained(out, Checkpoint(model, text_spec, [], {"pretraining": report}))
        state_path.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return report


# --- fine-tuning -------------------------------------------------------------------------------

def model_inputs(model: Classifier, encoder: TextEncoder, texts: list[str],
                 pairs: list[str] | None):
    batch = encoder.encode(texts, pairs)
    config = model.encoder.config
    cached = config.embedding == "hash" and batch.input_ids is not None \
        and model.encoder.embeddings.word.vocab_cache is not None
    tokens = None if cached else torch.from_numpy(batch.model_tokens(config.embedding))
    return tokens, *map(torch.from_numpy, (batch.attention_mask, batch.token_type_ids)), \
        None if batch.input_ids is None else torch.from_numpy(batch.input_ids)


def predict_logits(model: Classifier, encoder: TextEncoder, data: Examples) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [model(*model_inputs(model, encoder, texts, pairs))
               for texts, pairs in batches(data)]
    return torch.cat(out).numpy()


def metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy; balanced accuracy (the mean recall of the labels: model selection uses it, since
    label balance differs between splits); F1 of the second label for two labels (spam, fresh,
    true), else macro."""
    predicted = logits.argmax(axis=1)
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in range(logits.shape[1])
               if np.any(labels == c)]
    classes = [1] if logits.shape[1] == 2 else range(logits.shape[1])
    f1s = []
    for c in classes:
        tp = int(((predicted == c) & (labels == c)).sum())
        wrong = int(((predicted == c) != (labels == c)).sum())
        f1s.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
    return {"examples": len(labels), "accuracy": float((predicted == labels).mean()),
            "balanced_accuracy": float(np.mean(recalls)), "f1": float(np.mean(f1s))}


def evaluate(ckpt: Checkpoint, task, split: str) -> dict:
    """Metrics of a classifier checkpoint on one split of a task (``tasks.TaskData``)."""
    if ckpt.kind != "classifier":
        raise InputError("a pretrained encoder has no classifier; fine-tune it first")
    if sorted(task.labels) != sorted(ckpt.labels):
        raise InputError(f"the model's labels {ckpt.labels} are not the task's {task.labels}")
    data = examples(task.split(split), ckpt.labels)
    return metrics(predict_logits(ckpt.model, ckpt.text_encoder(), data), data.labels)


def starting_point(init: str, spec_base: HashSpec) -> Checkpoint:
    """What ``finetune --init`` names: a checkpoint, or a named config's freshly initialised
    encoder (its hash spec's fields over ``spec_base``)."""
    if init not in named_configs():
        return checkpoint.load(init)
    config = checkpoint.named_config(init)
    torch.manual_seed(0)
    model = new_model("mlm", config, default_hash_spec(config, spec_base))
    return Checkpoint(model, TextSpec())


def finetune(init: Checkpoint, task: TaskData, out: Path, recipe: Recipe, text_spec: TextSpec,
             provenance: dict, force: bool = False) -> dict:
    """Train a classifier from ``init``'s encoder on a task; keep the weights with the best dev
    balanced accuracy, checked every ``recipe.eval_every`` steps and at the end. ``provenance``
    (how it was started: the init, the command) is stored with the task's and the report."""
    check_writable(out, force)
    if text_spec.max_length > init.config.max_positions:
        raise InputError(f"--max-length {text_spec.max_length} is past the model's "
                         f"{init.config.max_positions} positions")
    check_space(out, init.model)
    if not task.train or not task.dev:
        raise InputError(f"{task.name}: {len(task.train)} training and {len(task.dev)} dev rows: "
                         "fine-tuning needs both (a CSV's dev set is about 10% of its rows)")
    provenance = provenance | {"task": task.name, "data": task.provenance} | \
        {k: v for k, v in init.provenance.items() if k == "pretraining"}
    labels = task.labels
    train, dev = examples(task.train, labels), examples(task.dev, labels)
    torch.manual_seed(recipe.seed)
    model = new_model("classifier", init.config, init.hash_spec, len(labels))
    model.encoder.load_state_dict(init.model.encoder.state_dict())
    if text_spec.mode == "wordpiece":
        cache_vocabulary(model)
    encoder = TextEncoder(text_spec, init.max_chars)
    optimizer = optimizer_for(model, recipe)
    per_epoch = math.ceil(len(train.texts) / recipe.batch)
    epochs = math.ceil(recipe.steps / per_epoch)
    scheduler = schedule(optimizer, recipe)
    best, history, t0, tokens = None, [], time.perf_counter(), 0
    bar = tqdm(total=recipe.steps, desc="finetune", file=sys.stderr, dynamic_ncols=True)
    for step in range(recipe.steps):
        epoch, index = divmod(step, per_epoch)
        if index == 0:
            order = np.random.default_rng([recipe.seed, epoch]).permutation(len(train.texts))
            model.train()
        pick = order[index * recipe.batch:(index + 1) * recipe.batch]
        pairs = [train.pairs[j] for j in pick] if train.pairs is not None else None
        inputs = model_inputs(model, encoder, [train.texts[j] for j in pick], pairs)
        torch.manual_seed(recipe.seed * 1_000_003 + step)
        loss = F.cross_entropy(model(*inputs), torch.from_numpy(train.labels[pick]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        tokens += int(inputs[1].sum())
        bar.set_postfix(loss=f"{loss.item():.3f}",
                        tok_s=f"{tokens / (time.perf_counter() - t0):,.0f}", refresh=False)
        bar.update()
        done = step + 1
        if done % recipe.eval_every and done != recipe.steps:
            continue
        dev_metrics = metrics(predict_logits(model, encoder, dev), dev.labels)
        model.train()
        history.append({"step": done, "epoch": epoch + 1, "loss": loss.item(), **dev_metrics})
        if best is None or dev_metrics["balanced_accuracy"] > best[0]["balanced_accuracy"]:
            best = (dev_metrics, {k: v.clone() for k, v in model.state_dict().items()}, done)
    bar.close()
    elapsed = time.perf_counter() - t0
    model.load_state_dict(best[1])
    report = {"steps": recipe.steps, "epochs": epochs, "batch": recipe.batch, "lr": recipe.lr,
              "seed": recipe.seed, "eval_every": recipe.eval_every, "best_step": best[2],
              "dev": best[0], "history": history,
              "train_seconds": round(elapsed, 1),
              "tokens_per_second": round(tokens / max(elapsed, 1e-9)), "hardware": machine()}
    save_trained(out, Checkpoint(model.eval(), text_spec, labels,
                                 provenance | {"finetuning": report}, task.pairs))
    return report


def check_space(out: Path, model: nn.Module) -> None:
    """Refuse to start training that could not be saved: twice the weights' bytes free."""
    needed = 2 * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    free = shutil.disk_usage(Path(out).parent).free
    if free < needed:
        raise InputError(f"cannot write {out}: {free:,} bytes free in {Path(out).parent}, the "
                         f"checkpoint needs about {needed:,}")


def save_trained(out: Path, ckpt: Checkpoint) -> None:
    """Training takes hours: if ``out`` cannot be written after all (the disk filled up), the
    model goes to the temporary folder and the one-line error says where."""
    try:
        checkpoint.save(out, ckpt)
    except InputError as e:
        rescue = Path(tempfile.gettempdir()) / f"{Path(out).stem}.rescued-{os.getpid()}.pt"
        try:
            checkpoint.save(rescue, ckpt)
        except InputError:
            raise InputError(f"{e}; the trained model could not be saved anywhere") from None
        raise InputError(f"{e}; the trained model was saved to {rescue}") from None
