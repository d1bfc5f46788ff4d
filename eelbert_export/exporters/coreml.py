"""Core ML: torch.export -> coremltools mlprogram (.mlpackage). The hash stage (every op the hash
embedding's output depends on) computes in int32 and float32 in every mode; the rest runs in
fp16 except in float32 mode, the precision the Neural Engine uses. Weights are compressed by
coremltools.optimize.coreml. Core ML predicts only on macOS: elsewhere the converted MIL program
is evaluated op by op (``mil.py``); on macOS ``MLModel.predict`` runs it. coremltools takes
seconds to import, so each function imports it (through ``mil``) when called.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import platform
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from eelbert_export import __version__
from eelbert_export.errors import InputError, VerificationError
from eelbert_export.exporters.pipeline import HASH_SCOPE, Deployable, Tensor, gzip_size, pad_to

NAME = "coreml"
SUFFIX = ".mlpackage"
FOLDER = True
QUANTIZATIONS = ("none", "fp16", "int8", "int4", "palette4", "palette6")
TARGETS = ("iOS16", "iOS17", "iOS18")
DEFAULT_TARGET = "iOS18"
# Enumerated sequence lengths, batch 1. Rotten Tomatoes dev texts are 28 tokens on average
# (95% within 48): padding to the next of these lengths costs 1.44x the tokens on average.
DEFAULT_SEQ_LENS = (16, 32, 64, 128)
# The matrices the 4- and 6-bit modes compress (Compression in README), by module, and as the
# converted program names their weights.
LOW_BIT_PARTS = ("intermediate", "output", "attention.output")
LOW_BIT_MODULES = r"model\.encoder\.layers\.\d+\.(" + "|".join(map(re.escape, LOW_BIT_PARTS)) + ")"
LOW_BIT = re.compile(r"layers_\d+_(" + "|".join(p.replace(".", "_") for p in LOW_BIT_PARTS)
                     + ")_weight")
GPTQ_INT4 = "float16, low-bit matrices GPTQ int4"
HASH_OUTPUT_KEY = "eelbert.hash_output"
# Everything a converted EELBERT may contain; anything else fails the export.
ALLOWED_OPS = frozenset({
    "add", "cast", "clip", "concat", "const", "constexpr_affine_dequantize",
    "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "equal", "expand_dims",
    "fill_like", "floor_div", "gather", "gelu", "greater", "greater_equal", "layer_norm",
    "linear", "logical_and", "matmul", "mul", "range_1d", "real_div", "reduce_sum", "reshape",
    "select", "shape", "slice_by_index", "softmax", "sub", "tanh", "transpose"})
STORAGE_OPS = frozenset({"const", "constexpr_affine_dequantize", "constexpr_blockwise_shift_scale",
                         "constexpr_lut_to_dense"})  # weight storage, may hold int4/int8/uint8
COMPUTE_DTYPES = frozenset({"int32", "fp32", "fp16", "bool", "string"})


def conversion(quantization: str) -> str:
    """The conversion a mode starts from: every compressed mode computes in fp16 (the hash stage
    excepted); int4's low-bit matrices are rounded by GPTQ before conversion."""
    return {"none": "float32", "int4": GPTQ_INT4}.get(quantization, "float16")


