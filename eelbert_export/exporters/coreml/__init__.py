"""Core ML: torch.export -> coremltools mlprogram (.mlpackage). The hash stage (every op the hash
embedding's output depends on) computes in int32 and float32 in every mode; the rest runs in
fp16 except in float32 mode, the precision the Neural Engine uses. Weights are compressed by
coremltools.optimize.coreml. Core ML predicts only on macOS: elsewhere the converted MIL program
is evaluated op by op (``mil.py``); on macOS ``MLModel.predict`` runs it. The program is built
in ``program.py``, int4's GPTQ rounding in ``gptq.py``. coremltools takes seconds to import, so
each function imports it (through ``mil``) when called.
"""

from __future__ import annotations

import platform
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eelbert_export.contract import pad_to
from eelbert_export.errors import InputError, VerificationError
from eelbert_export.exporters.base import CoreMLOptions, Tensor, quiet

if TYPE_CHECKING:
    from eelbert_export.exporters.deployable import Deployable
    from eelbert_export.hashing import HashSpec

# The matrices the 4- and 6-bit modes compress (docs/coreml.md), by module, and as the
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
# What an app's process runs (bench's memory probe; macOS only): MLModel.predict through
# predict's runner.
MEMORY_PROBE = ("from pathlib import Path\n"
                "from eelbert_export.predict import load_predictor\n"
                "load_predictor(Path(PATH)).run(FEEDS)\n")
COMPUTE_DTYPES = frozenset({"int32", "fp32", "fp16", "bool", "string"})


def conversion(quantization: str) -> str:
    """The conversion a mode starts from: every compressed mode computes in fp16 (the hash stage
    excepted); int4's low-bit matrices are rounded by GPTQ before conversion."""
    return {"none": "float32", "int4": GPTQ_INT4}.get(quantization, "float16")


def convert(deployable: Deployable, example: dict[str, np.ndarray], path: Path,
            options: CoreMLOptions, conversion: str,
            calibration: list[dict[str, np.ndarray]]) -> dict:
    import torch

    from eelbert_export.exporters.coreml import gptq, mil, program

    target, flexible = options.deployment_target, options.flexible
    seq_lens = tuple(sorted(set(options.seq_lens)))
    max_length, max_chars = deployable.max_length, example[deployable.input_names[0]].shape[-1]
    if conversion == GPTQ_INT4:
        deployable = gptq.gptq_int4(deployable, calibration)
    exported = program.exported_program(deployable, example)
    hash_output = program.hash_output_name(exported) if deployable.hashed else None
    inputs = [mil.ct.TensorType(name=name, dtype=np.int32,
                                shape=program.input_shape(name, flexible, seq_lens, max_length,
                                                          max_chars))
              for name in deployable.input_names]
    precision = mil.ct.precision.FLOAT32 if conversion == "float32" else \
        mil.ct.transform.FP16ComputePrecision(
            op_selector=program.outside_hash_stage(hash_output))
    # fp16 conversion narrows gather indices to int16; the contract keeps every integer int32.
    passes = mil.ct.PassPipeline.DEFAULT
    passes.remove_passes(["common::add_int16_cast"])
    try:
        with quiet():
            converted = mil.ct.convert(exported, inputs=inputs,
                                       outputs=[mil.ct.TensorType(name=deployable.output_name)],
                                       convert_to="mlprogram", compute_precision=precision,
                                       minimum_deployment_target=getattr(mil.ct.target, target),
                                       pass_pipeline=passes)
    except RuntimeError as e:  # its weight writer's failure, in the system's temporary folder
        if "FileWriter" not in str(e):
            raise
        raise InputError(f"cannot write {path.name}: the converter could not write its weights "
                         f"in {tempfile.gettempdir()} (a full disk?)") from None
    model, names = program.short_names(converted)  # shares the converted model's weights
    program.describe(model, deployable, hash_output and
                     names[program.converted_name(converted._mil_program, hash_output)])
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


