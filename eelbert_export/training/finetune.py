"""Classification fine-tuning on gold labels, with dev-set model selection."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from eelbert_export.checkpoint import Checkpoint, new_model
from eelbert_export.errors import InputError
from eelbert_export.files import check_writable
from eelbert_export.tasks import TaskData, examples
from eelbert_export.text import TextEncoder, TextSpec
from eelbert_export.training.evaluation import metrics, predict_logits
from eelbert_export.training.loop import CPU, Recipe, finish, fit
from eelbert_export.training.objectives import Classification, cache_vocabulary
from eelbert_export.training.saving import check_space, save_trained


def student(init: Checkpoint, task: TaskData, out: Path, text_spec: TextSpec, force: bool,
            device: torch.device):
    """The classifier to train from ``init``'s encoder, after every check that can fail before
    training: the output, the positions, the disk, the splits."""
    check_writable(out, force)
    if text_spec.max_length > init.config.max_positions:
        raise InputError(f"--max-length {text_spec.max_length} is past the model's "
                         f"{init.config.max_positions} positions")
    check_space(out, init.model)
    if not task.train or not task.dev:
        raise InputError(f"{task.name}: {len(task.train)} training and {len(task.dev)} dev rows: "
                         "fine-tuning needs both (a CSV's dev set is about 10% of its rows)")
    model = new_model("classifier", init.config, init.hash_spec, len(task.labels))
    model.encoder.load_state_dict(init.model.encoder.state_dict())
    if text_spec.mode == "wordpiece":
        cache_vocabulary(model, device)
    return model


def dev_check(task: TaskData, encoder: TextEncoder):
    dev = examples(task.dev, task.labels)
    return lambda model: metrics(predict_logits(model, encoder, dev), dev.labels)


def save_student(out: Path, model, text_spec: TextSpec, task: TaskData, init: Checkpoint,
                 provenance: dict) -> None:
    """The trained classifier with its provenance: how it was started (init, command), the
    task's data, the init's pretraining, and the reports under their training kinds."""
    provenance = provenance | {"task": task.name, "data": task.provenance} | \
        {k: v for k, v in init.provenance.items() if k == "pretraining"}
    finish(lambda: save_trained(out, Checkpoint(model.cpu().eval(), text_spec, task.labels,
                                                provenance, task.pairs)))


def finetune(init: Checkpoint, task: TaskData, out: Path, recipe: Recipe, text_spec: TextSpec,
             provenance: dict, force: bool = False, device: torch.device = CPU,
             resume: bool = False) -> dict:
    """Train a classifier from ``init``'s encoder on a task; keep the weights with the best dev
    balanced accuracy, checked every ``recipe.eval_every`` steps and at the end."""
    torch.manual_seed(recipe.seed)
    model = student(init, task, out, text_spec, force, device)
    encoder = TextEncoder(text_spec, init.max_chars)
    train = examples(task.train, task.labels)
    objective = Classification(train, encoder, init.config.embedding,
                               text_spec.mode == "wordpiece", recipe)
    result = fit(model, objective, recipe, desc="finetune", device=device,
                 state_path=out.with_name(out.name + ".state"), resume=resume,
                 dev_check=dev_check(task, encoder))
    report = result.report(recipe, epochs=math.ceil(recipe.steps * recipe.batch / len(train.texts)))
    save_student(out, model, text_spec, task, init, provenance | {"finetuning": report})
    out.with_name(out.name + ".state").unlink(missing_ok=True)
    return report