def convert(deployable: Deployable, example: dict[str, np.ndarray], path: Path, options: dict,
            conversion: str, calibration: list[dict[str, np.ndarray]]) -> dict:
    from eelbert_export.exporters import mil

    target = options.get("deployment_target", DEFAULT_TARGET)
    seq_lens = tuple(sorted(set(options.get("seq_lens") or DEFAULT_SEQ_LENS)))
    flexible = options.get("flexible", False)
    max_length, max_chars = deployable.max_length, example[deployable.input_names[0]].shape[-1]
    if not flexible and seq_lens[-1] < max_length:
        raise InputError(f"--seq-len: the longest length must be at least the model's "
                         f"{max_length} tokens (got {seq_lens[-1]})")
    if not flexible and len(seq_lens) > 1 and TARGETS.index(target) < TARGETS.index("iOS18"):
        raise InputError(f"enumerated shapes on several inputs need iOS18 (got {target}): give "
                         "one --seq-len, --flexible, or --deployment-target iOS18")
    if conversion == GPTQ_INT4:
        deployable = gptq_int4(deployable, calibration)
    program = exported_program(deployable, example)
    hash_output = hash_output_name(program) if deployable.hashed else None
    inputs = [mil.ct.TensorType(name=name, dtype=np.int32,
                                shape=input_shape(name, flexible, seq_lens, max_length,
                                                  max_chars))
              for name in deployable.input_names]
    precision = mil.ct.precision.FLOAT32 if conversion == "float32" else \
        mil.ct.transform.FP16ComputePrecision(op_selector=outside_hash_stage(hash_output))
    # fp16 conversion narrows gather indices to int16; the contract keeps every integer int32.
    passes = mil.ct.PassPipeline.DEFAULT
    passes.remove_passes(["common::add_int16_cast"])
    with quiet():
        converted = mil.ct.convert(program, inputs=inputs,
                                   outputs=[mil.ct.TensorType(name=deployable.output_name)],
                                   convert_to="mlprogram", compute_precision=precision,
                                   minimum_deployment_target=getattr(mil.ct.target, target),
                                   pass_pipeline=passes)
    model, names = short_names(converted)  # shares the converted model's weights folder
    describe(model, deployable, hash_output and
             names[converted_name(converted._mil_program, hash_output)])
    save(model, path)
    shapes = (f"flexible: batch 1-64, seq 1-{max_length}" if flexible else
              f"enumerated: batch 1, seq {', '.join(map(str, seq_lens))}")
    return {"converter": f"coremltools {mil.ct.__version__} from torch.export, torch "
                         f"{torch.__version__}",
            "deployment_target": target, "shapes": shapes,
            "shape_choice": "enumerated shapes run on the Neural Engine at every listed shape; "
                            "a flexible (range) shape only at its default, elsewhere CPU/GPU",
            "compute_precision": "float32" if conversion == "float32" else
            "float16, hash stage int32/float32",
            "runtime": verifier_name()}


def gptq_int4(deployable: Deployable, calibration: list[dict[str, np.ndarray]]) -> Deployable:
    """A copy whose low-bit matrices are rounded to int4, one scale per block of 32, by GPTQ
    (coremltools' layerwise compression): the rounding error of each column is compensated in
    the columns not yet rounded, weighted by the calibration rows' activations. The rounding
    reaches the conversion as coremltools' compression metadata. Round-to-nearest missed the
    cosine floor on the default model's dev split (0.99769); GPTQ met it (README)."""
    from coremltools.optimize.torch.layerwise_compression import (
        LayerwiseCompressor,
        LayerwiseCompressorConfig,
        ModuleGPTQConfig,
    )

    logging.getLogger("coremltools.optimize.torch").setLevel(logging.WARNING)  # per matrix
    config = ModuleGPTQConfig(weight_dtype="uint4", granularity="per_block", block_size=32)
    model = Unpacking(copy.deepcopy(deployable))
    rows = [Row(row) for row in calibration]
    # One layer per pass: the compressor feeds a layer's output to the next as its only input,
    # and a layer also takes the batch's attention bias. Each pass caches its layer's inputs
    # from the model as compressed so far, which is GPTQ's order.
    for i in range(len(deployable.model.encoder.layers)):
        compressor = LayerwiseCompressor(model, LayerwiseCompressorConfig(
            layers=[rf"deployable\.model\.encoder\.layers\.{i}"], input_cacher="gpt",
            module_name_configs={rf"deployable\.{LOW_BIT_MODULES}": config},
            calibration_nsamples=len(rows)))
        with quiet():
            compressor.compress(rows, device="cpu", inplace=True)
    return model.deployable.eval()


class Row:
    """One calibration row as the layerwise compressor's data loader hands it over."""

    def __init__(self, feeds: dict[str, np.ndarray]):
        self.tensors = tuple(torch.from_numpy(value) for value in feeds.values())

    def to(self, device: str) -> Row:
        return self


class Unpacking(torch.nn.Module):
    """The deployable called with one ``Row`` (the compressor calls its model with one
    argument)."""

    def __init__(self, deployable: Deployable):
        super().__init__()
        self.deployable = deployable

    def forward(self, row: Row) -> torch.Tensor:
        return self.deployable(*row.tensors)


def exported_program(deployable: Deployable, example: dict[str, np.ndarray]):
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("seq", max=deployable.max_length)
    dynamic = tuple({0: batch, 1: seq} for _ in deployable.input_names)
    args = tuple(torch.from_numpy(v) for v in example.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UserWarning, FutureWarning))
        return torch.export.export(deployable, args, dynamic_shapes=dynamic) \
            .run_decompositions({})


