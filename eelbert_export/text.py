"""The text front end: text (or text pairs) -> tokens -> the int32 tensors every model and
exported artifact takes (``token_codes``, ``attention_mask``, ``token_type_ids``).

Two modes. ``wordpiece``: BERT's uncased WordPiece with the shipped bert-base-uncased
vocabulary (Hugging Face ``tokenizers``). ``words``: BERT's normalization and pre-tokenization
only, whole words and no vocabulary file at all, which only a hash embedding makes possible.
Special tokens are literal strings (``[CLS]``, ``[SEP]``) that the hash embeds like any token.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
from tokenizers import BertWordPieceTokenizer, normalizers, pre_tokenizers

from eelbert_export.errors import SpecError
from eelbert_export.hashing import token_codes
from eelbert_export.specs import from_fields
from eelbert_export.zoo import vocab_path

TEXT_SPEC_VERSION = 1
MODES = ("wordpiece", "words")
CLS, SEP = "[CLS]", "[SEP]"


@functools.cache
def vocabulary() -> list[str]:
    """The shipped WordPiece vocabulary, token i on line i."""
    return vocab_path().read_text(encoding="utf-8").splitlines()


@functools.cache
def vocab_sha256() -> str:
    return hashlib.sha256(vocab_path().read_bytes()).hexdigest()


@dataclass(frozen=True)
class TextSpec:
    """How text becomes tokens; stored in every checkpoint and sidecar."""

    version: int = TEXT_SPEC_VERSION
    mode: str = "wordpiece"
    lowercase: bool = True
    strip_accents: bool = True
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.version != TEXT_SPEC_VERSION:
            raise SpecError(f"text spec version {self.version} is not supported (this code "
                            f"reads {TEXT_SPEC_VERSION})")
        if self.mode not in MODES:
            raise SpecError(f"text mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_length < 3:
            raise SpecError(f"max_length must be at least 3, got {self.max_length}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if self.mode == "wordpiece":
            data["vocab_sha256"] = vocab_sha256()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TextSpec:
        fields = {k: v for k, v in data.items() if k != "vocab_sha256"}
        spec = from_fields(cls, fields, "text spec", TEXT_SPEC_VERSION)
        if spec.mode == "wordpiece" and data.get("vocab_sha256") != vocab_sha256():
            raise SpecError("the model was trained with a different WordPiece vocabulary "
                            "than the shipped models/vocab.txt")
        return spec


@dataclass
class Batch:
    """Model inputs for a list of texts, padded to a common length; all int32 numpy arrays (the
    runtimes' currency; torch wraps them without a copy)."""

    tokens: list[list[str]]
    token_codes: np.ndarray | None  # [batch, seq, max_chars]; None for a table model
    attention_mask: np.ndarray  # [batch, seq]
    token_type_ids: np.ndarray  # [batch, seq]
    input_ids: np.ndarray | None  # [batch, seq] vocabulary ids; None in words mode

    def model_tokens(self, embedding: str) -> np.ndarray:
        """What the model's first input is: codes for a hash embedding, ids for a table."""
        if embedding == "hash":
            if self.token_codes is None:
                raise SpecError("a hash-embedding model needs token codes (max_chars)")
            return self.token_codes
        if self.input_ids is None:
            raise SpecError("a table-embedding model needs the wordpiece front end")
        return self.input_ids


class TextEncoder:
    def __init__(self, spec: TextSpec, max_chars: int | None):
        """``max_chars``: the width of token codes; None for a table model (ids only)."""
        self.spec = spec
        self.max_chars = max_chars
        if spec.mode == "wordpiece":
            self.wordpiece = BertWordPieceTokenizer(
                str(vocab_path()), lowercase=spec.lowercase, strip_accents=spec.strip_accents,
                clean_text=True, handle_chinese_chars=True)
            self.special_ids = {t: self.wordpiece.token_to_id(t) for t in (CLS, SEP)}
        else:
            self.normalizer = normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=spec.strip_accents,
                lowercase=spec.lowercase)
            self.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def tokenize(self, texts: list[str]) -> list[list[tuple[str, int]]]:
        """Each text's tokens, without special tokens, as (token, vocabulary id or -1)."""
        if self.spec.mode == "wordpiece":
            encodings = self.wordpiece.encode_batch(texts, add_special_tokens=False)
            return [list(zip(e.tokens, e.ids)) for e in encodings]
        return [[(w, -1) for w, _ in self.pre_tokenizer.pre_tokenize_str(
            self.normalizer.normalize_str(t))] for t in texts]

    def encode(self, texts: list[str], pairs: list[str] | None = None,
               pad_to: int | None = None) -> Batch:
        """Tokens: [CLS] a [SEP] (b [SEP]), longest-first truncation to ``max_length``."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError("texts and pairs must have the same length")
        firsts = self.tokenize(texts)
        seconds = self.tokenize(pairs) if pairs is not None else [None] * len(texts)
        rows = [self._assemble(a, b) for a, b in zip(firsts, seconds)]
        seq = pad_to or max((len(r) for r in rows), default=1)
        if any(len(r) > seq for r in rows):
            raise ValueError(f"pad_to={pad_to} is shorter than the longest row")
        codes = np.zeros((len(rows), seq, self.max_chars or 1), dtype=np.int32)
        mask = np.zeros((len(rows), seq), dtype=np.int32)
        types = np.zeros((len(rows), seq), dtype=np.int32)
        ids = np.zeros((len(rows), seq), dtype=np.int32)  # 0 is [PAD] in the vocabulary
        flat = token_codes([t for row in rows for t, _, _ in row], self.max_chars or 1)
        start = 0
        for b, row in enumerate(rows):
            codes[b, : len(row)] = flat[start:start + len(row)]
            ids[b, : len(row)] = [token_id for _, token_id, _ in row]
            types[b, : len(row)] = [segment for _, _, segment in row]
            mask[b, : len(row)] = 1
            start += len(row)
        return Batch(tokens=[[t for t, _, _ in r] for r in rows],
                     token_codes=codes if self.max_chars else None, attention_mask=mask,
                     token_type_ids=types,
                     input_ids=ids if self._wp else None)

    @property
    def _wp(self) -> bool:
        return self.spec.mode == "wordpiece"

    def _special(self, token: str) -> tuple[str, int]:
        return token, self.special_ids[token] if self._wp else -1

    def _assemble(self, a: list, b: list | None) -> list[tuple[str, int, int]]:
        budget = self.spec.max_length - (3 if b is not None else 2)
        a, b = list(a), (list(b) if b is not None else None)
        while len(a) + len(b or []) > budget:
            (a if b is None or len(a) >= len(b) else b).pop()
        row = [(*self._special(CLS), 0), *((*t, 0) for t in a), (*self._special(SEP), 0)]
        if b is not None:
            row += [*((*t, 1) for t in b), (*self._special(SEP), 1)]
        return row


def text_rules(spec: TextSpec, hashed: bool) -> str:
    """The front end in words, for the sidecar."""
    return ("BERT normalization: remove control characters and NUL, "
            + ("lower-case, " if spec.lowercase else "")
            + ("strip accents (NFD, drop combining marks), " if spec.strip_accents else "")
            + "split on whitespace and punctuation, CJK characters as single tokens; "
            + ("then WordPiece with models/vocab.txt (continuations keep '##')"
               if spec.mode == "wordpiece" else "whole words, no vocabulary")
            + f"; [CLS] text [SEP] (text_b [SEP]), at most {spec.max_length} tokens; "
            + ("each token's Unicode code points, truncated to max_chars, zero-padded"
               if hashed else "each token's id in models/vocab.txt"))
