"""The EELBERT model: a post-LN BERT encoder whose word-embedding table is replaced by the hash
embedding, with a sequence-classification head and a masked-language-model head.

``embedding="table"`` gives the same encoder with BERT's trainable table: the ``bert-tiny`` and
``bert-mini`` baselines every size and accuracy claim is compared with. A hash model's word
vectors come from its hash stage: the fixed hash itself, or the mean of the n-gram table rows
its ids pick (``HashSpec.table``), projected to ``hidden`` when the spec's ``dim`` differs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eelbert_export.embeddings import NGRAM_TABLE, kind_of
from eelbert_export.errors import SpecError
from eelbert_export.hashing import BOW, EOW, HashSpec, token_codes
from eelbert_export.specs import from_fields
from eelbert_export.zoo import models_dir

EMBEDDINGS = ("hash", "table")
BASELINE = "bert-tiny"  # the named config every size, speed and accuracy claim is compared with
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class ModelConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    embedding: str = "hash"
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise SpecError(f"embedding must be one of {', '.join(EMBEDDINGS)}, "
                            f"got {self.embedding!r}")
        if min(self.layers, self.hidden, self.heads, self.ffn, self.max_positions) < 1:
            raise SpecError("layers, hidden, heads, ffn and max_positions must be positive")
        if self.hidden % self.heads:
            raise SpecError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return from_fields(cls, data, "model config")


def _named() -> dict[str, dict]:
    return json.loads((models_dir() / "configs.json").read_text())


def named_configs() -> dict[str, ModelConfig]:
    """The named configs shipped in ``models/configs.json``."""
    return {name: ModelConfig(name=name, **{k: v for k, v in fields.items() if k != "hash"})
            for name, fields in _named().items()}


def default_hash_spec(config: ModelConfig, base: HashSpec | None = None) -> HashSpec | None:
    """The config's hash spec: the named config's ``hash`` fields over ``base`` (the portable
    spec by default), ``dim`` the hidden width unless they set it; None for table models."""
    if config.embedding != "hash":
        return None
    fields = _named().get(config.name, {}).get("hash", {})
    return dataclasses.replace(base or HashSpec(), **({"dim": config.hidden} | fields))


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases (LayerNorm keeps 1 and 0), a
    padding row zero. (An n-gram table drawn N(0, 1) instead measured worse: rare n-grams keep
    large random rows, docs/models.md.)"""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])


class HashStage(nn.Module):
    """The integer stage of a hash model (int32 codes in); ``vocab_cache`` holds its outputs
    for the shipped vocabulary while training."""

    def cache_vocabulary(self, tokens: list[str]) -> None:
        """Precompute the stage's outputs for a fixed vocabulary, row i for token id i (a
        training speed-up; the cache is never saved nor exported)."""
        codes = torch.from_numpy(token_codes(tokens, self.spec.max_chars))
        with torch.no_grad():
            self.vocab_cache = torch.cat([self(chunk) for chunk in codes.split(4096)])