def hash_output_name(program) -> str:
    """The torch.export node that leaves the hash embedding: coremltools names the MIL var
    after it, which is how the checks and the hash verification find the hash stage."""
    inside = {node for node in program.graph.nodes
              if any(path.endswith(HASH_SCOPE)
                     for path, _ in node.meta.get("nn_module_stack", {}).values())}
    leaving = [node.name for node in inside if any(u not in inside for u in node.users)]
    if len(leaving) != 1:
        raise VerificationError(f"cannot find the hash embedding's output (candidates: "
                                f"{leaving})")
    return leaving[0]


def converted_name(program, name: str) -> str:
    """The MIL var of a torch node: its own name, or the name the fp16 pass gave it."""
    names = {var.name for op in program.functions["main"].operations for var in op.outputs}
    found = [n for n in (name, f"{name}_cast_fp16") if n in names]
    if not found:
        raise VerificationError(f"the converted program has no var for the hash output {name}")
    return found[0]


def short_names(model):
    """Rename every var but the inputs, outputs and parameters to a short one: the converter's
    names (``p_model_..._cast_fp16``) are a fifth of the program's protobuf, stored in every
    package. Parameters keep theirs: compression selects them by name, and Netron shows them.
    Returns the renamed model and the old -> new name map."""
    from eelbert_export.exporters import mil

    spec = model.get_spec()
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    names = {n: n for n in [i.name for i in function.inputs] + list(block.outputs)}

    def rename(name: str) -> str:
        return names.setdefault(name, f"v{len(names)}")
    for op in block.operations:
        parameter = (op.type == "const" or op.type.startswith("constexpr_")) and \
            op.outputs[0].name.startswith("p_")  # constexpr: a weight GPTQ compressed
        for var in op.outputs:
            var.name = names.setdefault(var.name, var.name) if parameter else rename(var.name)
        for argument in op.inputs.values():
            for binding in argument.arguments:
                if binding.HasField("name"):
                    binding.name = rename(binding.name)
        if "name" in op.attributes:
            op.attributes["name"].immediateValue.tensor.strings.values[0] = op.outputs[0].name
    return mil.ct.models.MLModel(spec, weights_dir=model.weights_dir,
                                 skip_model_load=True), names


def input_shape(name: str, flexible: bool, seq_lens: tuple[int, ...], max_length: int,
                max_chars: int):
    from eelbert_export.exporters import mil

    ct, tail = mil.ct, (max_chars,) if name == "token_codes" else ()
    if flexible:
        return ct.Shape((ct.RangeDim(1, 64, 1), ct.RangeDim(1, max_length, seq_lens[-1])) + tail)
    if len(seq_lens) == 1:
        return (1, seq_lens[0]) + tail
    return ct.EnumeratedShapes([(1, n) + tail for n in seq_lens],
                               default=(1, seq_lens[-1]) + tail)


def outside_hash_stage(hash_output: str | None):
    """The fp16 pass's op selector: ops of the hash stage stay int32/float32 (fp16 holds
    integers exactly only up to 2,048 and overflows at 65,504; hash values reach 46,336)."""
    from eelbert_export.exporters import mil

    stages = {}

    def select(op) -> bool:
        function = op.enclosing_block  # the model has no control flow: blocks are functions
        if id(function) not in stages:
            stages[id(function)] = mil.upstream(function, [hash_output])
        return op.name not in stages[id(function)]
    if hash_output is None:
        return lambda op: True
    return select


def describe(model, deployable: Deployable, hash_output: str | None) -> None:
    """The metadata Xcode shows, and the hash output's name for the checks (empty for a table
    model)."""
    labels = ", ".join(deployable.labels)
    model.short_description = (
        f"EELBERT {deployable.title}: text classifier ({labels}) with a hash embedding computed "
        "from each token's characters" if deployable.hashed else
        f"{deployable.title}: text classifier ({labels}) with an embedding table")
    model.author = "eelbert-export"
    model.license = "Apache-2.0"
    model.version = __version__
    model.input_description[deployable.input_names[0]] = (
        "int32 [batch, seq, max_chars]: each token's Unicode code points, zero-padded; "
        "see the sidecar JSON for the text rules" if deployable.hashed else
        "int32 [batch, seq]: each token's id in the WordPiece vocabulary")
    model.input_description["attention_mask"] = "int32 [batch, seq]: 1 for tokens, 0 for padding"
    if deployable.pairs:
        model.input_description["token_type_ids"] = "int32 [batch, seq]: 0 text, 1 text_b"
    model.output_description[deployable.output_name] = (
        f"float32 logits [batch, {len(deployable.labels)}] over the classes {labels}"
        if deployable.output == "logits" else "float32 [batch, seq, hidden] encoder output")
    model.user_defined_metadata.update({"classes": ",".join(deployable.labels),
                                        HASH_OUTPUT_KEY: hash_output or ""})


