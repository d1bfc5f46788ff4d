"""Distillation: a teacher's logits on a large transfer set, learned by the tiny student, plus
the gold labels of the original training texts (shared/notes' measured recipe)."""

from __future__ import annotations

from pathlib import Path

import torch

from eelbert_export.checkpoint import Checkpoint
from eelbert_export.errors import InputError
from eelbert_export.tasks import TaskData
from eelbert_export.text import TextEncoder, TextSpec
from eelbert_export.training import transfer as transfers
from eelbert_export.training.finetune import dev_check, save_student, student
from eelbert_export.training.loop import CPU, Recipe, fit
from eelbert_export.training.objectives import LOSSES, Distillation
from eelbert_export.training.teacher import LABEL_DTYPES, evaluate, label, open_teacher


def distill(init: Checkpoint, teacher_dir: Path, task: TaskData, out: Path, recipe: Recipe,
            spec: transfers.TransferSpec, text_spec: TextSpec, corpus: Path, cache: Path,
            provenance: dict, loss: str = "mse", temperature: float = 2.0,
            force: bool = False, resume: bool = False, label_batch: int = 256,
            label_dtype: str = "bfloat16", device: torch.device = CPU) -> dict:
    """Train a classifier from ``init``'s encoder on the teacher's logits for the transfer set;
    keep the weights of the best dev balanced accuracy. Every input is checked before the
    transfer set is built; the teacher's labels are cached (``cache``) and reused."""
    if loss not in LOSSES or not temperature > 0:
        raise InputError(f"--loss must be one of {', '.join(LOSSES)} and --temperature "
                         f"positive (got {loss}, {temperature})")
    if text_spec.mode != "wordpiece":
        raise InputError("distillation feeds WordPiece ids: the student needs --text-mode "
                         "wordpiece")
    if spec.max_length > init.config.max_positions:
        raise InputError(f"--transfer-length {spec.max_length} is past the model's "
                         f"{init.config.max_positions} positions")
    if label_dtype not in LABEL_DTYPES:
        raise InputError(f"--label-dtype must be one of {', '.join(LABEL_DTYPES)}")
    torch.manual_seed(recipe.seed)
    model = student(init, task, out, text_spec, force, device)
    teacher = open_teacher(teacher_dir, task)
    if spec.windows and not task.pairs and not (corpus / "train.txt").is_file():
        raise InputError(f"{corpus / 'train.txt'} is missing: run `eelbert-export data prepare` "
                         "(or --windows 0)")
    transfer = transfers.build(task, corpus, spec)
    soft = label(teacher, transfer, cache, label_batch, device, label_dtype)
    teacher.model.cpu()
    figures = {s: evaluate(teacher, task, s) for s in ("dev", "test")
               if not (teacher.report and s in teacher.report)}
    objective = Distillation(transfer.ids, transfer.types, soft, transfer.gold, recipe, loss,
                             temperature)
    encoder = TextEncoder(text_spec, init.max_chars)
    result = fit(model, objective, recipe, desc="distill", device=device,
                 state_path=out.with_name(out.name + ".state"), resume=resume,
                 dev_check=dev_check(task, encoder))
    report = result.report(recipe, loss=loss, temperature=temperature,
                           passes=round(recipe.steps * recipe.batch / len(transfer.ids), 2),
                           teacher=teacher.describe() | figures, transfer=transfer.describe(),
                           label_dtype=label_dtype)
    save_student(out, model, text_spec, task, init, provenance | {"distillation": report})
    out.with_name(out.name + ".state").unlink(missing_ok=True)
    return report
