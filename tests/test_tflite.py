"""TFLite export of the default model, builtin ops only, verified in the LiteRT interpreter."""


import numpy as np
import pytest
import torch

from eelbert_export.errors import VerificationError
from eelbert_export.exporters import tflite
from eelbert_export.exporters.base import artifact_size
from eelbert_export.predict import load_predictor
from eelbert_export.reports import audit
from eelbert_export.zoo import default_model

from .exports import artifact, assert_hash_stage_exact, export_modes, recomputed, run, sidecar

MODES = ("none", "fp16", "int8", "int8-weights", "int8-full")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model in every mode, verified (and int8-full calibrated) on the built-in
    sample."""
    return export_modes("tflite", MODES, tmp_path_factory.mktemp("tflite"))


def test_float32_model_is_exact_with_canonical_signature(exported):
    path = exported / artifact("none", ".tflite")
    info = sidecar(path)
    assert recomputed(path)[0] <= 1e-4
    assert info["conversion"]["details"]["shapes"].startswith("static: batch 1, seq 128")
    runner = tflite.interpreter(path).get_signature_runner()
    assert {k: np.dtype(v["dtype"]) for k, v in runner.get_input_details().items()} == \
        {"token_codes": np.int32, "attention_mask": np.int32}
    assert list(runner.get_output_details()) == ["logits"]


@pytest.mark.parametrize("mode", MODES)
def test_builtin_ops_only_and_listed(exported, mode):
    path = exported / artifact(mode, ".tflite")
    ops = tflite.operator_names(path)
    assert not [op for op in ops if op.startswith(("CUSTOM", "UNKNOWN"))]
    assert sidecar(path)["conversion"]["ops"] == sorted(set(ops))
    assert "FLOOR_MOD" in ops  # the hash's remainder, as a builtin


@pytest.mark.parametrize("mode", MODES[1:])
def test_reduced_precision_models(exported, mode):
    path = exported / artifact(mode, ".tflite")
    _, cosine, agreement = recomputed(path)
    floor = 0.98 if mode == "int8-full" else 0.999  # docs/tflite.md's stated floors
    assert agreement >= 0.99 and cosine >= floor
    assert_hash_stage_exact(tflite, path, seed=4)


def test_sizes_within_budgets(exported):
    """Every file within its budget in pyproject.toml (the size report's limits), int8 at most
    0.36x the float32 file."""
    def size(mode):
        return artifact_size(exported / artifact(mode, ".tflite")).bytes
    rules = audit.budgets()
    for mode in MODES:
        assert size(mode) <= audit.limit_for(artifact(mode, ".tflite"), rules), mode
    assert size("int8") < 0.36 * size("none")


@pytest.mark.parametrize("mode", ["none", "int8", "int8-full"])
def test_hash_stage_is_bit_exact_on_adversarial_strings(exported, mode):
    assert_hash_stage_exact(tflite, exported / artifact(mode, ".tflite"), seed=13)


class Bitwise(torch.nn.Module):
    def forward(self, x):
        return {"y": (x & 7) * 3}


def test_builtins_only_check_fires(tmp_path, exported):
    """At conversion (litert-torch would need a Flex op) and on a flatbuffer that holds one."""
    with pytest.raises(VerificationError, match="builtin ops: TF Select ops: BitwiseAnd"):
        tflite.to_tflite(Bitwise().eval(), {"x": torch.ones(1, 4, dtype=torch.int32)},
                         tmp_path / "bitwise.tflite")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(
        bytearray((exported / artifact("none", ".tflite")).read_bytes()))
    model.operatorCodes[0].builtinCode = schema.BuiltinOperator.CUSTOM
    model.operatorCodes[0].deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    model.operatorCodes[0].customCode = "FlexBitwiseAnd"
    doctored = tmp_path / "flex.tflite"
    doctored.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    with pytest.raises(VerificationError, match=r"Flex \(SELECT_TF_OPS\).*FlexBitwiseAnd"):
        tflite.check(doctored)


def test_predict_reads_a_tflite_model(exported):
    texts = [("A gorgeous, witty, seductive movie.", None), ("Dull and lifeless.", None)]
    got = load_predictor(exported / artifact("none", ".tflite")).logits(texts)
    want = load_predictor(default_model()).logits(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_sequence_past_max_length_fails_in_one_line(tmp_path):
    result = run("tflite", "-o", tmp_path, "--seq-len", "200")
    assert result.exit_code == 2 and "past the model's 128 tokens" in result.output
    assert list(tmp_path.iterdir()) == []


def test_shorter_static_length_cuts_texts_to_it(tmp_path):
    """``--seq-len 16``: the artifact takes 16 tokens, its front end (the sidecar's text spec,
    the position table) cuts texts to 16, and long texts predict (it used to fail for every
    length: verification fed it 128 tokens)."""
    result = run("tflite", "-o", tmp_path, "--seq-len", "16", "--data", tmp_path / "no-data")
    assert result.exit_code == 0, result.output
    path = tmp_path / artifact("none", ".tflite")
    info = sidecar(path)
    assert info["text"]["max_length"] == 16
    assert [i["shape"] for i in info["inputs"]] == [[1, 16, 20], [1, 16]]
    result = run("predict", path, " ".join(["a long, meandering review"] * 30))
    assert result.exit_code == 0, result.output
    assert run("predict", path, "--vectors").exit_code == 0
    result = run("tflite", "-o", tmp_path, "--seq-len", "200", "--force")
    assert result.exit_code == 2 and "past the model's 128 tokens" in result.stderr