def quantize(path: Path, mode: str, calibration: list[dict[str, np.ndarray]]) -> dict:
    """int8: every weight matrix linear int8, one scale per output channel. The 4- and 6-bit
    modes compress only the matrices measured to tolerate it (LOW_BIT: the feed-forward pair
    and the attention output projection, two thirds of the weights) and keep the rest int8:
    on the default model's dev split, 4 bits everywhere missed cosine 0.999 (int4 0.988,
    palette4 0.972), and the query/key/value, position and pooler matrices each cost more
    than the whole feed-forward block when compressed alone (README). int4's matrices were
    rounded by GPTQ at conversion (``gptq_int4``) and arrive compressed."""
    from eelbert_export.exporters import mil

    if mode == "fp16":
        return {"quantization": "float16 weights and compute; hash stage int32/float32"}
    from coremltools.optimize import coreml as cto

    int8 = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                       granularity="per_channel")
    weights = weight_names(path, int8.weight_threshold)
    low = [name for name in weights if LOW_BIT.search(name)] if mode.startswith("palette") \
        else []
    model = mil.ct.models.MLModel(str(path), skip_model_load=True)
    with quiet():
        model = cto.linear_quantize_weights(model, cto.OptimizationConfig(
            op_name_configs={name: int8 for name in weights if name not in low}))
        if low:
            nbits = int(mode.removeprefix("palette"))
            config = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits)
            model = cto.palettize_weights(model, cto.OptimizationConfig(
                op_name_configs={name: config for name in low}))
    shutil.rmtree(path)
    save(model, path)
    described = f"int8 weights (linear symmetric, one scale per output channel) for " \
                f"{len(weights) - len(low)} matrices of at least {int8.weight_threshold} weights"
    if low:
        described = f"k-means palettized, {nbits}-bit lookup table per tensor, for the " \
                    f"{len(low)} matrices {', '.join(low)}; " + described
    if mode == "int4":
        gptq = [op.name for op in mil.load_program(path).functions["main"].operations
                if op.op_type == "constexpr_blockwise_shift_scale" and LOW_BIT.search(op.name)]
        described = f"int4 (GPTQ on {len(calibration)} calibration rows, symmetric, one scale " \
                    f"per block of 32) for the {len(gptq)} matrices {', '.join(gptq)}; " + \
                    described
    return {"quantization": described + "; fp16 compute, hash stage int32/float32"}


def weight_names(path: Path, threshold: int) -> list[str]:
    """The float weight constants large enough to compress."""
    from eelbert_export.exporters import mil

    return [op.name for op in mil.load_program(path).functions["main"].operations
            if op.op_type == "const" and mil.dtype_name(op.outputs[0]) in ("fp16", "fp32")
            and np.size(op.outputs[0].val) >= threshold]


def save(model, path: Path) -> None:
    """Save the package without the ExecuTorch debug map coremltools adds (59 kB that Core ML
    never reads: the package manifest does not list it)."""
    model.save(str(path))
    (path / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)


