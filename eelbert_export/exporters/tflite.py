"""TFLite: LiteRT's PyTorch converter (litert-torch) with static shapes, builtin operators only,
quantized by ai-edge-quantizer and run in the LiteRT interpreter (ai-edge-litert). No
TensorFlow. litert-torch imports jax and transformers (seconds), so each function imports what
it needs when called, inside ``quiet()``: absl, oneDNN and torchao announce themselves on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eelbert_export.contract import pad_to
from eelbert_export.embeddings import HASHED, kind_of
from eelbert_export.errors import InputError, VerificationError
from eelbert_export.exporters.base import Tensor, TFLiteOptions, quiet

if TYPE_CHECKING:
    from eelbert_export.exporters.deployable import Deployable
    from eelbert_export.hashing import HashSpec
# How litert-torch names the hash stage's tensors: after the module of each hashed kind.
HASH_TENSORS = "(" + "|".join(kind.stage_module for kind in HASHED) + ")_word"
# Left out of int8-full's activation quantization: the hash stage (exactness), the embedding's
# mean over a token's n-gram rows and its projection (int8 sums of ~120 rows: cosine 0.958,
# and 98.9% label agreement with the projection quantized), the attention scores (the -10,000
# mask bias would take the whole int8 range: cosine 0.67 with them quantized), and the op
# producing the signature's output, float32 by the I/O contract. The n-gram table and the
# projection keep int8 weights (WEIGHT_ONLY) with float outputs.
FLOAT_SCOPES = (HASH_TENSORS, "Encoder_encoder/Embeddings_embeddings;", "SelfAttention_attention;",
                "serving_default_.*_output")
WEIGHT_ONLY = "(Embedding_ngrams|Linear_project);"
# What an app's process does to load and run a .tflite file, row by row at its static length
# (bench's memory probe).
MEMORY_PROBE = (
    "from ai_edge_litert.interpreter import Interpreter\n"
    "it = Interpreter(model_path=PATH); it.allocate_tensors()\n"
    "run = it.get_signature_runner()\n"
    "n = run.get_input_details()['attention_mask']['shape'][1]\n"
    "for i in range(len(FEEDS['attention_mask'])):\n"
    "    run(**{k: np.pad(v[i:i + 1, :n], [(0, 0), (0, n - min(n, v.shape[1]))]\n"
    "                     + [(0, 0)] * (v.ndim - 2)) for k, v in FEEDS.items()})\n")


def conversion(quantization: str) -> str:
    """Every mode starts from the float32 conversion."""
    return "float32"


def convert(deployable: Deployable, example: dict[str, np.ndarray], path: Path,
            options: TFLiteOptions, conversion: str,
            calibration: list[dict[str, np.ndarray]]) -> dict:
    with quiet():
        import litert_torch
    import torch

    from eelbert_export.exporters.deployable import Named

    seq = deployable.max_length  # --seq-len narrowed the front end (FormatOptions.max_tokens)
    shapes = {name: (1, seq) + tuple(value.shape[2:]) for name, value in example.items()}
    kwargs = {name: torch.zeros(shape, dtype=torch.int32) for name, shape in shapes.items()}
    to_tflite(Named.of(deployable), kwargs, path)
    return {"converter": f"litert-torch {litert_torch.__version__}, torch {torch.__version__}",
            "shapes": f"static: batch 1, seq {seq} (pad shorter texts; the app does the same)",
            "runtime": f"LiteRT interpreter (ai-edge-litert {litert_version()})"}


def quantize(path: Path, mode: str, calibration: list[dict[str, np.ndarray]]) -> dict:
    """ai-edge-quantizer recipes. int8: dynamic range (int8 weights, activations quantized on
    the fly by the kernels); int8-weights: int8 weights dequantized to float32 before each op;
    fp16: float16 weights, float32 compute; int8-full: int8 weights and activations, calibrated
    on real sentences, with the hash stage left out so that its float ops stay exact."""
    with quiet():
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe, recipe_manager

    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    if mode == "int8":
        chosen = recipe.dynamic_wi8_afp32()
        what = "dynamic range: int8 weights per channel, activations quantized at run time"
    elif mode == "int8-weights":
        chosen = recipe.weight_only_wi8_afp32()
        what = "int8 weights per channel, dequantized to float32 before each op"
    elif mode == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(".*", ops, 16,
                                       algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        chosen, what = manager.get_quantization_recipe(), "float16 weights, float32 compute"
    else:
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(".*", ops, activation_num_bits=8, weight_num_bits=8)
        for scope in FLOAT_SCOPES:
            manager.add_quantization_config(
                f".*{scope}.*", ops, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        manager.add_weight_only_config(f".*{WEIGHT_ONLY}.*", ops, 8)
        chosen, what = manager.get_quantization_recipe(), (
            f"int8 weights and activations, calibrated on {len(calibration)} real texts; hash "
            "stage not quantized")
    with quiet():
        tool = quantizer.Quantizer(str(path))
        tool.load_quantization_recipe(chosen)
        calibrated = None
        if tool.need_calibration:
            seq = input_shapes(path)["attention_mask"][1]
            calibrated = tool.calibrate(
                {"serving_default": [pad_to(feeds, seq) for feeds in calibration]})
        result = tool.quantize(calibrated)
    path.write_bytes(bytes(result.quantized_model))
    return {"quantization": what}


def interpreter(path: Path, keep_tensors: bool = False, threads: int | None = None):
    with quiet():
        from ai_edge_litert.interpreter import Interpreter

    with quiet():  # the XNNPACK delegate announces itself when tensors are first allocated
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=keep_tensors,
                         num_threads=threads)
        it.allocate_tensors()
    return it


def fixed_dims(path: Path) -> dict[str, int]:
    batch, seq = input_shapes(path)["attention_mask"]
    return {"batch": int(batch), "seq": int(seq)}


def input_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    runner = interpreter(path).get_signature_runner()
    return {name: tuple(detail["shape"]) for name, detail in runner.get_input_details().items()}


def operator_names(path: Path) -> list[str]:
    """Every operator code in the flatbuffer: builtin names, or CUSTOM:<code> (Flex included)."""
    with quiet():
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    found = []
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) \
                else str(code.customCode)
            found.append(f"CUSTOM:{custom}")
        else:
            found.append(names.get(builtin, f"UNKNOWN:{builtin}"))
    return found


def check(path: Path) -> None:
    """Builtin operators only (a Flex (SELECT_TF_OPS) or custom op needs a runtime the app's
    stock LiteRT does not have), and the contract's dtypes: int32 in, float32 out."""
    foreign = sorted({name.removeprefix("CUSTOM:") for name in operator_names(path)
                      if name.startswith(("CUSTOM:", "UNKNOWN:"))})
    if foreign:
        kind = "Flex (SELECT_TF_OPS)" if all(f.startswith("Flex") for f in foreign) else "custom"
        raise VerificationError(f"{path.name}: {kind} operators, not LiteRT builtins: "
                                f"{', '.join(foreign)}")
    runner_ = interpreter(path).get_signature_runner()
    details = runner_.get_input_details() | runner_.get_output_details()
    wrong = [f"{name} is {np.dtype(d['dtype']).name}" for name, d in details.items()
             if np.dtype(d["dtype"]) != (np.float32 if name in runner_.get_output_details()
                                         else np.int32)]
    if wrong:
        raise VerificationError(f"{path.name}: breaks the I/O contract: {', '.join(wrong)}")


