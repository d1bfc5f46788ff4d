"""The n-gram pooling hash embedding (EELBERT / SGNN projection): the spec and an independent
pure-Python reference (no torch: apps and runtimes need only this); ``model.py`` computes the
same in torch ops, and every exported graph is checked against the reference.

A token is the sequence of its Unicode code points (at most ``max_chars``, NUL is padding),
wrapped in two marker codes beyond Unicode (``BOW``, ``EOW``). For each order n = 1..orders,
every n-gram gets a signature: one polynomial rolling hash per modulus ``M_k`` (base ``P_k``).
Output dimension j of order n's slice gets ``v = (sum_k (s_k * a_kj) % B) % B`` with fixed
multipliers ``a_kj`` in [1, B), centred into (-B/2, B/2] and averaged over the order's n-grams,
scaled so values lie in [-1, 1]. Nothing is trained.

With ``table > 0`` (spec version 2) the same signatures index a trainable table instead: n-gram
g's probe i picks row ``(s_1 + i * s_2) % table + 1`` (row 0 is padding for dead n-grams), and
the model averages the picked rows (``model.NgramBuckets`` computes the ids; the table is a
weight of the model). A fixed projection cannot learn what an n-gram means; a table row can.

The ``portable`` variant keeps every intermediate an int32 within 2^31 built only from ``*``,
``+`` and ``%`` (``%`` only on non-negative values), so ONNX, Core ML and TFLite run it exactly.
Its numerator sums integers below 2^24, exact in float32 in any summation order, and one
correctly rounded division gives the value: bit-exact in every runtime. The ``int64`` variant
is the paper-faithful one (a single signature modulo 2^31 - 1) for quality comparisons; it
needs int64 and cannot be exported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelbert_export.errors import InputError, SpecError
from eelbert_export.specs import from_fields

HASH_SPEC_VERSION = 2  # 2 added ``table`` and ``probes``; version 1 specs read as table 0
BOW = 0x110000  # first code past Unicode: no character can collide with the markers
EOW = 0x110001
INT32_LIMIT = 2**31
INT64_LIMIT = 2**63
FLOAT32_EXACT = 2**24
VARIANTS = ("portable", "int64")


@dataclass(frozen=True)
class HashSpec:
    """Everything that defines the embedding of a token; ``HashSpec()`` is the portable default."""

    version: int = HASH_SPEC_VERSION
    variant: str = "portable"
    dim: int = 128
    orders: int = 3
    max_chars: int = 20
    moduli: tuple[int, ...] = (46337, 46327)
    bases: tuple[int, ...] = (29411, 31079)
    buckets: int = 46337
    seed: int = 0
    table: int = 0  # rows of a trainable n-gram table (0: the fixed projection, the paper's)
    probes: int = 2  # table rows each n-gram picks

    def __post_init__(self) -> None:
        object.__setattr__(self, "moduli", tuple(self.moduli))
        object.__setattr__(self, "bases", tuple(self.bases))
        problem = self._problem()
        if problem:
            raise SpecError(f"invalid hash spec: {problem}")

    def _problem(self) -> str | None:
        if self.version not in (1, HASH_SPEC_VERSION):
            return f"version {self.version} is not supported (this code reads {HASH_SPEC_VERSION})"
        if self.version == 1 and self.table:
            return "a version 1 spec has no n-gram table"
        if self.table < 0 or (self.table and not 1 <= self.probes <= 3):
            return "table must be non-negative and probes in 1..3"
        if self.table and self.probes > 1 and len(self.moduli) < 2:
            return "more than one probe needs two signatures (moduli)"
        if self.variant not in VARIANTS:
            return f"variant {self.variant!r} is not one of {', '.join(VARIANTS)}"
        if not 1 <= self.orders <= self.dim:
            return f"orders must be in 1..dim, got {self.orders}"
        if self.max_chars < 1:
            return f"max_chars must be positive, got {self.max_chars}"
        if not self.moduli or len(self.moduli) != len(self.bases):
            return "moduli and bases must be non-empty and of equal length"
        if any(not 0 < p < m for p, m in zip(self.bases, self.moduli)):
            return "every base must lie in (0, its modulus)"
        if self.buckets < 3 or any(m > self.buckets for m in self.moduli):
            return "buckets must be at least 3 and at least every modulus"
        limit = INT32_LIMIT if self.variant == "portable" else INT64_LIMIT
        largest = max(max((m - 1) * p + m - 1 for m, p in zip(self.moduli, self.bases)),
                      sum(m - 1 for m in self.moduli) * self.half + self.buckets - 1 + self.half)
        if largest >= limit:
            return f"an intermediate reaches {largest}, past {limit - 1}"
        if self.variant == "portable" and self.grams * (self.buckets // 2) >= FLOAT32_EXACT:
            return "max_chars * buckets is too large for exact float32 sums"
        return None

    @property
    def grams(self) -> int:
        """Most n-grams of any order in one token: its characters plus the two markers."""
        return self.max_chars + 2

    @property
    def half(self) -> int:
        return self.buckets // 2

    @property
    def gram_slots(self) -> int:
        """N-gram positions of all orders in one token: the ids' third axis for a table."""
        return sum(self.grams - n + 1 for n in range(1, self.orders + 1))

    @property
    def kind(self) -> str:
        """The embedding kind it defines (``embeddings.KINDS``): the paper's fixed projection,
        or row ids of a trainable n-gram table."""
        return "ngram-table" if self.table else "fixed-hash"

    def order_dims(self) -> list[int]:
        """How many output dimensions each order n = 1..orders gets (as even as possible)."""
        base, extra = divmod(self.dim, self.orders)
        return [base + (1 if i < extra else 0) for i in range(self.orders)]

    def multipliers(self) -> list[list[int]]:
        """a[k][j] in [1, buckets): fixed per signature k and output dimension j (SHA-256 derived,
        so they never depend on a library's random generator)."""
        def draw(k: int, j: int) -> int:
            digest = hashlib.sha256(f"eelbert-hash/{self.seed}/{k}/{j}".encode()).digest()
            return int.from_bytes(digest[:8], "big") % (self.buckets - 1) + 1
        return [[draw(k, j) for j in range(self.dim)] for k in range(len(self.moduli))]

    def projection(self) -> tuple[list[list[int]], list[int]]:
        """The graph's constants, multipliers m[k][j] and offsets c[j], chosen so that one ``%``
        gives the centred value: ``(c + sum_k s_k * m_k) % buckets - half``. ``m`` is ``a``
        moved into [-half, half] (``a - buckets`` above half); ``c`` is half plus the smallest
        multiple of ``buckets`` that keeps every partial sum non-negative. Both keep the sum
        congruent to ``sum_k s_k * a_k + half``, and within the bound ``_problem`` checks."""
        mult = [[a - (self.buckets if a > self.half else 0) for a in row]
                for row in self.multipliers()]
        offsets = []
        for column in zip(*mult):
            lowest = sum((mod - 1) * min(m, 0) for mod, m in zip(self.moduli, column))
            offsets.append(self.half - lowest // self.buckets * self.buckets)
        return mult, offsets

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"moduli": list(self.moduli), "bases": list(self.bases)}

    @classmethod
    def from_dict(cls, data: dict) -> HashSpec:
        return from_fields(cls, data, "hash spec", HASH_SPEC_VERSION)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HashSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"hash spec is not valid JSON: {e}") from None
        return cls.from_dict(data)


