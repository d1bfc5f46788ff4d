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
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from eelbert_export.errors import SpecError
from eelbert_export.hashing import token_codes
from eelbert_export.specs import from_fields
from eelbert_export.zoo import vocab_path

TEXT_SPEC_VERSION = 1
MODES = ("wordpiece", "words")
CLS, SEP, UNK = "[CLS]", "[SEP]", "[UNK]"
MAX_WORD_CHARS = 100  # a longer word is one [UNK] (BERT's rule)


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


def normalizer(spec: TextSpec) -> normalizers.Normalizer:
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                      strip_accents=spec.strip_accents, lowercase=spec.lowercase)


def wordpiece_tokenizer(spec: TextSpec, truncate: bool = True) -> Tokenizer:
    """The WordPiece front end as one Hugging Face tokenizer: what ``TextEncoder`` runs and what an
    export writes as ``tokenizer.json``. The special tokens are vocabulary entries that only the
    template adds, never added tokens, so user text that spells ``[SEP]`` is split like any text."""
    vocab = {token: i for i, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK,
                                           max_input_chars_per_word=MAX_WORD_CHARS))
    tokenizer.normalizer = normalizer(spec)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])
    tokenizer.decoder = decoders.WordPiece()
    if truncate:
        tokenizer.enable_truncation(spec.max_length, strategy="longest_first")
    return tokenizer


def truncated(first: int, second: int, budget: int) -> tuple[int, int]:
    """Hugging Face's ``longest_first`` lengths for a pair, so words mode truncates as the
    tokenizer does: the shorter side kept whole when it fits in half, else half each."""
    short, long = sorted((first, second))
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if first > second else (short, long)


class TextEncoder:
    def __init__(self, spec: TextSpec, max_chars: int | None, tokenizer_json: str | None = None):
        """``max_chars``: the width of token codes; None for a table model (ids only).
        ``tokenizer_json``: an exported tokenizer.json to run instead of building it."""
        self.spec = spec
        self.max_chars = max_chars
        self.normalizer = normalizer(spec)
        self.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        if spec.mode == "wordpiece":
            self.tokenizer = Tokenizer.from_str(tokenizer_json) if tokenizer_json \
                else wordpiece_tokenizer(spec)
            self.untruncated = Tokenizer.from_str(self.tokenizer.to_str())
            self.untruncated.no_truncation()
            self.special_ids = {t: self.tokenizer.token_to_id(t) for t in (CLS, SEP)}

    def tokenize(self, texts: list[str]) -> list[list[tuple[str, int]]]:
        """Each text's tokens, whole, without special tokens, as (token, vocabulary id or -1)."""
        if self.spec.mode == "wordpiece":
            encodings = self.untruncated.encode_batch(texts, add_special_tokens=False)
            return [list(zip(e.tokens, e.ids)) for e in encodings]
        return [[(w, -1) for w, _ in self.pre_tokenizer.pre_tokenize_str(
            self.normalizer.normalize_str(t))] for t in texts]

    def rows(self, texts: list[str], pairs: list[str] | None) -> list[list[tuple[str, int, int]]]:
        """Each input's (token, id, segment): [CLS] a [SEP] (b [SEP]), ``longest_first``
        truncation to ``max_length``."""
        if self.spec.mode == "wordpiece":
            inputs = texts if pairs is None else list(zip(texts, pairs))
            return [list(zip(e.tokens, e.ids, e.type_ids))
                    for e in self.tokenizer.encode_batch(inputs)]
        seconds = self.tokenize(pairs) if pairs is not None else [None] * len(texts)
        return [self._assemble(a, b) for a, b in zip(self.tokenize(texts), seconds)]

    def encode(self, texts: list[str], pairs: list[str] | None = None,
               pad_to: int | None = None) -> Batch:
        """The model inputs of ``texts`` (and their ``pairs``), padded to ``pad_to`` or the
        longest row."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError("texts and pairs must have the same length")
        rows = self.rows(texts, pairs)
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
        wordpiece = self.spec.mode == "wordpiece"
        return Batch(tokens=[[t for t, _, _ in r] for r in rows],
                     token_codes=codes if self.max_chars else None, attention_mask=mask,
                     token_type_ids=types, input_ids=ids if wordpiece else None)

    def _assemble(self, a: list, b: list | None) -> list[tuple[str, int, int]]:
        if b is None:
            a = a[: self.spec.max_length - 2]
        else:
            keep_a, keep_b = truncated(len(a), len(b), self.spec.max_length - 3)
            a, b = a[:keep_a], b[:keep_b]
        row = [(CLS, -1, 0), *((*t, 0) for t in a), (SEP, -1, 0)]
        if b is not None:
            row += [*((*t, 1) for t in b), (SEP, -1, 1)]
        return row


def text_rules(spec: TextSpec, hashed: bool, pairs: bool) -> str:
    """The front end in words, for the sidecar (exactly: docs/front-end.md)."""
    steps = ["BERT normalization code point by code point (front-end.json): remove NUL, U+FFFD "
             "and categories Cc, Cf, Co except tab, newline, carriage return; whitespace to a "
             "space; spaces around CJK ideographs"]
    if spec.strip_accents:
        steps.append("NFD, then drop Mn marks (no recomposition)")
    if spec.lowercase:
        steps.append("lower-case each code point alone (no final sigma)")
    steps.append("split on whitespace and keep each punctuation code point (Unicode P* and "
                 "ASCII symbols) as its own token")
    if spec.mode == "wordpiece":
        steps.append(f"WordPiece with tokenizer.json's vocabulary, longest match first, "
                     f"continuations prefixed '##', a word over {MAX_WORD_CHARS} code points "
                     f"is {UNK}")
    else:
        steps.append("whole words, no vocabulary")
    template = f"{CLS} text {SEP} text_b {SEP}" if pairs else f"{CLS} text {SEP}"
    steps.append(f"{template}, special tokens only from this template (user text that spells "
                 f"them is split like any text), at most {spec.max_length} tokens, cut from the "
                 "end" + (" of the longer text first (longest_first)" if pairs else ""))
    steps.append("each token's Unicode code points (a special token's literal string), cut to "
                 "max_chars, zero-padded" if hashed else "each token's vocabulary id")
    return "; ".join(steps)