def ops(path: Path) -> list[str]:
    return sorted(set(operator_names(path)))


def runner(path: Path, threads: int | None = None):
    """Run rows one at a time (batch 1), each padded to the static sequence length."""
    runner_ = interpreter(path, threads=threads).get_signature_runner()
    seq = input_shapes(path)["attention_mask"][1]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        if feeds["attention_mask"].shape[1] > seq and feeds["attention_mask"][:, seq:].any():
            raise InputError(f"{path.name}: takes at most {seq} tokens")
        rows = [next(iter(runner_(**pad_to({k: v[i:i + 1] for k, v in feeds.items()},
                                             seq)).values()))
                for i in range(len(feeds["attention_mask"]))]
        result = np.concatenate(rows)
        width = feeds["attention_mask"].shape[1]
        if result.ndim == 3:  # hidden states: back to the batch's padded length
            result = np.pad(result[:, :width], [(0, 0), (0, max(0, width - seq)), (0, 0)])
        return result
    return run


def hash_runner(path: Path, spec: HashSpec):
    """The artifact's own hash stage: the interpreter keeps every intermediate tensor, and the
    hash output is the one tensor named inside the stage's module with the kind's dtype and
    output shape [1, seq, ...] (the concatenation of its n-gram orders)."""
    kind = kind_of(spec)
    it = interpreter(path, keep_tensors=True)
    runner_ = it.get_signature_runner()
    shapes = input_shapes(path)
    seq = shapes["attention_mask"][1]
    want = [1, seq, *kind.stage_shape(spec)]
    outputs = [t for t in it.get_tensor_details() if kind.stage_module in t["name"]
               and list(t["shape"]) == want and np.dtype(t["dtype"]) == kind.stage_dtype]
    if len(outputs) != 1:
        raise VerificationError(f"{path.name}: cannot find the hash stage's output "
                                f"({len(outputs)} candidates)")

    def run(codes: np.ndarray) -> np.ndarray:
        chunks = []
        for start in range(0, codes.shape[1], seq):
            part = codes[:, start:start + seq]
            feeds = {name: np.ones(shape, np.int32) if name == "attention_mask"
                     else np.zeros(shape, np.int32) for name, shape in shapes.items()}
            feeds["token_codes"] = pad_to({"c": part}, seq)["c"]
            runner_(**feeds)
            chunks.append(it.get_tensor(outputs[0]["index"])[:, :part.shape[1]])
        return np.concatenate(chunks, axis=1)
    return run


