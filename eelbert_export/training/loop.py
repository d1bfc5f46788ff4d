"""The one training loop: pretraining, fine-tuning, distillation and the teacher's fine-tuning
are objectives of it, so resume, devices, progress, dev checks and data parallelism work the
same for all four.

Every batch is a pure function of (seed, step), and dropout is reseeded from them, so
``--resume`` continues exactly where a run stopped. Under ``torchrun --nproc-per-node N`` each
process takes its share of the same global batch and DistributedDataParallel averages the
gradients.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from eelbert_export.errors import EelbertError, InputError
from eelbert_export.files import atomic_path

DEVICES = ("auto", "cpu", "cuda")
CPU = torch.device("cpu")


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
    eval_every: int = 250  # dev checks between epoch ends, for model selection

    def __post_init__(self) -> None:
        if min(self.steps, self.batch, self.seq, self.checkpoint_every, self.eval_every) < 1 \
                or not 0 < self.lr < 1:
            raise InputError("steps, batch, seq, checkpoint and eval intervals must be at least "
                             f"1 and the learning rate in (0, 1) (got {self})")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"the seed must be in [0, 2**32), got {self.seed}")


def device_for(name: str) -> torch.device:
    """``--device``: auto takes CUDA where there is one; cuda without one is refused up front."""
    if name not in DEVICES:
        raise InputError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available on this machine")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def machine(device: torch.device | None = None) -> str:
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def schedule(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """Linear warm-up, then linear decay to zero at the last step."""
    total, warm = recipe.steps, max(1, int(recipe.warmup * recipe.steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))


def optimizer_for(model: nn.Module, recipe: Recipe, head_lr: dict[str, float] | None = None
                  ) -> torch.optim.AdamW:
    """AdamW without weight decay on biases, norms and embeddings; ``head_lr`` maps a parameter
    name prefix to its own learning rate (a pretrained teacher's new head learns faster)."""
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        decay = recipe.weight_decay if p.ndim >= 2 and "embeddings" not in name else 0.0
        lr = next((v for k, v in (head_lr or {}).items() if name.startswith(k)), recipe.lr)
        groups.setdefault((decay, lr), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": d, "lr": lr}
                              for (d, lr), ps in groups.items()], lr=recipe.lr)


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun."""
    raw = os.environ.get("WORLD_SIZE", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"WORLD_SIZE must be a positive integer, got {raw!r}")
    world = int(raw)
    if world > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or "RANK" not in os.environ:
            raise InputError(f"WORLD_SIZE={world} but no RANK/MASTER_ADDR: start data-parallel "
                             "training with torchrun --nproc-per-node N")
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


Batch = dict[str, torch.Tensor]


class Objective(Protocol):
    """What a kind of training adds to the loop: its batches and its loss."""

    rows: int  # examples per epoch (for the report)

    def batch(self, step: int) -> Batch:
        """The whole global batch of a step, a pure function of (seed, step)."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...

    def tokens(self, batch: Batch) -> int:
        """Real (unpadded) tokens in a batch, for the throughput figure."""


