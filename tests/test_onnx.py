"""ONNX export of the default model, verified in onnxruntime, and its failure paths."""

import json

import numpy as np
import onnx
import pytest
import torch

from eelbert_export import checkpoint
from eelbert_export.exporters import onnx as onnx_format
from eelbert_export.exporters.deployable import SAMPLE_TEXTS
from eelbert_export.zoo import default_model

from .conftest import tensors
from .exports import STEM, assert_hash_stage_exact, export_modes, recomputed, run, sidecar


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model in float32, int8 and fp16, verified on the built-in sample."""
    return export_modes("onnx", ("none", "int8", "fp16"), tmp_path_factory.mktemp("onnx"))


def test_float32_artifact_is_exact_and_described(exported):
    path = exported / f"{STEM}.onnx"
    info = sidecar(path)
    diff, _, agreement = recomputed(path)
    assert diff <= 1e-4 and agreement == 1
    assert info["verification"]["texts"].startswith("built-in sample")
    assert [(i["name"], i["dtype"]) for i in info["inputs"]] == \
        [("token_codes", "int32"), ("attention_mask", "int32")]
    assert info["inputs"][0]["shape"] == ["batch", "seq", 20]
    assert info["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]
    assert info["model"]["labels"] == ["rotten", "fresh"] and info["max_chars"] == 20
    assert info["text"]["mode"] == "wordpiece" and "lower-case" in info["text_rules"]
    assert info["hash_spec"]["variant"] == "portable" and info["quantization"] == "none"
    assert info["size"]["bytes"] == path.stat().st_size


def test_graph_uses_default_domain_and_int32_inputs(exported):
    model = onnx.load(str(exported / f"{STEM}.onnx"))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    elem = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert elem == {"token_codes": onnx.TensorProto.INT32,
                    "attention_mask": onnx.TensorProto.INT32}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param  # dynamic batch and sequence


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_reduced_precision_artifacts(exported, mode):
    path = exported / f"{STEM}.{mode}.onnx"
    _, cosine, agreement = recomputed(path)
    assert agreement >= 0.99 and cosine >= 0.999
    assert_hash_stage_exact(onnx_format, path, seed=3)
    assert path.stat().st_size < 0.6 * (exported / f"{STEM}.onnx").stat().st_size


@pytest.mark.parametrize("name", [f"{STEM}.onnx",
                                  f"{STEM}.int8.onnx",
                                  f"{STEM}.fp16.onnx"])
def test_hash_stage_is_bit_exact_on_adversarial_strings(exported, name):
    assert_hash_stage_exact(onnx_format, exported / name, seed=11)


def test_predict_agrees_between_pytorch_and_onnx(exported, tmp_path):
    texts = tmp_path / "texts.csv"
    texts.write_text("text,other\nA triumph of style and heart.,x\nTedious and flat.,y\n,z\n")
    outputs = []
    for target in (default_model(), exported / f"{STEM}.onnx"):
        result = run("predict", target, "--file", texts, "--json")
        assert result.exit_code == 0, result.output
        outputs.append([json.loads(line) for line in result.stdout.splitlines()])
    assert [r["label"] for r in outputs[0]] == [r["label"] for r in outputs[1]]
    np.testing.assert_allclose([r["logits"] for r in outputs[0]],
                               [r["logits"] for r in outputs[1]], atol=1e-4)
    plain = run("predict", exported / f"{STEM}.int8.onnx", "What a film!")
    assert plain.exit_code == 0 and plain.stdout.split("\t")[0] in ("rotten", "fresh")


def test_existing_artifact_is_kept_without_force(exported):
    path = exported / f"{STEM}.onnx"
    before = path.read_bytes()
    result = run("onnx", "-o", exported)
    assert result.exit_code == 2 and "already exists (use --force" in result.stderr
    assert path.read_bytes() == before


def test_out_of_tolerance_exits_3_and_writes_nothing(tmp_path, monkeypatch):
    real = onnx_format.runner
    monkeypatch.setattr(onnx_format, "runner",
                        lambda path: (lambda feeds: real(path)(feeds) + np.float32(1e-3)))
    result = run("onnx", "-o", tmp_path, "--data", tmp_path / "no-data")
    assert result.exit_code == 3, result.output
    assert "verification failed" in result.stderr and "max |diff| 1.00e-03" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("unwritable", "is a file, not a folder"),
    ("table-model", "--max-chars does not apply"),
    ("int64-model", "only the portable hash exports"),
])
def test_export_bad_input_exits_2(tmp_path, fresh, case, message):
    model, out = tmp_path / "model.pt", tmp_path
    if case == "unwritable":
        out = tmp_path / "file"
        out.write_text("not a folder")
        model = default_model()
    elif case == "table-model":
        checkpoint.save(model, fresh("bert-tiny"))
    elif case == "int64-model":
        from eelbert_export.hashing import PAPER_SPEC
        from eelbert_export.training.saving import starting_point

        ckpt = fresh()
        int64 = starting_point("uno-eelbert", PAPER_SPEC)
        clf = checkpoint.new_model("classifier", ckpt.config, int64.hash_spec)
        checkpoint.save(model, checkpoint.Checkpoint(clf.eval(), ckpt.text_spec, ckpt.labels))
    extra = ["--max-chars", 16] if case == "table-model" else []
    result = run("onnx", model, "-o", out, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_predict_bad_input(tmp_path):
    assert run("predict").exit_code == 2
    bad = tmp_path / "t.csv"
    bad.write_text("sentence\nhello\n")
    result = run("predict", "--file", bad)
    assert result.exit_code == 2 and "missing column text" in result.stderr
    other = tmp_path / "model.tflite.txt"
    other.write_text("x")
    result = run("predict", other, "hi")
    assert result.exit_code == 2 and "not a checkpoint" in result.stderr


def test_narrower_token_codes(tmp_path):
    result = run("onnx", "-o", tmp_path, "--max-chars", "12", "--data", tmp_path / "no-data")
    assert result.exit_code == 0, result.output
    info = sidecar(tmp_path / f"{STEM}.onnx")
    assert info["max_chars"] == 12 and info["inputs"][0]["shape"] == ["batch", "seq", 12]
    assert info["hash_spec"]["max_chars"] == 12
    assert_hash_stage_exact(onnx_format, tmp_path / f"{STEM}.onnx", seed=6)


def test_hidden_state_output(tmp_path):
    result = run("onnx", "-o", tmp_path, "--output", "hidden", "--data", tmp_path / "no-data")
    assert result.exit_code == 0, result.output
    info = sidecar(tmp_path / f"{STEM}.hidden.onnx")
    assert info["outputs"] == [{"name": "last_hidden_state", "dtype": "float32",
                                "shape": ["batch", "seq", 128]}]
    ckpt = checkpoint.load(default_model())
    batch = ckpt.text_encoder().encode(SAMPLE_TEXTS)
    with torch.no_grad():
        want = ckpt.model.encoder(*tensors(batch, "token_codes", "attention_mask"), None)
    got = onnx_format.runner(tmp_path / f"{STEM}.hidden.onnx")(
        {"token_codes": batch.token_codes, "attention_mask": batch.attention_mask})
    assert np.abs(got - want.numpy()).max() <= 1e-4
