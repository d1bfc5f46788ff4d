"""Evaluation: a classifier's logits on examples, and the metrics every report and the model
selection use."""

from __future__ import annotations

import numpy as np
import torch

from eelbert_export.checkpoint import Checkpoint
from eelbert_export.errors import InputError
from eelbert_export.model import Classifier
from eelbert_export.tasks import Examples, batches, examples
from eelbert_export.text import TextEncoder


def model_inputs(model: Classifier, encoder: TextEncoder, texts: list[str],
                 pairs: list[str] | None):
    """The model's inputs for texts on the model's device; a hash model with a vocabulary cache
    reads it by id instead of hashing."""
    batch = encoder.encode(texts, pairs)
    config = model.encoder.config
    cached = config.embedding == "hash" and batch.input_ids is not None \
        and model.encoder.embeddings.word.vocab_cache is not None
    tokens = None if cached else torch.from_numpy(batch.model_tokens(config.embedding))
    device = next(model.parameters()).device
    arrays = (tokens, torch.from_numpy(batch.attention_mask),
              torch.from_numpy(batch.token_type_ids),
              None if batch.input_ids is None else torch.from_numpy(batch.input_ids))
    return tuple(None if a is None else a.to(device) for a in arrays)


def predict_logits(model: Classifier, encoder: TextEncoder, data: Examples) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [model(*model_inputs(model, encoder, texts, pairs)).float().cpu()
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
    if task.pairs != ckpt.pairs:
        raise InputError(f"{task.name} has {'text pairs' if task.pairs else 'single texts'}; "
                         f"the model takes {'pairs' if ckpt.pairs else 'single texts'}")
    data = examples(task.split(split), ckpt.labels)
    return metrics(predict_logits(ckpt.model, ckpt.text_encoder(), data), data.labels)
