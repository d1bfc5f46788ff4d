"""Masked-language-model pretraining on the prepared corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eelbert_export.checkpoint import Checkpoint, new_model
from eelbert_export.errors import InputError
from eelbert_export.files import check_writable
from eelbert_export.hashing import HashSpec
from eelbert_export.model import ModelConfig
from eelbert_export.text import TextEncoder, TextSpec
from eelbert_export.training.loop import CPU, Recipe, finish, fit
from eelbert_export.training.objectives import (
    MaskedLanguageModel,
    cache_vocabulary,
    mlm_loss,
    pack,
    read_lines,
)
from eelbert_export.training.saving import check_space, save_trained


def pretrain(config: ModelConfig, hash_spec: HashSpec | None, corpus: Path, out: Path,
             recipe: Recipe, resume: bool = False, command: str = "", force: bool = False,
             device: torch.device = CPU) -> dict:
    check_writable(out, force)
    torch.manual_seed(recipe.seed)
    text_spec = TextSpec(max_length=recipe.seq)
    encoder = TextEncoder(text_spec, None if hash_spec is None else hash_spec.max_chars)
    rows = pack(read_lines(corpus / "train.txt"), encoder, recipe.seq)
    valid = pack(read_lines(corpus / "valid.txt"), encoder, recipe.seq)
    if len(rows) < recipe.batch:
        raise InputError(f"the corpus packs into {len(rows)} rows, fewer than --batch")
    model = new_model("mlm", config, hash_spec)
    check_space(out, model)
    cache_vocabulary(model, device)
    objective = MaskedLanguageModel(rows, recipe, config.vocab_size)
    result = fit(model, objective, recipe, desc=f"pretrain {config.name}", device=device,
                 state_path=out.with_name(out.name + ".state"), resume=resume)
    held_out = MaskedLanguageModel(valid, recipe, config.vocab_size)
    with torch.no_grad():
        valid_loss = float(np.mean([
            mlm_loss(model, *(t.to(device) for t in held_out.batch(i).values())).item()
            for i in range(max(1, len(valid) // recipe.batch))]))
    report = result.report(recipe, seq=recipe.seq, train_rows=len(rows),
                           valid_mlm_loss=valid_loss, command=command)

    def save() -> None:
        save_trained(out, Checkpoint(model.cpu(), text_spec, [], {"pretraining": report}))
        out.with_name(out.name + ".state").unlink(missing_ok=True)
    finish(save)
    return report
