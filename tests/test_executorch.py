"""ExecuTorch export of the default model (XNNPACK delegate), run in ExecuTorch's own runtime:
its outputs and hash stage recomputed here against PyTorch and the Python reference."""

import json

import numpy as np
import pytest

from eelbert_export import checkpoint
from eelbert_export.exporters import executorch
from eelbert_export.exporters.deployable import SAMPLE_TEXTS
from eelbert_export.reports import audit
from eelbert_export.zoo import default_model

from .exports import artifact, assert_hash_stage_exact, export_modes, recomputed, run, sidecar


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_modes("executorch", ("none", "int8"), tmp_path_factory.mktemp("executorch"))


def test_float32_program_matches_pytorch_and_the_contract(exported):
    path = exported / artifact("none", ".pte")
    diff, _, agreement = recomputed(path)
    assert diff <= 1e-4 and agreement == 1
    assert_hash_stage_exact(executorch, path, seed=11)
    info = sidecar(path)
    assert [(i["name"], i["dtype"], i["shape"]) for i in info["inputs"]] == \
        [("token_codes", "int32", ["batch", "seq", 20]), ("attention_mask", "int32",
                                                          ["batch", "seq"])]
    assert "delegate:XnnpackBackend" in info["conversion"]["ops"]
    assert info["conversion"]["details"]["delegated_subgraphs"] >= 1
    assert path.stat().st_size <= 1_200_000  # the paper's 1.2 MB, as every float32 artifact


def test_int8_program_within_the_reduced_floors(exported):
    path = exported / artifact("int8", ".pte")
    _, cosine, agreement = recomputed(path)
    assert agreement >= 0.99 and cosine >= 0.999
    assert_hash_stage_exact(executorch, path, seed=12)
    assert path.stat().st_size < 0.7 * (exported / artifact("none", ".pte")).stat().st_size


def test_dynamic_batch_and_sequence(exported):
    """Batches past the program's bound run in chunks; every length up to the model's runs."""
    run_ = executorch.runner(exported / artifact("none", ".pte"))
    ckpt = checkpoint.load(default_model())
    texts = (SAMPLE_TEXTS * 7)[:70]
    batch = ckpt.text_encoder().encode(texts)
    feeds = {"token_codes": batch.token_codes, "attention_mask": batch.attention_mask}
    got = run_(feeds)
    assert got.shape == (70, 2) and batch.attention_mask.shape[1] == 128
    one = run_({k: v[:1, :5] for k, v in feeds.items()})
    assert one.shape == (1, 2) and np.isfinite(one).all()


def test_audit_groups_come_from_the_model(exported):
    """A .pte names no constant: the export recorded which parameter each stored blob is, so
    the audit's groups are the model's, and nothing large is left unnamed."""
    for mode in ("none", "int8"):
        groups = audit.audit(exported / artifact(mode, ".pte"))["groups"]
        want = audit.audit(default_model())["groups"]["word embedding"]["values"]
        assert groups["word embedding"]["values"] >= want
        assert {"attention", "feed-forward", "pooler/classifier"} <= set(groups)
        assert groups.get("other constants", {"bytes": 0})["bytes"] < 1000


def test_predict_vectors_and_bench(exported, tmp_path):
    path = exported / artifact("int8", ".pte")
    result = run("predict", path, "A gorgeous, witty, seductive movie.")
    assert result.exit_code == 0 and result.output.startswith("fresh"), result.output
    assert run("predict", path, "--vectors").exit_code == 0
    out = tmp_path / "bench.json"
    result = run("bench", path, "--batch", "1", "--seq", "16", "--threads", "1", "--runs", "3",
                 "--json", out)
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())[0]
    assert row["runtime"].startswith("ExecuTorch") and row["p50_ms"] > 0
    assert row["peak_rss_mb"] > 0