PAPER_SPEC = HashSpec(variant="int64", moduli=(2**31 - 1,), bases=(1_000_003,), buckets=2**31 - 1)
NAMED_SPECS = {"portable": HashSpec(), "int64": PAPER_SPEC}


def load_spec(name_or_path: str) -> HashSpec:
    """``portable``, ``int64`` (paper-faithful), or a hash spec JSON file."""
    if name_or_path in NAMED_SPECS:
        return NAMED_SPECS[name_or_path]
    try:
        return HashSpec.from_json(Path(name_or_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read hash spec {name_or_path}: "
                         f"{getattr(e, 'strerror', None) or e}") from None


def characters(token: str, max_chars: int) -> list[int]:
    """A token's code points, truncated to ``max_chars``; NUL is reserved for padding."""
    if "\x00" in token:
        raise ValueError(f"token {token!r} contains NUL, which the codes reserve for padding")
    return [ord(c) for c in token[:max_chars]]


def marked_codes(token: str, spec: HashSpec) -> list[int]:
    """The sequence the n-grams are taken from: BOW, the token's characters, EOW."""
    return [BOW, *characters(token, spec.max_chars), EOW]


def token_codes(tokens: list[str], max_chars: int) -> np.ndarray:
    """The graph input for a list of tokens: int32 [n, max_chars], zero-padded."""
    out = np.zeros((len(tokens), max_chars), dtype=np.int32)
    for i, token in enumerate(tokens):
        codes = characters(token, max_chars)
        out[i, : len(codes)] = codes
    return out


def bucket_reference(tokens: list[str], spec: HashSpec) -> np.ndarray:
    """The table's row ids by Python integers: int32 [tokens, gram_slots, probes]."""
    out = np.zeros((len(tokens), spec.gram_slots, spec.probes), dtype=np.int32)
    for t, token in enumerate(tokens):
        chars = marked_codes(token, spec)
        slot = 0
        for n in range(1, spec.orders + 1):
            for i in range(len(chars) - n + 1):
                s = ngram_signature(chars[i:i + n], spec)
                out[t, slot + i] = [(s[0] + (s[1] * k if k else 0)) % spec.table + 1
                                    for k in range(spec.probes)]
            slot += spec.grams - n + 1
    return out


def embed_reference(tokens: list[str], spec: HashSpec | None = None) -> np.ndarray:
    """The spec computed with Python integers, one token and n-gram at a time: the oracle that
    every graph (torch, ONNX, Core ML, TFLite) is compared with."""
    spec = spec or HashSpec()
    mult = spec.multipliers()
    out = np.zeros((len(tokens), spec.dim), dtype=np.float32)
    for t, token in enumerate(tokens):
        chars = marked_codes(token, spec)
        j = 0
        for n, width in enumerate(spec.order_dims(), start=1):
            grams = [chars[i:i + n] for i in range(len(chars) - n + 1)]
            sums = [0] * width
            for gram in grams:
                sig = ngram_signature(gram, spec)
                for d in range(width):
                    v = sum(s * a[j + d] for s, a in zip(sig, mult)) % spec.buckets
                    sums[d] += v - spec.buckets if v > spec.half else v
            denominator = max(len(grams), 1) * spec.half
            for d in range(width):
                if spec.variant == "portable":
                    out[t, j + d] = np.float32(sums[d]) / np.float32(denominator)
                else:
                    out[t, j + d] = np.float32(sums[d] / denominator)
            j += width
    return out


def ngram_signature(gram: list[int], spec: HashSpec) -> tuple[int, ...]:
    """One polynomial rolling hash per modulus over the gram's codes."""
    sig = []
    for m, p in zip(spec.moduli, spec.bases):
        s = 0
        for c in gram:
            s = (s * p + c % m) % m
        sig.append(s)
    return tuple(sig)
