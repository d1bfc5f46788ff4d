"""How well a hash spec separates a vocabulary (``eelbert-export hash-stats``).

Targets: no two distinct token strings get identical embeddings, and at most 1% of the distinct
character n-grams share their signature with another n-gram of the same order (n-grams of
different orders feed disjoint output dimensions, so they cannot be confused).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from eelbert_export.errors import InputError
from eelbert_export.hashing import HashSpec, marked_codes, ngram_signature, token_codes
from eelbert_export.model import hash_stage

MAX_COLLIDING_FRACTION = 0.01


def hash_stats(tokens: list[str], spec: HashSpec) -> dict:
    distinct = sorted(set(tokens))
    codes = torch.from_numpy(token_codes(distinct, spec.max_chars))
    with torch.no_grad():
        embeddings = hash_stage(spec)(codes).numpy()  # values, or an n-gram table's row ids
    groups: dict[bytes, list[str]] = {}
    for token, row in zip(distinct, embeddings):
        groups.setdefault(row.tobytes(), []).append(token)
    identical = [g for g in groups.values() if len(g) > 1]

    marked = [marked_codes(t, spec) for t in distinct]
    orders = []
    for n in range(1, spec.orders + 1):
        grams = {tuple(chars[i:i + n]) for chars in marked for i in range(len(chars) - n + 1)}
        signatures = Counter(ngram_signature(list(g), spec) for g in grams)
        colliding = sum(c for c in signatures.values() if c > 1)
        orders.append({"order": n, "distinct_ngrams": len(grams), "colliding_ngrams": colliding})
    total = sum(o["distinct_ngrams"] for o in orders)
    colliding = sum(o["colliding_ngrams"] for o in orders)
    lengths = np.array([len(t) for t in distinct])
    fraction = colliding / total if total else 0.0
    return {
        "hash_spec": spec.to_dict(),
        "tokens": len(distinct),
        "tokens_truncated": int((lengths > spec.max_chars).sum()),
        "longest_token": int(lengths.max(initial=0)),
        "identical_embedding_pairs": sum(len(g) * (len(g) - 1) // 2 for g in identical),
        "identical_examples": identical[:5],
        "orders": orders,
        "distinct_ngrams": total,
        "colliding_ngrams": colliding,
        "colliding_fraction": fraction,
        "passed": not identical and fraction <= MAX_COLLIDING_FRACTION,
    }


def format_stats(s: dict) -> str:
    lines = [f"tokens: {s['tokens']:,} distinct, longest {s['longest_token']} chars, "
             f"{s['tokens_truncated']} truncated at max_chars={s['hash_spec']['max_chars']}",
             f"identical-embedding pairs: {s['identical_embedding_pairs']} (target 0)"]
    lines += [f"  e.g. {' = '.join(map(repr, g))}" for g in s["identical_examples"]]
    for o in s["orders"]:
        lines.append(f"order {o['order']}: {o['distinct_ngrams']:,} distinct n-grams, "
                     f"{o['colliding_ngrams']:,} share a signature")
    lines.append(f"colliding n-grams: {s['colliding_ngrams']:,} of {s['distinct_ngrams']:,} "
                 f"({100 * s['colliding_fraction']:.3f}%, target at most "
                 f"{100 * MAX_COLLIDING_FRACTION:g}%)")
    lines.append("PASSED" if s["passed"] else "FAILED")
    return "\n".join(lines)


def read_vocab(path: Path) -> list[str]:
    """One token per line."""
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not any(tokens):
        raise InputError(f"{path}: the vocabulary is empty")
    if any("\x00" in t for t in tokens):
        raise InputError(f"{path}: a token contains NUL")
    return tokens
