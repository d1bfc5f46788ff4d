"""Every embedding variant (the fixed hash, a wide hash with a projection, the n-gram table)
exports to every format with its hash stage bit-exact in the format's own runtime, and the
audit finds its word-embedding bytes where the model keeps them."""

import pytest

from eelbert_export import checkpoint
from eelbert_export.exporters.base import FORMATS
from eelbert_export.reports import audit

from .exports import assert_hash_stage_exact, recomputed, run

VARIANTS = ("uno-eelbert", "uno-eelbert-wide", "uno-eelbert-ngrams")


@pytest.fixture(scope="module")
def models(tmp_path_factory, fresh):
    folder = tmp_path_factory.mktemp("variants")
    for name in VARIANTS:
        checkpoint.save(folder / f"{name}.pt", fresh(name))
    return folder


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=lambda f: f.name)
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_exports_with_an_exact_hash_stage(models, tmp_path, fmt, name):
    result = run(fmt.name, models / f"{name}.pt", "-o", tmp_path, "--data", tmp_path / "none")
    assert result.exit_code == 0, result.output
    path = tmp_path / f"{name}{fmt.suffix}"
    assert recomputed(path, models / f"{name}.pt")[0] <= 1e-4
    assert_hash_stage_exact(fmt.load(), path, seed=21)
    # The word embedding's trainable parameters (table, projection) are counted where they are.
    want = audit.audit(models / f"{name}.pt")["groups"].get("word embedding", {"values": 0})
    got = audit.audit(path)["groups"]["word embedding"]
    assert got["values"] >= want["values"] and got["bytes"] < 4 * want["values"] + 30_000
