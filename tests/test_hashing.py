import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from eelbert_export.embeddings import kind_of
from eelbert_export.errors import SpecError
from eelbert_export.hashing import (
    BOW,
    EOW,
    PAPER_SPEC,
    HashSpec,
    bucket_reference,
    embed_reference,
    token_codes,
)
from eelbert_export.model import HashEmbedding, NgramBuckets

SPECS = [HashSpec(), PAPER_SPEC, HashSpec(orders=4, dim=64, max_chars=8, seed=7)]
SPECIALS = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
          (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]


def random_tokens(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    tokens = []
    for _ in range(n):
        length = rng.choice([0, 1, 2, 3, 5, 8, 13, 19, 20, 21, 40])
        lo, hi = rng.choice(RANGES)
        token = "".join(chr(rng.randint(lo, hi)) for _ in range(length))
        tokens.append(("##" + token) if rng.random() < 0.2 else token)
    return tokens + SPECIALS + ["", "\U0010FFFF" * 3, "a", "ab", "ba"]


def torch_embed(tokens: list[str], spec: HashSpec) -> np.ndarray:
    codes = torch.from_numpy(token_codes(tokens, spec.max_chars))
    with torch.no_grad():
        return HashEmbedding(spec)(codes).numpy()


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("spec", SPECS, ids=["portable", "int64", "custom"])
def test_torch_equals_reference_bit_for_bit(spec):
    tokens = random_tokens(300, seed=spec.dim + spec.orders)
    np.testing.assert_array_equal(bits(torch_embed(tokens, spec)),
                                  bits(embed_reference(tokens, spec)))


def test_golden_vectors():
    golden = json.loads((Path(__file__).parent / "golden" / "hash_v1.json").read_text())
    tokens = golden["tokens"]
    for entry in golden["specs"]:
        spec = HashSpec.from_dict(entry["spec"])
        expected = np.array([[int(h, 16) for h in row] for row in entry["float32_bits"]],
                            dtype=np.uint32)
        np.testing.assert_array_equal(bits(embed_reference(tokens, spec)), expected)
        np.testing.assert_array_equal(bits(torch_embed(tokens, spec)), expected)


def test_embeddings_lie_in_unit_range_and_differ():
    out = torch_embed(random_tokens(200, seed=1), HashSpec())
    assert out.shape[1] == 128 and np.all(np.abs(out) <= 1.0)
    assert not np.array_equal(out[-2], out[-1])  # "ab" vs "ba": order matters


def test_batched_codes_and_padding():
    spec = HashSpec()
    tokens = ["hello", "##ing", "[CLS]", "", "wörld", "x" * 30]
    codes = torch.from_numpy(token_codes(tokens, spec.max_chars)).view(2, 3, spec.max_chars)
    out = HashEmbedding(spec)(codes)
    assert out.shape == (2, 3, 128) and out.dtype == torch.float32
    np.testing.assert_array_equal(bits(out.reshape(6, -1).detach().numpy()),
                                  bits(embed_reference(tokens, spec)))
    # A token cut at max_chars embeds as its prefix (EOW goes after the last kept character).
    np.testing.assert_array_equal(embed_reference(["x" * 30], spec),
                                  embed_reference(["x" * spec.max_chars], spec))


def test_nul_is_reserved_for_padding():
    with pytest.raises(ValueError, match="NUL"):
        token_codes(["a\x00b"], 20)
    with pytest.raises(ValueError, match="NUL"):
        embed_reference(["a\x00b"])


def test_markers_lie_beyond_unicode():
    assert BOW > 0x10FFFF and EOW > 0x10FFFF and BOW != EOW


def test_spec_json_round_trip():
    for spec in SPECS:
        assert HashSpec.from_json(spec.to_json()) == spec
    assert HashSpec() == HashSpec.from_dict({})


@pytest.mark.parametrize("change, message", [
    ({"version": 3}, "newer than this eelbert-export supports"),
    ({"version": 1, "table": 100}, "version 1 spec has no n-gram table"),
    ({"table": 100, "probes": 4}, "probes in 1..3"),
    ({"table": -1}, "table must be non-negative"),
    ({"variant": "fancy"}, "variant"),
    ({"buckets": 60000}, "past 2147483647"),
    ({"bases": [50000, 3]}, "every base"),
    ({"max_chars": 0}, "max_chars"),
    ({"colour": "red"}, "unknown fields: colour"),
])
def test_spec_rejects_invalid_or_newer(change, message):
    with pytest.raises(SpecError, match=message):
        HashSpec.from_dict(HashSpec().to_dict() | change)


def test_vocabulary_cache_is_never_saved():
    spec = HashSpec()
    module = HashEmbedding(spec)
    module.cache_vocabulary(["hello", "world"])
    codes = torch.from_numpy(token_codes(["hello", "world"], spec.max_chars))
    assert torch.equal(module.vocab_cache, module(codes))
    assert module.state_dict() == {}


# The integer ops that survive ONNX, Core ML and TFLite exactly (../shared/notes/toolchain.md),
# plus data movement, masks (cast to int32 to zero dead signatures) and integer sums.
ALLOWED_INTEGER_OPS = {"aten.mul.Tensor", "aten.add.Tensor", "aten.remainder.Scalar",
                       "aten.sum.dim_IntList", "aten._to_copy.default", "aten.cat.default",
                       "aten.slice.Tensor", "aten.select.int", "aten.unsqueeze.default",
                       "aten.unbind.int",
                       "aten.where.self", "aten.full_like.default", "aten.zeros_like.default",
                       "getitem"}
ALLOWED_MASK_OPS = {"aten.gt.Scalar", "aten.eq.Scalar", "aten.logical_and.default",
                    "aten.slice.Tensor", "aten.unsqueeze.default"}


def dtype_of(node):
    val = node.meta.get("val")
    return getattr(val, "dtype", None)


def test_portable_graph_uses_only_exportable_integer_ops():
    spec = HashSpec()
    codes = torch.from_numpy(token_codes(random_tokens(12, seed=3)[:12], spec.max_chars))
    codes = codes.view(3, 4, spec.max_chars)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    program = torch.export.export(HashEmbedding(spec).eval(), (codes,),
                                  dynamic_shapes={"codes": {0: batch, 1: seq}})
    graph = program.run_decompositions({}).graph
    floaty = set()  # nodes computed from a float value
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        target = "getitem" if node.target.__name__ == "getitem" else str(node.target)
        dtype = dtype_of(node)
        inputs = [a for a in node.all_input_nodes if a.op != "placeholder" or dtype_of(a)]
        if dtype in (torch.float32, torch.float64) or any(a in floaty for a in inputs):
            floaty.add(node)
        assert dtype not in (torch.int64, torch.int16, torch.int8, torch.uint8), node.format_node()
        if dtype == torch.int32:
            assert target in ALLOWED_INTEGER_OPS, f"{target} on int32"
            assert not any(a in floaty for a in inputs), "an integer op follows the float step"
        if dtype == torch.bool and not any(a in floaty for a in inputs):
            assert target in ALLOWED_MASK_OPS, f"{target} on masks"
    assert any(str(n.target) == "aten._to_copy.default" for n in graph.nodes)


@pytest.mark.parametrize("spec", SPECS, ids=["portable", "int64", "custom"])
def test_projection_is_congruent_and_stays_in_range(spec):
    """Every value the single ``%`` sees is non-negative, below the variant's limit, and
    congruent to the spec's sum_k s_k * a_k + half, at the extremes of every signature."""
    limit = 2**31 if spec.variant == "portable" else 2**63
    mult, offsets = spec.projection()
    flat = spec.multipliers()
    corners = itertools.product(*[[0, m - 1] for m in spec.moduli])
    for sig, j in itertools.product(list(corners), range(spec.dim)):
        partial = offsets[j]
        for s, m in zip(sig, mult):
            assert abs(s * m[j]) < limit
            partial += s * m[j]
            assert 0 <= partial < limit
        expected = sum(s * a[j] for s, a in zip(sig, flat)) + spec.half
        assert (partial - expected) % spec.buckets == 0
    if spec.variant == "portable":
        assert spec.grams * spec.half < 2**24  # float32 sums of integers stay exact


TABLE_SPECS = [HashSpec(table=3900, dim=32), HashSpec(table=7, probes=3, orders=4, max_chars=8),
               HashSpec(table=1000, probes=1)]


@pytest.mark.parametrize("spec", TABLE_SPECS, ids=["default", "tiny-table", "one-probe"])
def test_table_ids_equal_reference(spec):
    """The n-gram table's row ids: torch (batched, padded) equals the Python-integer reference,
    every id lies in 1..table, and exactly the dead n-gram slots pick padding row 0."""
    tokens = random_tokens(300, seed=spec.table)
    codes = torch.from_numpy(token_codes(tokens, spec.max_chars))
    ids = NgramBuckets(spec)(codes[None])[0].numpy()
    want = bucket_reference(tokens, spec)
    np.testing.assert_array_equal(ids, want)
    assert ids.dtype == np.int32 and ids.shape == (len(tokens), *kind_of(spec).stage_shape(spec))
    assert ids.min() >= 0 and ids.max() <= spec.table
    live = [min(len(t), spec.max_chars) + 2 for t in tokens]  # n-grams of order 1 per token
    assert [int((row[:spec.grams] > 0).all(axis=1).sum()) for row in ids] == live


def test_version_1_specs_still_read():
    """Checkpoints written before the n-gram table (spec version 1) load as the fixed hash."""
    old = HashSpec().to_dict() | {"version": 1}
    del old["table"], old["probes"]
    spec = HashSpec.from_dict(old)
    assert spec.version == 1 and spec.table == 0
    np.testing.assert_array_equal(bits(embed_reference(["hello"], spec)),
                                  bits(embed_reference(["hello"], HashSpec())))