class HashEmbedding(HashStage):
    """int32 codes [batch, seq, max_chars] -> float32 embeddings [batch, seq, dim].

    Cheap in a graph: a dead n-gram (past the token's end) gets signature 0, so its value is
    exactly half, subtracted after the integer sum, and nothing is masked on the large
    [batch, seq, grams, width] tensors; ``projection`` leaves one ``%`` per value. Its only
    state is the projection constants, derived from the spec: non-persistent buffers, so a
    checkpoint never carries them and an exporter bakes them in.
    """

    def __init__(self, spec: HashSpec):
        super().__init__()
        self.spec = spec
        self.int_dtype = torch.int32 if spec.variant == "portable" else torch.int64
        self.float_dtype = torch.float32 if spec.variant == "portable" else torch.float64
        mult, offsets = spec.projection()
        self.register_buffer("multipliers", torch.tensor(mult, dtype=self.int_dtype),
                             persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=self.int_dtype),
                             persistent=False)
        self.register_buffer("vocab_cache", None, persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        spec, dtype = self.spec, self.int_dtype
        outs, start = [], 0
        for (sigs, keep), width in zip(signatures(codes.to(dtype), spec), spec.order_dims()):
            value = self.offsets[start:start + width]
            for s, mult in zip(sigs, self.multipliers):
                value = value + s.unsqueeze(-1) * mult[start:start + width]
            value = torch.remainder(value, spec.buckets)  # [batch, seq, grams, width]
            total = value.sum(dim=-2, dtype=dtype) + -spec.half * keep.shape[-1]
            count = keep.sum(dim=-1, keepdim=True, dtype=dtype).to(self.float_dtype)
            outs.append(total.to(self.float_dtype) / (torch.clamp(count, min=1.0) * spec.half))
            start += width
        return torch.cat(outs, dim=-1).to(torch.float32)


def signatures(codes: torch.Tensor, spec: HashSpec):
    """Per order n = 1..orders: each n-gram position's signatures (one per modulus) and a 0/1
    ``keep`` saying the n-gram lies within the marked token, all [batch, seq, positions]."""
    edge = codes[..., :1]
    ext = torch.cat([torch.full_like(edge, BOW), codes, torch.zeros_like(edge)], dim=-1)
    # EOW sits on the first zero after a live code (BOW counts as live).
    eow = torch.logical_and(ext[..., :-1] > 0, ext[..., 1:] == 0)
    ext = torch.cat([ext[..., :1], torch.where(eow, torch.full_like(ext[..., 1:], EOW),
                                               ext[..., 1:])], dim=-1)
    live = ext > 0
    reduced = [torch.remainder(ext, m) for m in spec.moduli]
    sigs, mask = reduced, live
    for n in range(1, spec.orders + 1):
        if n > 1:
            sigs = [torch.remainder(s[..., :-1] * p + r[..., n - 1:], m)
                    for s, r, p, m in zip(sigs, reduced, spec.bases, spec.moduli)]
            mask = torch.logical_and(mask[..., :-1], live[..., n - 1:])
        keep = mask.to(codes.dtype)
        # A dead n-gram's signature becomes 0: no mask is needed on anything larger.
        yield [s * keep for s in sigs], keep


class NgramBuckets(HashStage):
    """int32 codes [batch, seq, max_chars] -> int32 row ids [batch, seq, gram_slots, probes] of
    the model's n-gram table: ``keep * ((s_1 + i * s_2) % table + 1)``, so a dead n-gram picks
    row 0 (padding). Integer ops only, like the fixed hash: exact in every runtime."""

    def __init__(self, spec: HashSpec):
        super().__init__()
        if spec.variant != "portable" or not spec.table:
            raise SpecError("an n-gram table needs the portable hash and table > 0")
        self.spec = spec
        self.register_buffer("vocab_cache", None, persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        ids = []
        for sigs, keep in signatures(codes.to(torch.int32), spec):
            probes = [torch.remainder(sigs[0] + sigs[1] * i if i else sigs[0], spec.table) + 1
                      for i in range(spec.probes)]
            ids.append(torch.cat([p.unsqueeze(-1) for p in probes], dim=-1) * keep.unsqueeze(-1))
        return torch.cat(ids, dim=-2)


def hash_stage(spec: HashSpec) -> HashStage:
    """The integer stage of a spec's kind: the fixed hash embedding, or the n-gram table's row
    ids (``embeddings.py`` names each kind's module)."""
    return {cls.__name__: cls for cls in (HashEmbedding, NgramBuckets)}[
        kind_of(spec).stage_module](spec)


class Embeddings(nn.Module):
    def __init__(self, config: ModelConfig, hash_spec: HashSpec | None):
        super().__init__()
        self.ngrams = self.project = None
        if config.embedding == "hash":
            if hash_spec is None:
                raise SpecError("a hash model needs a hash spec")
            self.word = hash_stage(hash_spec)
            if kind_of(hash_spec) is NGRAM_TABLE:
                self.ngrams = nn.Embedding(hash_spec.table + 1, hash_spec.dim, padding_idx=0)
            if hash_spec.dim != config.hidden:
                self.project = nn.Linear(hash_spec.dim, config.hidden, bias=False)
        else:
            self.word = nn.Embedding(config.vocab_size, config.hidden)
        self.position = nn.Embedding(config.max_positions, config.hidden)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor | None, token_type_ids: torch.Tensor | None,
                input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens``: int32 codes [b, s, max_chars] for hash models, ids [b, s] for tables.
        ``input_ids`` lets a hash model read its vocabulary cache instead (training only;
        ``tokens`` may then be None). ``token_type_ids`` None means all zeros: row 0 is added
        as one vector, which converters with static shapes would otherwise fold into a
        [seq, hidden] constant (64 kB in a TFLite file)."""
        words = self.words(tokens, input_ids)
        # int32 indices throughout: exported graphs carry no int64 (Core ML and LiteRT lack it).
        positions = torch.arange(words.shape[1], dtype=torch.int32, device=words.device)
        types = self.token_type.weight[0] if token_type_ids is None else \
            self.token_type(token_type_ids)
        x = words + self.position(positions) + types
        return self.dropout(self.norm(x))

    def words(self, tokens: torch.Tensor | None, input_ids: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Word vectors [b, s, hidden]: the hash stage (or its vocabulary cache), then the
        n-gram table's mean row and the projection where the model has them."""
        cache = self.word.vocab_cache if isinstance(self.word, HashStage) else None
        stage = cache[input_ids] if cache is not None and input_ids is not None \
            else self.word(tokens)
        if self.ngrams is not None:
            stage = mean_rows(self.ngrams, stage)
        return stage if self.project is None else self.project(stage)


def mean_rows(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """The mean of the rows ``ids`` [b, s, slots, probes] pick, row 0 (padding) not counted.
    Exported graphs gather and sum (ops every converter has); eager PyTorch uses embedding_bag,
    which skips the [b, s, slots, probes, dim] intermediate. Both sum the same float32 rows."""
    b, s = ids.shape[:2]
    flat = ids.reshape(b, s, -1)
    if torch.compiler.is_exporting():
        total = table(flat).sum(dim=2)  # a module call: converters name the table after it
    else:
        total = F.embedding_bag(flat.reshape(b * s, -1).long(), table.weight, mode="sum",
                                padding_idx=0).view(b, s, -1)
    count = (flat > 0).sum(dim=-1, keepdim=True, dtype=torch.int32).to(total.dtype)
    return total / torch.clamp(count, min=1.0)


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads = config.heads
        self.query = nn.Linear(config.hidden, config.hidden)
        self.key = nn.Linear(config.hidden, config.hidden)
        self.value = nn.Linear(config.hidden, config.hidden)
        self.output = nn.Linear(config.hidden, config.hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        split = lambda t: t.view(b, s, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads) + bias
        context = self.dropout(scores.softmax(dim=-1)) @ v
        return self.output(context.transpose(1, 2).reshape(b, s, h))


class Layer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden, eps=LAYER_NORM_EPS)
        self.intermediate = nn.Linear(config.hidden, config.ffn)
        self.output = nn.Linear(config.ffn, config.hidden)
        self.output_norm = nn.LayerNorm(config.hidden, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, bias)))
        return self.output_norm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))