def tensors(path: Path) -> list[Tensor]:
    """The flatbuffer's non-empty buffers, each named by the first tensor that uses it, with
    the tensor's quantization parameters (per-channel scales and zero points are stored
    beside the buffer: 12 bytes a row of the int8 n-gram table)."""
    with quiet():
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils

    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    found, seen = [], set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if tensor.buffer in seen or data is None or len(data) == 0:
                continue
            seen.add(tensor.buffer)
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
            count = int(np.prod(tensor.shape)) if tensor.shape is not None else 0
            found.append(Tensor(name, dtypes.get(tensor.type, str(tensor.type)), count,
                                len(data) + quantization_bytes(tensor.quantization)))
    return found


def quantization_bytes(quantization) -> int:
    """Bytes of a tensor's stored quantization vectors (float32 scale/min/max, int64 zero
    points)."""
    if quantization is None:
        return 0
    sizes = {"scale": 4, "min": 4, "max": 4, "zeroPoint": 8}
    return sum(width * len(getattr(quantization, field))
               for field, width in sizes.items() if getattr(quantization, field) is not None)


def to_tflite(module, kwargs: dict, path: Path) -> None:
    """Convert with builtin ops only. litert-torch refuses ops that would need TensorFlow
    kernels (Flex): that becomes a one-line reason naming them. The bytes are written here:
    the converter's own file writer exits the process on a full disk (an LLVM fatal error)."""
    with quiet():
        import litert_torch

    try:
        with quiet():
            model = litert_torch.convert(module, sample_kwargs=kwargs).model_content()
    except Exception as e:  # the converter raises bare Exceptions and ConverterErrors
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        flex = [line for line in lines if line.startswith(("TF Select ops:", "Custom ops:"))]
        raise VerificationError(f"{path.name}: not convertible to LiteRT builtin ops: "
                                f"{'; '.join(flex or lines[:1])}") from None
    path.write_bytes(model)
    shorten_names(path)


def shorten_names(path: Path) -> None:
    """Keep the last two modules of each tensor's name, without their Python packages:
    litert-torch names tensors by their whole module path, 70 kB of an int8 file. Two tell the
    attention's output projection from the feed-forward's; constants the converter named
    ``arith.constant`` (LayerNorm weights, a folded embedding table) take their first user's
    name in front, for the audit. The hash module's name stays, for ``hash_runner``; names
    stay unique, for ai-edge-quantizer."""
    with quiet():
        from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    for subgraph in model.subgraphs:
        names = [t.name.decode() if isinstance(t.name, bytes) else t.name
                 for t in subgraph.tensors]
        user = {}
        for op in subgraph.operators:
            for index in op.inputs:
                user.setdefault(int(index), names[op.outputs[0]])
        seen = set()
        for index, tensor in enumerate(subgraph.tensors):
            name = names[index]
            if name.startswith("arith.constant") and index in user:
                name = f"{user[index]}/{name}"
            short = ";".join("/".join(module.rsplit(".", 1)[-1] for module in
                                      part.split("/")[-2:]) for part in name.split(";"))
            short = f"{short}#{index}" if short in seen else short
            seen.add(short)
            tensor.name = short
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def litert_version() -> str:
    from importlib.metadata import version
    return version("ai-edge-litert")