@dataclass
class Fit:
    """What a run of the loop produced: the kept weights are loaded into the model."""

    steps: int
    best_step: int
    dev: dict | None
    history: list[dict] = field(default_factory=list)
    final_loss: float = float("nan")
    train_seconds: float = 0.0
    tokens_per_second: int = 0
    processes: int = 1
    hardware: str = ""

    def report(self, recipe: Recipe, **extra) -> dict:
        return {"steps": recipe.steps, "batch": recipe.batch, "lr": recipe.lr,
                "seed": recipe.seed, "eval_every": recipe.eval_every,
                "best_step": self.best_step, "dev": self.dev, "history": self.history,
                "final_train_loss": self.final_loss,
                "train_seconds": round(self.train_seconds, 1),
                "tokens_per_second": self.tokens_per_second, "processes": self.processes,
                "hardware": self.hardware} | extra


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def fit(model: nn.Module, objective: Objective, recipe: Recipe, *, desc: str,
        device: torch.device = CPU, state_path: Path | None = None,
        resume: bool = False, dev_check: Callable[[nn.Module], dict] | None = None,
        optimizer: torch.optim.Optimizer | None = None) -> Fit:
    """Train ``model`` for ``recipe.steps``; with ``dev_check`` (dev metrics of the model) keep
    the weights of the best dev balanced accuracy, checked every ``eval_every`` steps and at the
    end, else the last. Every ``checkpoint_every`` steps the whole state goes to ``state_path``,
    which ``resume`` continues from; it is removed when the run completes."""
    rank, world = distributed()
    if recipe.batch % world:
        raise InputError(f"--batch {recipe.batch} must be divisible by {world} processes")
    model.to(device)
    optimizer = optimizer or optimizer_for(model, recipe)
    scheduler = schedule(optimizer, recipe)
    start, elapsed, best, history = 0, 0.0, None, []
    if resume and state_path is not None and state_path.exists():
        state = load_state(state_path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise InputError(f"{state_path}: the saved state is from another model or recipe "
                             f"({str(e).splitlines()[0][:120]}); remove it to start over") \
                from None
        scheduler.load_state_dict(state["scheduler"])
        start, elapsed = state["step"], state.get("elapsed", 0.0)
        history, best = state.get("history", []), state.get("best")  # older states had neither
    trained = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) \
        if world > 1 else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)
    with tqdm(total=recipe.steps, initial=start, desc=desc, disable=rank != 0,
              file=sys.stderr, dynamic_ncols=True) as bar:  # closed, not left to __del__
        t0, tokens, loss_avg = time.perf_counter(), 0, float("nan")
        model.train()
        for step in range(start, recipe.steps):
            batch = {k: v[rank::world] for k, v in objective.batch(step).items()}
            torch.manual_seed(recipe.seed * 1_000_003 + step)  # dropout, reproducible on resume
            with autocast:
                loss = objective.loss(trained, to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            value = loss.item()
            if not math.isfinite(value):
                raise EelbertError(f"training diverged: the loss is {value} at step {step + 1} "
                                   f"(lower --lr; it is {recipe.lr}); nothing was saved")
            loss_avg = value if loss_avg != loss_avg else 0.98 * loss_avg + 0.02 * value
            tokens += objective.tokens(batch) * world
            shown = {"dev": f"{history[-1]['balanced_accuracy']:.3f}"} if history else {}
            bar.set_postfix(loss=f"{loss_avg:.3f}", **shown,
                            tok_s=f"{tokens / (time.perf_counter() - t0):,.0f}", refresh=False)
            bar.update()
            done = step + 1
            if dev_check is not None and (done % recipe.eval_every == 0 or done == recipe.steps):
                metrics = dev_check(model)
                model.train()
                history.append({"step": done, "loss": value, **metrics})
                if best is None or metrics["balanced_accuracy"] > best["dev"]["balanced_accuracy"]:
                    best = {"dev": metrics, "step": done,
                            "weights": {k: v.detach().cpu().clone()
                                        for k, v in model.state_dict().items()}}
            if rank == 0 and state_path is not None and done % recipe.checkpoint_every == 0 \
                    and done < recipe.steps:
                with atomic_path(state_path) as tmp:
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "step": done,
                                "elapsed": elapsed + time.perf_counter() - t0,
                                "history": history, "best": best}, tmp)
    session = time.perf_counter() - t0
    if best is not None:
        model.load_state_dict(best["weights"])
    model.eval()
    return Fit(steps=recipe.steps, best_step=best["step"] if best else recipe.steps,
               dev=best["dev"] if best else None, history=history, final_loss=loss_avg,
               train_seconds=elapsed + session,
               tokens_per_second=round(tokens / max(session, 1e-9)), processes=world,
               hardware=machine(device))


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports truncation and foreign files in many types
        raise InputError(f"{path}: unreadable training state ({type(e).__name__}); remove it "
                         "to start over") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= state.keys():
        raise InputError(f"{path}: not an eelbert-export training state; remove it to start over")
    return state


def finish(rank_zero_work: Callable[[], None]) -> None:
    """Run the saving step on rank 0 only, then close the process group."""
    rank, world = distributed()
    if rank == 0:
        rank_zero_work()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