@contextlib.contextmanager
def quiet():
    """coremltools draws a progress bar per pass and warns about the torch version; the checks
    and verification below speak to the artifact instead."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load(path: Path):
    from eelbert_export.exporters import mil

    program = mil.load_program(path)
    metadata = mil.ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata
    hash_output = metadata.get(HASH_OUTPUT_KEY)
    if hash_output is None:
        raise VerificationError(f"{path.name}: no {HASH_OUTPUT_KEY} in its metadata: not an "
                                "eelbert-export Core ML package")
    return program, hash_output


def check(path: Path) -> None:
    """The op set, every computed integer int32, and no fp16 anywhere in the hash stage."""
    from eelbert_export.exporters import mil

    program, hash_output = load(path)
    function = program.functions["main"]
    stage = mil.upstream(function, [hash_output]) if hash_output else set()
    if hash_output and not stage:
        raise VerificationError(f"{path.name}: the hash output {hash_output} is not in the "
                                "program")
    for op in function.operations:
        if op.op_type not in ALLOWED_OPS:
            raise VerificationError(f"{path.name}: op {op.op_type} ({op.name}) is not in the "
                                    "allowed set")
        if op.op_type in STORAGE_OPS:
            continue
        for var in op.outputs:
            dtype = mil.dtype_name(var)
            if dtype not in COMPUTE_DTYPES:
                raise VerificationError(f"{path.name}: op {op.name} ({op.op_type}) computes in "
                                        f"{dtype}; integers must be int32")
            if dtype == "fp16" and op.name in stage:
                raise VerificationError(f"{path.name}: hash-stage op {op.name} ({op.op_type}) "
                                        "computes in fp16, which breaks the hash's exactness")


def ops(path: Path) -> list[str]:
    from eelbert_export.exporters import mil

    return sorted({op.op_type for op in mil.load_program(path).functions["main"].operations})


def verifier_name() -> str:
    from eelbert_export.exporters import mil

    if platform.system() == "Darwin":
        return f"Core ML (MLModel.predict), coremltools {mil.ct.__version__}"
    return (f"MIL program evaluator (coremltools {mil.ct.__version__} value inference, each op "
            "in its declared dtype): Core ML predicts only on macOS")


def runner(path: Path, threads: int | None = None):
    """Run the package as an app calls it: one row at a time (the enumerated shapes have batch
    1, and conversion specializes reshapes to it), zero-padded to an allowed length. Core ML
    chooses its own threads."""
    from eelbert_export.exporters import mil

    spec = mil.ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    lengths = allowed_lengths(spec)
    if platform.system() == "Darwin":
        model = mil.ct.models.MLModel(str(path))
        output = spec.description.output[0].name

        def predict(row: dict[str, np.ndarray]) -> np.ndarray:
            return model.predict(row)[output]
    else:
        program, _ = load(path)
        evaluator = mil.Evaluator(program)

        def predict(row: dict[str, np.ndarray]) -> np.ndarray:
            return evaluator.run(row)[0]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        rows = [predict(fitted({k: v[i:i + 1] for k, v in feeds.items()}, lengths, path))
                for i in range(len(feeds["attention_mask"]))]
        seq = feeds["attention_mask"].shape[1]
        if rows[0].ndim == 3:  # hidden states: back to the batch's padded length
            return np.concatenate([np.pad(r[:, :seq], [(0, 0), (0, max(0, seq - r.shape[1])),
                                                       (0, 0)]) for r in rows])
        return np.concatenate(rows)
    return run


def fitted(row: dict[str, np.ndarray], lengths: list[int] | None,
           path: Path) -> dict[str, np.ndarray]:
    """One row cut to its tokens and zero-padded to the shortest allowed length."""
    used = int(np.flatnonzero(row["attention_mask"][0]).max(initial=0)) + 1
    fit = used if lengths is None else next((n for n in lengths if n >= used), None)
    if fit is None:
        raise InputError(f"{path.name}: takes at most {lengths[-1]} tokens, got {used}")
    return pad_to(row, fit)


def allowed_lengths(spec) -> list[int] | None:
    """The enumerated (or fixed) sequence lengths of a package; None for a ranged shape."""
    array = spec.description.input[0].type.multiArrayType
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        return None
    if array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        return sorted(shape.shape[1] for shape in array.enumeratedShapes.shapes)
    return [array.shape[1]]


def hash_runner(path: Path):
    """The package's own hash stage: its ops up to the hash output, evaluated in the dtypes the
    program declares (the Core ML runtime cannot run a sub-graph, even on macOS)."""
    from eelbert_export.exporters import mil

    program, hash_output = load(path)
    evaluator = mil.Evaluator(program)
    return lambda codes: evaluator.run({"token_codes": codes}, [hash_output])[0]


def tensors(path: Path) -> list[Tensor]:
    """The program's constants (weights in weight.bin, small ones inline in the protobuf), at
    their stored width (int4 and the palettes' uint4/uint6 indices pack below a byte); those
    of the hash stage are named ``hash/...``."""
    from eelbert_export.exporters import mil

    program, hash_output = load(path)
    function = program.functions["main"]
    stage = mil.upstream(function, [hash_output]) if hash_output else set()
    found = []
    for op in function.operations:
        value = op.outputs[0].val if op.op_type == "const" else None
        if value is None or isinstance(value, str) or np.asarray(value).dtype.kind not in "biuf":
            continue
        dtype, count = mil.dtype_name(op.outputs[0]), int(np.size(value))
        bits = re.fullmatch(r"u?int(\d+)", dtype)
        width = int(bits.group(1)) if bits else np.asarray(value).dtype.itemsize * 8
        found.append(Tensor(f"hash/{op.name}" if op.name in stage else op.name, dtype, count,
                            (count * width + 7) // 8))
    return found


def size(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    data = b"".join(p.read_bytes() for p in files)
    return {"bytes": sum(p.stat().st_size for p in files), "gzip_bytes": gzip_size(data),
            "files": {str(p.relative_to(path)): p.stat().st_size for p in files}}


def move(staged: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.move(staged, target)