def quantize(path: Path, mode: str, calibration: list[dict[str, np.ndarray]]) -> dict:
    """int8: every weight matrix linear int8, one scale per output channel. The 4- and 6-bit
    modes compress only the matrices measured to tolerate it (LOW_BIT: the feed-forward pair
    and the attention output projection, two thirds of the weights) and keep the rest int8:
    on the default model's dev split, 4 bits everywhere missed cosine 0.999 (int4 0.988,
    palette4 0.972), and the query/key/value, position and pooler matrices each cost more
    than the whole feed-forward block when compressed alone (docs/coreml.md). int4's matrices were
    rounded by GPTQ at conversion (``gptq_int4``) and arrive compressed."""
    from eelbert_export.exporters.coreml import mil

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
    from eelbert_export.exporters.coreml import mil

    return [op.name for op in mil.load_program(path).functions["main"].operations
            if op.op_type == "const" and mil.dtype_name(op.outputs[0]) in ("fp16", "fp32")
            and np.size(op.outputs[0].val) >= threshold]


def load(path: Path):
    from eelbert_export.exporters.coreml import mil

    program = mil.load_program(path)
    metadata = mil.ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata
    hash_output = metadata.get(HASH_OUTPUT_KEY)
    if hash_output is None:
        raise VerificationError(f"{path.name}: no {HASH_OUTPUT_KEY} in its metadata: not an "
                                "eelbert-export Core ML package")
    return program, hash_output


def check(path: Path) -> None:
    """The op set, every computed integer int32, and no fp16 anywhere in the hash stage."""
    from eelbert_export.exporters.coreml import mil

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
    from eelbert_export.exporters.coreml import mil

    return sorted({op.op_type for op in mil.load_program(path).functions["main"].operations})


def verifier_name() -> str:
    from eelbert_export.exporters.coreml import mil

    if platform.system() == "Darwin":
        return f"Core ML (MLModel.predict), coremltools {mil.ct.__version__}"
    return (f"MIL program evaluator (coremltools {mil.ct.__version__} value inference, each op "
            "in its declared dtype): Core ML predicts only on macOS")


def runner(path: Path, threads: int | None = None):
    """Run the package as an app calls it: one row at a time (the enumerated shapes have batch
    1, and conversion specializes reshapes to it), zero-padded to an allowed length. Core ML
    chooses its own threads."""
    from eelbert_export.exporters.coreml import mil

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


def fixed_dims(path: Path) -> dict[str, int]:
    """Batch 1 and the length when enumerated or fixed (the allowed lengths are in the
    sidecar's conversion record); both free for a ranged shape."""
    from eelbert_export.exporters.coreml import mil

    lengths = allowed_lengths(mil.ct.models.MLModel(str(path), skip_model_load=True).get_spec())
    if lengths is None:
        return {}
    return {"batch": 1} | ({"seq": lengths[0]} if len(lengths) == 1 else {})


def allowed_lengths(spec) -> list[int] | None:
    """The enumerated (or fixed) sequence lengths of a package; None for a ranged shape."""
    array = spec.description.input[0].type.multiArrayType
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        return None
    if array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        return sorted(shape.shape[1] for shape in array.enumeratedShapes.shapes)
    return [array.shape[1]]


def hash_runner(path: Path, spec: HashSpec):
    """The package's own hash stage: its ops up to the hash output, evaluated in the dtypes the
    program declares (the Core ML runtime cannot run a sub-graph, even on macOS)."""
    from eelbert_export.exporters.coreml import mil

    program, hash_output = load(path)
    evaluator = mil.Evaluator(program)
    return lambda codes: evaluator.run({"token_codes": codes}, [hash_output])[0]


def tensors(path: Path) -> list[Tensor]:
    """The program's constants (weights in weight.bin, small ones inline in the protobuf), at
    their stored width (int4 and the palettes' uint4/uint6 indices pack below a byte); those
    of the hash stage are named ``hash/...``."""
    from eelbert_export.exporters.coreml import mil

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


def save(model, path: Path) -> None:
    """Save the package without the ExecuTorch debug map coremltools adds (59 kB that Core ML
    never reads: the package manifest does not list it)."""
    model.save(str(path))
    (path / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
