"""Benchmarks time the artifacts in their own runtimes; only the shape of the figures is
asserted here (timings belong in benchmarks/README.md, not in tests)."""

import json
import platform

import pytest

from eelbert_export import checkpoint
from eelbert_export.exporters import pipeline
from eelbert_export.exporters.base import BY_NAME
from eelbert_export.reports import bench
from eelbert_export.reports import export_all as report
from eelbert_export.zoo import default_model

from .exports import run


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    sidecar = pipeline.export(pipeline.ExportRequest(BY_NAME["onnx"], None, out, "int8",
                                                     verify=False, data_dir=None))
    return out / sidecar.artifact


def test_bench_times_every_setting(onnx_artifact, tmp_path):
    result = run("bench", default_model(), onnx_artifact, "--batch", "1,2", "--seq", "8,32",
                 "--threads", "1", "--runs", "3", "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b.json").read_text())
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["sentences_per_s"] == pytest.approx(row["batch"] / row["p50_ms"] * 1e3)
        assert 20 < row["peak_rss_mb"] < 4000
    assert {r["runtime"].split()[0] for r in rows} == {"PyTorch", "onnxruntime"}
    assert f"`{onnx_artifact.name}`" in result.output


def test_bench_feeds_are_real_text_of_the_asked_shape():
    run_, feeds_for, runtime = bench.load(default_model(), 1)
    feeds = feeds_for(3, 16)
    assert feeds["token_codes"].shape == (3, 16, 20) and feeds["attention_mask"].all()
    assert run_(feeds).shape == (3, 2) and runtime.startswith("PyTorch")


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_bench_refuses_what_it_cannot_time(tmp_path):
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    result = run("bench", package)
    assert result.exit_code == 2 and "only on macOS" in result.output
    assert run("bench", tmp_path / "missing.onnx").exit_code == 2
    assert run("bench", "--batch", "0").exit_code == 2
    assert run("bench", "--seq", "many").exit_code == 2


def test_table_twin_differs_only_in_its_embedding(tmp_path):
    model = checkpoint.load(default_model())
    report.table_checkpoint(model, model.config, tmp_path / "twin.pt")
    twin = checkpoint.load(tmp_path / "twin.pt")
    assert twin.hash_spec is None and twin.config.embedding == "table"
    assert twin.config.layers == model.config.layers and twin.config.hidden == model.config.hidden


def test_hash_cost_reports_each_pair_against_its_target(tmp_path):
    result = run("hash-cost", "-o", tmp_path, "--runs", "5", "--json", tmp_path / "h.json")
    rows = json.loads((tmp_path / "h.json").read_text())
    assert [(r["model"], r["format"]) for r in rows] == [
        (m, f) for m in ("UNO-EELBERT-ngrams", "UNO-EELBERT") for f in ("onnx", "tflite")]
    for r in rows:
        assert r["ratio"] == pytest.approx(r["hash_p50_ms"] / r["table_p50_ms"])
    missed = any(r["ratio"] > bench.HASH_COST_TARGET for r in rows)
    assert result.exit_code == (1 if missed else 0), result.output
