"""The text front end as files an app loads beside an artifact, so that any language reproduces
``predict`` exactly: ``tokenizer.json`` (Hugging Face format, WordPiece models), ``front-end.json``
(the normalizer and pre-tokenizer as code-point tables, probed from the same Rust tokenizer
``text.py`` runs) and ``<artifact>.vectors.jsonl`` (texts chosen to break front ends, with their
tokens, inputs and the artifact's outputs). The rules in words: docs/front-end.md."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import pre_tokenizers

from eelbert_export.contract import VectorsCheck, feeds
from eelbert_export.errors import InputError, SpecError
from eelbert_export.files import COMPANION_LIMIT, read_text
from eelbert_export.specs import from_fields
from eelbert_export.text import TextEncoder, TextSpec, normalizer, wordpiece_tokenizer

TABLES_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
TABLES_FILE = "front-end.json"
SURROGATES = range(0xD800, 0xE000)

VECTOR_TEXTS = (
    "A gripping, beautifully acted drama.", "Dull and far too long.", "It's not bad... at all!",
    "I didn't love it, but I didn't hate it either.", "", "   ", "!",
    # user text never becomes a special token
    "[CLS]", "[SEP] [PAD] [MASK] [UNK]", "ab[CLS]cd", "[pad] me", "##ing ##", "<s></s>",
    # control, format, private-use and unassigned characters; odd whitespace
    "tab\there\nnew line\r\n", "nul\x00byte bell\x07", "zero\u200bwidth soft\u00adhyphen",
    "bom\ufeffstart", "private\ue000use \U000F0000", "replacement \ufffd char",
    "unassigned \u0378 and \U000E01F0", "line\u2028para\u2029", "nbsp\u00a0thin\u2009ideo\u3000",
    # case and accents, code point by code point
    "ΣΟΦΟΣ ΟΔΟΣ ΑΣ", "İstanbul ıi", "STRASSE Straße ẞ", "ǅemal ǈ", "ﬁne ﬂow Ⅻ",
    "café naïve résumé", "e\u0301 a\u0308 combining", "Ångström Zürich", "tiếng Việt",
    "ﾊﾝｶｸ ｶﾀｶﾅ ＡＢＣ", "ℌ ℍ Ⅷ ㎏ ™",
    # scripts
    "日本語のテキスト", "中文分词测试", "𠀀𠀁 CJK extension B 𪜀", "丽 (compatibility) 兀",
    "한국어 문장입니다", "Привет, мир!", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ",
    "ภาษาไทยไม่มีช่องว่าง", "Ελληνικά κείμενα",
    # emoji and symbols
    "I love it 😍🔥", "family 👨‍👩‍👧 flag 🇫🇷 keycap 1️⃣", "$100 + 50% = win!", "a^b`c~d|e",
    "mail@example.com http://x.io/a?b=c", "«quoted» „text“ ¿Qué? ¡Sí!", "C++ / C# & F#",
    # lengths
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "a" * 100, "b" * 101,
    "x" * 99 + "é", "word " * 200,
)
PAIR_TEXTS = ("is it good?", "", "[SEP]", "ΣΑΣ", "question " * 150)


@functools.cache
def tables(lowercase: bool, strip_accents: bool) -> dict:
    """The BERT normalizer and pre-tokenizer as per-code-point tables, read off the Rust
    implementation itself for every Unicode scalar value (about 5 s): what a code point
    becomes, and which code points are whitespace or punctuation."""
    spec = TextSpec(mode="words", lowercase=lowercase, strip_accents=strip_accents)
    norm, pre = normalizer(spec), pre_tokenizers.BertPreTokenizer()
    remove, isolate, mapped, whitespace, punctuation = [], [], {}, [], []
    for code in range(0x110000):
        if code in SURROGATES:
            continue
        char = chr(code)
        out = norm.normalize_str(char)
        if out == "":
            remove.append(code)
        elif out == f" {char} ":
            isolate.append(code)
        elif out != char:
            mapped[str(code)] = out
        parts = [w for w, _ in pre.pre_tokenize_str(f"a{char}b")]
        if parts == ["a", "b"]:
            whitespace.append(code)
        elif len(parts) == 3:
            punctuation.append(code)
    return {"tables_version": TABLES_VERSION, "lowercase": lowercase,
            "strip_accents": strip_accents,
            "source": f"Hugging Face tokenizers {tokenizers.__version__}: BertNormalizer("
                      f"clean_text, handle_chinese_chars, strip_accents={strip_accents}, "
                      f"lowercase={lowercase}), BertPreTokenizer",
            "remove": ranges(remove), "isolate": ranges(isolate), "map": mapped,
            "whitespace": ranges(whitespace), "punctuation": ranges(punctuation)}


def ranges(codes: list[int]) -> list[list[int]]:
    """Sorted code points as inclusive [first, last] runs."""
    runs: list[list[int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return runs


def files(spec: TextSpec) -> dict[str, str]:
    """The shared front-end files of a model: name -> content."""
    out = {TABLES_FILE: json.dumps(tables(spec.lowercase, spec.strip_accents),
                                   ensure_ascii=False, separators=(",", ":")) + "\n"}
    if spec.mode == "wordpiece":
        out[TOKENIZER_FILE] = wordpiece_tokenizer(spec).to_str() + "\n"
    return out


def vectors_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".vectors.jsonl")


def vector_inputs(pairs: bool) -> list[tuple[str, str | None]]:
    if not pairs:
        return [(text, None) for text in VECTOR_TEXTS]
    return [(text, PAIR_TEXTS[i % len(PAIR_TEXTS)]) for i, text in enumerate(VECTOR_TEXTS)]


@dataclass(frozen=True)
class Vector:
    """One test vector: a text (and its pair), what the front end makes of it, and what the
    artifact outputs for it alone (batch 1, unpadded where the artifact allows)."""

    text: str
    text_b: str | None
    tokens: list[str]
    inputs: dict[str, list]  # the contract's inputs, one row, unpadded
    outputs: list  # the artifact's output row

    def to_json(self) -> str:
        data = {"text": self.text} | ({"text_b": self.text_b} if self.text_b is not None else {})
        return json.dumps(data | {"tokens": self.tokens, "inputs": self.inputs,
                                  "outputs": self.outputs})  # ASCII: any reader splits it


def encoded(encoder: TextEncoder, names: list[str], pairs: bool) -> list[tuple[tuple, dict]]:
    """Each vector input and its one-row feeds for the contract's ``names``."""
    return [((text, text_b), feeds(encoder.encode([text], None if text_b is None else [text_b]),
                                   names)) for text, text_b in vector_inputs(pairs)]


