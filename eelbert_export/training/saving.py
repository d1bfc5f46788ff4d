"""Starting points and saving: what ``--init`` names, and a save that never loses hours of
training to a full disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from eelbert_export import checkpoint
from eelbert_export.checkpoint import Checkpoint, new_model
from eelbert_export.errors import InputError
from eelbert_export.hashing import HashSpec
from eelbert_export.model import default_hash_spec, named_configs
from eelbert_export.text import TextSpec


def starting_point(init: str, spec_base: HashSpec) -> Checkpoint:
    """What ``--init`` names: a checkpoint, or a named config's freshly initialised encoder (its
    hash spec's fields over ``spec_base``)."""
    if init not in named_configs():
        return checkpoint.load(init)
    config = checkpoint.named_config(init)
    torch.manual_seed(0)
    model = new_model("mlm", config, default_hash_spec(config, spec_base))
    return Checkpoint(model, TextSpec())


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
