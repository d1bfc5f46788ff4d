"""Core ML export of the default model, checked structurally and verified by evaluating the
converted MIL program; the evaluator itself is checked op by op against PyTorch."""

import platform

import numpy as np
import pytest
import torch

from eelbert_export.exporters import coreml
from eelbert_export.exporters.base import artifact_size
from eelbert_export.exporters.coreml import mil, program
from eelbert_export.exporters.coreml.mil import ct
from eelbert_export.hashing import token_codes
from eelbert_export.predict import load_predictor
from eelbert_export.reports import audit
from eelbert_export.zoo import default_model, models_dir

from .exports import artifact, assert_hash_stage_exact, export_modes, recomputed, run, sidecar

MODES = ("none", "fp16", "int8", "int4", "palette4", "palette6")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model in six modes, verified on the built-in sample."""
    return export_modes("coreml", MODES, tmp_path_factory.mktemp("coreml"))


def test_float32_package_is_exact_and_described(exported):
    path = exported / artifact("none", ".mlpackage")
    info = sidecar(path)
    diff, _, agreement = recomputed(path)
    assert diff <= 1e-4 and agreement == 1
    verifier = info["conversion"]["runtime"]
    assert verifier.startswith("Core ML" if platform.system() == "Darwin" else "MIL program")
    assert info["conversion"]["details"]["shapes"] == "enumerated: batch 1, seq 16, 32, 64, 128"
    assert info["size"]["bytes"] == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    model = ct.models.MLModel(str(path), skip_model_load=True)
    assert "EELBERT" in model.short_description and model.author and model.license
    assert model.version and model.user_defined_metadata["classes"] == "rotten,fresh"
    assert set(model.input_description) == {"token_codes", "attention_mask"}
    assert "rotten, fresh" in model.output_description["logits"]
    inputs = {i.name: i.type.multiArrayType.dataType for i in model.get_spec().description.input}
    assert set(inputs.values()) == {ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32}


@pytest.mark.parametrize("mode", MODES[1:])
def test_reduced_precision_packages(exported, mode):
    path = exported / artifact(mode, ".mlpackage")
    _, cosine, agreement = recomputed(path)
    assert agreement >= 0.99 and cosine >= 0.999
    assert_hash_stage_exact(coreml, path, seed=5)


def test_compressed_sizes(exported):
    """Every package within its budget in pyproject.toml (the size report's limits)."""
    def size(mode):
        return artifact_size(exported / artifact(mode, ".mlpackage")).bytes
    rules = audit.budgets()
    for mode in MODES:
        assert size(mode) <= audit.limit_for(artifact(mode, ".mlpackage"), rules), mode
    assert size("int8") < 0.32 * size("none") and size("fp16") < 0.6 * size("none")


def test_int4_matrices_come_rounded_by_gptq(exported):
    """int4's low-bit matrices reach the package as GPTQ's 4-bit blocks (round-to-nearest int4
    misses the cosine floor on the dev split); the other matrices are int8."""
    path = exported / artifact("int4", ".mlpackage")
    program, _ = coreml.load(path)
    stored = {op.name: mil.dtype_name(op.data) for op in program.functions["main"].operations
              if op.op_type == "constexpr_blockwise_shift_scale"}
    low = {name: dtype for name, dtype in stored.items() if coreml.LOW_BIT.search(name)}
    assert len(low) == 3 and set(low.values()) == {"uint4"}
    assert set(stored.values()) - {"uint4"} == {"int8"}
    assert "GPTQ on 12 calibration rows" in sidecar(path)["conversion"]["quantization"]


@pytest.mark.parametrize("mode", MODES)
def test_structure_int32_and_hash_stage_not_fp16(exported, mode):
    path = exported / artifact(mode, ".mlpackage")
    program, hash_output = coreml.load(path)
    function = program.functions["main"]
    stage = mil.upstream(function, [hash_output])
    dtypes = {mil.dtype_name(v) for op in function.operations if op.name in stage
              for v in op.outputs}
    assert "fp16" not in dtypes and "int32" in dtypes
    computed = {mil.dtype_name(v) for op in function.operations
                if op.op_type not in coreml.STORAGE_OPS for v in op.outputs}
    assert computed <= coreml.COMPUTE_DTYPES
    assert {op.op_type for op in function.operations} <= coreml.ALLOWED_OPS
    if mode != "none":
        assert "fp16" in computed  # the rest of the model does run in fp16


@pytest.mark.parametrize("mode", ["none", "fp16", "int4"])
def test_hash_stage_is_bit_exact_on_adversarial_strings(exported, mode):
    assert_hash_stage_exact(coreml, exported / artifact(mode, ".mlpackage"), seed=12)


def test_fp16_hash_stage_is_caught(tmp_path, monkeypatch):
    """Convert with every op in fp16, the hash stage included: the checks refuse it. The fixed
    hash's stage ends in float ops (an n-gram table's stage is integer-only: fp16 cannot reach
    it), so this converts the fixed-hash model."""
    monkeypatch.setattr(program, "outside_hash_stage", lambda hash_output: lambda op: True)
    result = run("coreml", models_dir() / "uno-eelbert-sentiment.pt", "-o", tmp_path,
                 "--quantize", "fp16", "--data", tmp_path / "none")
    assert result.exit_code == 3
    assert "computes in fp16, which breaks the hash's exactness" in result.output
    assert list(tmp_path.iterdir()) == []


def test_predict_reads_a_package(exported):
    texts = [("A gorgeous, witty, seductive movie.", None), ("Dull and lifeless.", None)]
    package = load_predictor(exported / artifact("none", ".mlpackage")).logits(texts)
    pytorch = load_predictor(default_model()).logits(texts)
    np.testing.assert_allclose(package, pytorch, atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--seq-len", "64"], "at least the model's 128 tokens"),
    (["--deployment-target", "iOS17"], "enumerated shapes on several inputs need iOS18"),
    (["--deployment-target", "iOS17", "--flexible", "--quantize", "int4"], "needs"),
])
def test_bad_shape_options_fail_in_one_line(tmp_path, args, message):
    result = run("coreml", "-o", tmp_path, *args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(platform.system() != "Darwin",
                    reason="Core ML predicts only on macOS; on Linux the MIL evaluator runs")
def test_macos_prediction_matches_the_evaluator(exported):
    path = exported / artifact("none", ".mlpackage")
    codes = token_codes(["[CLS]", "great", "[SEP]"], 20)[None]
    feeds = {"token_codes": np.pad(codes, [(0, 0), (0, 13), (0, 0)]),
             "attention_mask": np.pad(np.ones((1, 3), np.int32), [(0, 0), (0, 13)])}
    program, _ = coreml.load(path)
    want = mil.Evaluator(program).run(feeds)[0]
    got = ct.models.MLModel(str(path)).predict(feeds)["logits"]
    np.testing.assert_allclose(got, want, atol=1e-4)


# The evaluator, op by op: each function converted alone and evaluated, against PyTorch.
BIG = torch.tensor([[46_336, 2**30, 7, 0], [1, 65_504, 70_001, 123_457]], dtype=torch.int32)
FLOATS = torch.linspace(-3, 3, 24).reshape(2, 3, 4)
OPS = {
    "int32 remainder": (lambda x: torch.remainder(x * 3 + 11, 46_337), BIG),
    "int32 wrapping multiply": (lambda x: x * 29_411, BIG),
    "comparisons and where": (lambda x: torch.where(torch.logical_and(x > 5, x < 70_000), x,
                                                    torch.zeros_like(x)), BIG),
    "int to float": (lambda x: x.to(torch.float32) / 46_337.0, BIG),
    "cat and slice": (lambda x: torch.cat([x[:, 1:], x[:, :1]], dim=-1), BIG),
    "sum with keepdim": (lambda x: x.sum(-1, keepdim=True), FLOATS),
    "layer norm": (lambda x: torch.nn.functional.layer_norm(x, (4,)), FLOATS),
    "gelu": (lambda x: torch.nn.functional.gelu(x), FLOATS),
    "softmax": (lambda x: torch.softmax(x, -1), FLOATS),
    "tanh": (torch.tanh, FLOATS),
    "matmul": (lambda x: x @ x.transpose(-1, -2), FLOATS),
    "linear": (lambda x: torch.nn.functional.linear(x, torch.ones(5, 4) * 0.3,
                                                    torch.arange(5.0)), FLOATS),
    "embedding": (lambda x: torch.nn.functional.embedding(
        torch.remainder(x, 4), torch.arange(12.0).reshape(4, 3)), BIG),
}


class Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def convert_alone(fn, x, precision):
    program = torch.export.export(Wrap(fn), (x,)).run_decompositions({})
    dtype = np.int32 if x.dtype == torch.int32 else np.float32
    with coreml.quiet():
        model = ct.convert(program, inputs=[ct.TensorType(name="x", shape=x.shape, dtype=dtype)],
                           convert_to="mlprogram", compute_precision=precision,
                           minimum_deployment_target=ct.target.iOS18)
    return mil.Evaluator(model._mil_program)


@pytest.mark.parametrize("op", OPS)
def test_evaluator_matches_pytorch_op_by_op(op):
    fn, x = OPS[op]
    got = convert_alone(fn, x, ct.precision.FLOAT32).run({"x": x.numpy()})[0]
    want = fn(x).numpy()
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_evaluator_computes_fp16_ops_in_fp16():
    """A value cast to fp16 past 65,504 is inf and above 2,048 loses integers, as on a device:
    the trap an fp16 hash stage falls into."""
    x = torch.tensor([[2_049, 46_336, 70_001]], dtype=torch.int32)
    evaluator = convert_alone(lambda v: v.to(torch.float32) * 1.0 + 0.5, x,
                              ct.precision.FLOAT16)
    got = evaluator.run({"x": x.numpy()})[0]  # quietly: numpy's overflow warning stays off
    np.testing.assert_array_equal(got, np.float32([[2048.0, 46336.0, np.inf]]))
