"""A checkpoint made deployable: the torch module every converter traces, with the contract's
inputs and output (``contract.py``), and the model surgery an export applies first."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from eelbert_export import checkpoint, contract
from eelbert_export.model import Classifier, hash_stage

# Varied real text for verification when the model's task data is not prepared, for tracing and
# for calibration: non-ASCII, long words, an empty string, a text long enough to fill
# max_length.
SAMPLE_TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "The plot is nothing but boilerplate clichés, and the acting is wooden.",
    "",
    "Naïve, überlong and oddly charming: a déjà vu of every coming-of-age story.",
    "Antidisestablishmentarianism meets pneumonoultramicroscopicsilicovolcanoconiosis.",
    "東京で見た映画はとても良かった。",
    "Это был лучший фильм года!",
    "🙂🙂 loved it 🎬",
    "Not bad at all, if you can forgive the ending.",
    "I wanted to like it; I really did.",
    " ".join(["A long, meandering review that keeps going"] * 40),
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
]


class Deployable(nn.Module):
    """The contract's module: ``token_codes`` (or ``input_ids``), ``attention_mask`` and, for
    pair models, ``token_type_ids`` -> ``logits`` or ``last_hidden_state``."""

    def __init__(self, model: Classifier, output: str = "logits", pairs: bool = False,
                 labels: list[str] | None = None, title: str = "", max_length: int = 128):
        super().__init__()
        self.model, self.output, self.pairs = model, output, pairs
        self.labels, self.title, self.max_length = labels or [], title, max_length

    @classmethod
    def of(cls, ckpt: checkpoint.Checkpoint, output: str = "logits", title: str = "") -> Deployable:
        return cls(ckpt.model, output, ckpt.pairs, ckpt.labels, title,
                   ckpt.text_spec.max_length).eval()

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.output == "hidden":
            return self.model.encoder(tokens, attention_mask, token_type_ids)
        return self.model(tokens, attention_mask, token_type_ids)

    @property
    def hashed(self) -> bool:
        return self.model.encoder.config.embedding == "hash"

    @property
    def input_names(self) -> list[str]:
        return contract.input_names(self.hashed, self.pairs)

    @property
    def output_name(self) -> str:
        return contract.OUTPUTS[self.output]

    def outputs(self, inputs: list[dict[str, np.ndarray]]) -> np.ndarray:
        """PyTorch's outputs for encoded batches: the reference every artifact is held to."""
        with torch.no_grad():
            return np.concatenate([self(*map(torch.from_numpy, batch.values())).numpy()
                                   for batch in inputs])


class Named(nn.Module):
    """The deployable with keyword inputs and a dict output, for converters that name a
    signature after the arguments (LiteRT): then the names are the contract's (``token_codes``,
    ``logits``) instead of ``args_0``, ``output_0``."""

    def __init__(self, deployable: Deployable):
        super().__init__()
        self.deployable = deployable

    @staticmethod
    def of(deployable: Deployable) -> Named:
        return (Named if deployable.hashed else NamedTable)(deployable).eval()

    def forward(self, token_codes, attention_mask, token_type_ids=None):
        return {self.deployable.output_name:
                self.deployable(token_codes, attention_mask, token_type_ids)}


class NamedTable(Named):
    """The same for a table model (the bert-tiny baseline), which takes ``input_ids``."""

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return super().forward(input_ids, attention_mask, token_type_ids)


def tracing_example(ckpt: checkpoint.Checkpoint, deployable: Deployable) -> dict:
    """Four sample texts, padded to a sequence length unlike every static size (batch 4,
    max_chars) so that torch.export keeps the batch and sequence axes symbolic."""
    encoder = ckpt.text_encoder()
    pairs = SAMPLE_TEXTS[4:8] if deployable.pairs else None
    batch = encoder.encode(SAMPLE_TEXTS[:4], pairs)
    seq = batch.attention_mask.shape[1]
    if seq in (1, 4, ckpt.max_chars):
        batch = encoder.encode(SAMPLE_TEXTS[:4], pairs, pad_to=seq + 1)
    return contract.feeds(batch, deployable.input_names)


def resize_hash(ckpt: checkpoint.Checkpoint, max_chars: int) -> None:
    """Export with another token width: tokens are cut at ``max_chars`` characters in both the
    artifact and the PyTorch reference it is verified against (a size/accuracy trade-off the
    sidecar records; accuracy is reported when the dev split is prepared)."""
    spec = dataclasses.replace(ckpt.hash_spec, max_chars=max_chars)
    ckpt.model.encoder.hash_spec = spec
    ckpt.model.encoder.embeddings.word = hash_stage(spec)


def trim_positions(ckpt: checkpoint.Checkpoint) -> None:
    """Keep only the position embeddings the text front end can reach: it never produces more
    than ``max_length`` tokens, and the rows past it are most of a small model's table (the
    paper's UNO-EELBERT: 384 of 512 rows, 196,608 of its 1.12 MB). Outputs are unchanged."""
    table = ckpt.model.encoder.embeddings.position
    keep = min(ckpt.text_spec.max_length, table.num_embeddings)
    ckpt.model.encoder.embeddings.position = nn.Embedding.from_pretrained(
        table.weight.data[:keep].clone(), freeze=True)