class Encoder(nn.Module):
    """Embeddings and the transformer layers: int32 inputs -> hidden states [b, s, hidden]."""

    def __init__(self, config: ModelConfig, hash_spec: HashSpec | None):
        super().__init__()
        self.config = config
        self.hash_spec = hash_spec
        self.embeddings = Embeddings(config, hash_spec)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.layers))

    def forward(self, tokens: torch.Tensor | None, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None, input_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        x = self.embeddings(tokens, token_type_ids, input_ids)
        # Additive mask: -10000 rather than -inf keeps fully padded rows finite, also in fp16.
        bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x


class Classifier(nn.Module):
    """Encoder + BERT pooler (dense + tanh on the first token) + linear classifier -> logits."""

    def __init__(self, config: ModelConfig, hash_spec: HashSpec | None, num_labels: int = 2):
        super().__init__()
        self.encoder = Encoder(config, hash_spec)
        self.pooler = nn.Linear(config.hidden, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden, num_labels)
        self.apply(init_weights)

    def forward(self, tokens: torch.Tensor | None, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None, input_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        hidden = self.encoder(tokens, attention_mask, token_type_ids, input_ids)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        return self.classifier(self.dropout(pooled))


class MaskedLM(nn.Module):
    """Encoder + BERT's MLM transform, scored against the vocabulary's input embeddings.

    The output layer has no weights of its own: for a table it is the tied table, for a hash
    model the vocabulary's (cached) hash embeddings. Only a per-token bias is added, so the
    head costs hidden^2 + vocab floats instead of a vocab x hidden decoder, and it is never
    exported.
    """

    def __init__(self, config: ModelConfig, hash_spec: HashSpec | None):
        super().__init__()
        self.encoder = Encoder(config, hash_spec)
        self.transform = nn.Linear(config.hidden, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=LAYER_NORM_EPS)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.apply(init_weights)

    def vocabulary_embeddings(self) -> torch.Tensor:
        embeddings = self.encoder.embeddings
        if isinstance(embeddings.word, nn.Embedding):
            return embeddings.word.weight
        if embeddings.word.vocab_cache is None:
            raise RuntimeError("call cache_vocabulary() before MLM scoring with a hash model")
        if embeddings.ngrams is None and embeddings.project is None:
            return embeddings.word.vocab_cache
        ids = torch.arange(len(embeddings.word.vocab_cache), dtype=torch.int32)[None]
        return embeddings.words(None, ids)[0]

    def forward(self, tokens: torch.Tensor | None, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None, input_ids: torch.Tensor | None = None,
                predict: torch.Tensor | None = None) -> torch.Tensor:
        """Vocabulary logits at the positions where the bool mask ``predict`` is set (all
        positions when None): scoring only the masked 15% saves most of the head's work."""
        hidden = self.encoder(tokens, attention_mask, token_type_ids, input_ids)
        if predict is not None:
            hidden = hidden[predict]
        h = self.norm(F.gelu(self.transform(hidden)))
        return h @ self.vocabulary_embeddings().T + self.bias