def make_vectors(items: list[tuple[tuple, dict]], outputs: list[np.ndarray],
                 encoder: TextEncoder) -> list[Vector]:
    out = []
    for ((text, text_b), row), output in zip(items, outputs):
        tokens = encoder.encode([text], None if text_b is None else [text_b]).tokens[0]
        out.append(Vector(text, text_b, tokens, {k: v[0].tolist() for k, v in row.items()},
                          np.asarray(output)[0].tolist()))
    return out


def read_vectors(path: Path) -> list[Vector]:
    """A vectors file, each line parsed into its typed ``Vector`` (inputs int32 arrays, outputs
    a float32 array); every failure one line naming the file, the line and the field."""
    if not path.exists():
        raise InputError(f"{path} is missing (export the model again)")
    vectors = []
    for number, line in enumerate(read_text(path, COMPANION_LIMIT).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
            vector = from_fields(Vector, row if not isinstance(row, dict) else
                                 {"text_b": None} | row, "vector")
            for value in vector.inputs.values():
                np.asarray(value, dtype=np.int32)
            np.asarray(vector.outputs, dtype=np.float32)
        except json.JSONDecodeError:
            raise InputError(f"{where}: not JSON") from None
        except SpecError as e:
            raise InputError(f"{where}: {e}") from None
        except (ValueError, TypeError, OverflowError):
            raise InputError(f"{where}: inputs or outputs are not rectangular arrays of "
                             "numbers") from None
        vectors.append(vector)
    return vectors



def check(vectors: list[Vector], encoder: TextEncoder, names: list[str], run,
          tolerance: float = 1e-4) -> VectorsCheck:
    """What an app relies on, checked the way an app would meet it: each vector's text gives its
    tokens and inputs, and the artifact (``run``, batch 1) its outputs within ``tolerance``."""
    tokens = inputs = 0
    worst = 0.0
    for vector in vectors:
        pair = None if vector.text_b is None else [vector.text_b]
        batch = encoder.encode([vector.text], pair)
        row = feeds(batch, names)
        tokens += batch.tokens[0] == vector.tokens
        inputs += set(vector.inputs) == set(names) and \
            all(np.array_equal(row[k][0], np.asarray(v)) for k, v in vector.inputs.items())
        output = np.asarray(run(row))[0]
        want = np.asarray(vector.outputs, dtype=np.float32)
        diff = np.abs(output - want) if output.shape == want.shape else np.array([np.inf])
        # NaN never compares equal: a NaN on either side is an infinite difference.
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)))
    return VectorsCheck(len(vectors), tokens, inputs, worst, tolerance)
