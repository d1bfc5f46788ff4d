"""The size audit reads every format's stored tensors from the file itself: the per-group
bytes reconcile with the bytes on disk, the groups hold what the model's own parameters say
they should, and budgets fail the run."""

import json

import pytest

from eelbert_export import checkpoint
from eelbert_export.errors import InputError
from eelbert_export.exporters import pipeline
from eelbert_export.exporters.base import BY_NAME, FORMATS
from eelbert_export.model import named_configs
from eelbert_export.reports import audit
from eelbert_export.reports import export_all as report
from eelbert_export.zoo import default_model

from .exports import STEM, artifact, recomputed, run

MODES = {".onnx": ("none", "int8"), ".mlpackage": ("none", "int8", "palette6"),
         ".tflite": ("none", "int8")}
# Parameter counts per group from the default model's checkpoint (one layer, hidden 128).
onnx = BY_NAME["onnx"]
EXACT_GROUPS = ("attention", "feed-forward", "pooler/classifier", "LayerNorm")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The default model in each format's float32 and compressed modes (sizes are what is
    tested here, so verification is left to the format tests)."""
    out = tmp_path_factory.mktemp("audit")
    memo = pipeline.Memo(tmp_path_factory.mktemp("memo"))
    for suffix, modes in MODES.items():
        for mode in modes:
            pipeline.export(pipeline.ExportRequest(FORMATS[suffix], None, out, mode,
                                                   verify=False, data_dir=None), memo)
    return out


def disk_bytes(path):
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files)


def test_groups_and_container_add_up_to_the_bytes_on_disk(artifacts):
    paths = [default_model()] + [artifacts / artifact(mode, suffix)
                                 for suffix, modes in MODES.items() for mode in modes]
    for path in paths:
        r = audit.audit(path)
        assert r["bytes"] == disk_bytes(path), path.name
        assert sum(g["bytes"] for g in r["groups"].values()) + r["container_bytes"] \
            == r["bytes"], path.name
        assert r["container_bytes"] > 0, path.name


def test_float32_groups_hold_the_checkpoints_parameters(artifacts):
    """Every float32 artifact stores each group's parameters once, as the checkpoint does,
    and the hash embedding as a few hundred int32 constants, not a table."""
    want = audit.audit(default_model())["groups"]
    for suffix in MODES:
        groups = audit.audit(artifacts / artifact("none", suffix))["groups"]
        for name in EXACT_GROUPS:
            assert groups[name]["values"] == want[name]["values"], (suffix, name)
        assert groups["position/type embeddings"]["values"] >= 128 * 128, suffix
        # The word embedding: the checkpoint's table and projection (if any) plus the hash's
        # few hundred int32 constants, never a vocabulary table.
        table = want["word embedding"]["values"] if "word embedding" in want else 0
        assert groups["word embedding"]["values"] >= table, suffix
        assert 0 < groups["word embedding"]["bytes"] - 4 * table < 3000, suffix
        # Unnamed leftovers: Core ML's folded token-type row and the zero bias coremltools
        # gives the bias-free projection, 128 floats each.
        assert "other constants" not in groups or \
            groups["other constants"]["bytes"] <= 2 * 512, suffix


def test_compressed_weights_are_counted_at_their_stored_width(artifacts):
    """Only the weights shrink between modes, so the container stays put: a 6-bit palette
    counted as bytes, or a missed int8 tensor, would move it by tens of kB."""
    for suffix, modes in MODES.items():
        containers = [audit.audit(artifacts / artifact(m, suffix))["container_bytes"]
                      for m in modes]
        assert max(containers) - min(containers) < 16_000, (suffix, containers)
    ffn = audit.audit(artifacts / artifact("palette6", ".mlpackage"))["groups"]["feed-forward"]
    assert "uint6" in ffn["dtypes"]
    assert ffn["bytes"] < 2 * 65536 * 6 // 8 + 4000


def test_sizes_parse_with_decimal_units():
    assert audit.parse_size("1.2MB") == 1_200_000
    assert audit.parse_size("400kB") == 400_000
    assert audit.parse_size("250000") == 250_000
    assert audit.parse_size("1 MiB") == 1_048_576
    with pytest.raises(InputError):
        audit.parse_size("12 parsecs")


def test_the_most_specific_budget_applies():
    rules = {"m.*": 1_200_000, "m.int8*": 400_000}
    assert audit.limit_for("m.int8.onnx", rules) == 400_000
    assert audit.limit_for("m.fp16.onnx", rules) == 1_200_000
    assert audit.limit_for("other.onnx", rules) is None


def test_audit_fails_an_artifact_over_its_budget(artifacts, tmp_path, monkeypatch):
    path = artifacts / artifact("int8", ".onnx")
    size = disk_bytes(path)
    result = run("audit", path, "--budget", "100kB", "--json", tmp_path / "a.json")
    assert result.exit_code == 1
    assert f"{path.name}: {size:,} bytes is over its budget of 100,000 bytes by " \
           f"{size - 100_000:,}" in result.output
    assert json.loads((tmp_path / "a.json").read_text())[0]["over"] is True
    assert run("audit", path, "--budget", "400kB").exit_code == 0
    # Budgets from the project's pyproject.toml, by glob.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eelbert-export.budgets]\n"{STEM}.*" = "1.2MB"\n"{STEM}.int8*" = "200kB"\n')
    result = run("audit", artifacts)
    assert result.exit_code == 1
    over = [line for line in result.output.splitlines() if "over its budget" in line]
    assert len(over) == 3 and all(".int8." in line and "200,000" in line for line in over)


@pytest.mark.parametrize("name,content,message", [
    ("m.onnx", b"not a protobuf", "cannot read it as .onnx"),
    ("m.tflite", b"\x00" * 64, "cannot read it as .tflite"),
    ("m.txt", b"text", "not a checkpoint (.pt) or an artifact to audit"),
    ("m.pt", b"PK\x03\x04 truncated", "m.pt"),
])
def test_audit_rejects_foreign_files_in_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    result = run("audit", tmp_path / name)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_audit_rejects_missing_files_and_bad_sizes(tmp_path):
    assert run("audit", tmp_path / "missing.onnx").exit_code == 2
    result = run("audit", default_model(), "--budget", "lots")
    assert result.exit_code == 2 and "not a size" in result.output


def test_table_baseline_exports_with_token_ids(tmp_path):
    """The bert-tiny baseline (an embedding table) exports through the same pipeline, ids in,
    and matches PyTorch in onnxruntime."""
    path = tmp_path / "bert-tiny.pt"
    report.table_checkpoint(checkpoint.load(default_model()), named_configs()["bert-tiny"], path)
    sidecar = pipeline.export(pipeline.ExportRequest(onnx, path, tmp_path, data_dir=None)) \
        .to_dict()
    assert sidecar["inputs"][0] == {"name": "input_ids", "dtype": "int32",
                                    "shape": ["batch", "seq"]}
    assert sidecar["hash_spec"] is None
    assert recomputed(tmp_path / "bert-tiny.onnx", path)[0] <= 1e-4
    groups = audit.audit(tmp_path / "bert-tiny.onnx")["groups"]
    assert groups["word embedding"]["values"] == 30522 * 128


def test_all_exports_audits_and_fails_over_budget(tmp_path, monkeypatch):
    """`all` on one format: every mode and the baseline, size.md/json/png, and exit 1 when a
    budget is missed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eelbert-export.budgets]\n"{STEM}.*" = "1.2MB"\n"{STEM}.int8*" = "100kB"\n')
    result = run("all", "-o", tmp_path, "--format", "onnx", "--data", tmp_path / "no-data")
    assert result.exit_code == 1, result.output
    assert f"{STEM}.int8.onnx: " in result.output and "over its budget" in result.output
    table = (tmp_path / "size.md").read_text()
    assert f"`{STEM}.onnx`" in table and "x smaller" in table and "**over**" in table
    reports = json.loads((tmp_path / "size.json").read_text())["reports"]
    assert {r["artifact"] for r in reports} == {f"{STEM}.pt"} | {
        artifact(m, ".onnx") for m in onnx.quantizations}
    assert all(r["baseline"]["ratio"] > 10 for r in reports)
    assert (tmp_path / "size.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # nothing half-written


def test_modes_of_a_format_share_one_conversion_and_reference(tmp_path):
    """What `all` reuses (one conversion per format and compute precision, one PyTorch
    reference) changes nothing in an artifact's verification."""
    memo = pipeline.Memo(tmp_path)
    shared = [pipeline.export(pipeline.ExportRequest(onnx, None, tmp_path, mode, data_dir=None),
                              memo) for mode in ("none", "int8")]
    alone = tmp_path / "alone"
    alone.mkdir()
    expected = pipeline.export(pipeline.ExportRequest(onnx, None, alone, "int8",
                                                      data_dir=None)).verification
    assert len(memo.conversions) == 1 and len(memo.references) == 1
    assert shared[1].verification == expected
    assert recomputed(tmp_path / artifact("none", ".onnx"))[0] <= 1e-4
