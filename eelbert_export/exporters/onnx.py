"""ONNX: torch's dynamo exporter (opset 18, dynamic batch and sequence axes), default-domain
ops only, run and verified in onnxruntime. int8 and fp16 store the weights in 8 or 16 bits and
restore them to float32 at load, so every op, the hash stage included, computes in float32 and
int32."""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from eelbert_export.errors import VerificationError
from eelbert_export.exporters.base import HASH_SCOPE, OnnxOptions, Tensor, quiet

with quiet():  # its telemetry warns on descriptor 2 at import where HOME's cache is read-only
    import onnxruntime as ort

if TYPE_CHECKING:
    from eelbert_export.exporters.deployable import Deployable
    from eelbert_export.hashing import HashSpec

HASH_MARK = "/hash"  # suffix of the hash stage's node names
DEFAULT_DOMAINS = ("", "ai.onnx")
# Measured node by node on the default model's dev split (docs/onnx.md): the 256-weight token-type
# table cost as much label agreement as a 16k-weight attention projection while saving under
# 1 kB, so int8 keeps every weight tensor smaller than this in float.
MIN_QUANTIZED_WEIGHTS = 4096
# What an app's process does to load and run an .onnx file (bench's memory probe).
MEMORY_PROBE = ("import onnxruntime as ort\n"
                "ort.InferenceSession(PATH, providers=['CPUExecutionProvider']).run(None, FEEDS)\n")


def conversion(quantization: str) -> str:
    """Every mode starts from the float32 conversion."""
    return "float32"


def convert(deployable: Deployable, example: dict[str, np.ndarray], path: Path,
            options: OnnxOptions, conversion: str,
            calibration: list[dict[str, np.ndarray]]) -> dict:
    """Export in float32; ``quantize`` stores the weights in fewer bits afterwards."""
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dynamic = tuple({0: batch, 1: seq} for _ in deployable.input_names)
    args = tuple(torch.from_numpy(v) for v in example.values())
    with quiet():
        program = torch.onnx.export(deployable, args, dynamo=True, opset_version=options.opset,
                                    input_names=deployable.input_names,
                                    output_names=[deployable.output_name],
                                    dynamic_shapes=dynamic, verbose=False)
    program.save(str(path))
    model = onnx.load(str(path))
    name_constants(model)
    for node in model.graph.node:
        if any(s.endswith(HASH_SCOPE) for s in scopes(node)):
            node.name += HASH_MARK
        del node.metadata_props[:]  # stack traces and FX dumps: a fifth of the file
        node.doc_string = ""
    del model.graph.value_info[:]  # intermediate shapes, which onnxruntime infers: 15 kB
    onnx.save(model, str(path))
    opset = next(o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS)
    if opset != options.opset:
        raise VerificationError(f"asked for opset {options.opset}, the exporter wrote {opset}")
    return {"converter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "opset": opset, "dynamic_axes": "batch, seq", "runtime":
            f"onnxruntime {ort.__version__}"}


def name_constants(model: onnx.ModelProto) -> None:
    """Prefix each initializer the exporter named ``val_N`` (folded transposes, hash multiplier
    slices, shapes) with the module that uses it, as parameters already are: the audit and
    Netron then say whose bytes they are."""
    scope = {}
    for node in model.graph.node:
        for name in node.input:
            scope.setdefault(name, max(scopes(node), key=len, default=""))
    renamed = {init.name: f"{scope[init.name]}/{init.name}" for init in model.graph.initializer
               if scope.get(init.name) and not init.name.startswith(f"{scope[init.name]}.")}
    for init in model.graph.initializer:
        init.name = renamed.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]


def scopes(node: onnx.NodeProto) -> list[str]:
    """The torch module path the exporter recorded for a node."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            return ast.literal_eval(prop.value)
    return []


def hash_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The hash embedding's nodes, marked at conversion."""
    return [n for n in model.graph.node if n.name.endswith(HASH_MARK)]


def hash_output(model: onnx.ModelProto) -> str:
    """The hash embedding's output: the float tensor that leaves the hash scope."""
    inside = hash_nodes(model)
    names = {n.name for n in inside}
    produced = {o for n in inside for o in n.output}
    leaving = sorted({i for n in model.graph.node if n.name not in names for i in n.input
                      if i in produced})
    if len(leaving) != 1:
        raise VerificationError(f"cannot find the hash stage's output in the ONNX graph "
                                f"(candidates: {leaving})")
    return leaving[0]


def quantize(path: Path, mode: str, calibration: list[dict[str, np.ndarray]]) -> dict:
    """Weight-only modes: nothing to calibrate."""
    model = onnx.load(str(path))
    if mode == "fp16":
        return float16_weights(model, path)
    return int8_weights(model, path)


def float16_weights(model: onnx.ModelProto, path: Path) -> dict:
    """Store float weights as float16, each cast back to float32 where it is used: half the
    bytes, and every op (the hash stage above all) still computes in float32 and int32.
    onnxconverter-common's fp16 pass was measured to put fp16 casts inside the blocked hash
    stage, which breaks its exactness."""
    converted = 0
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < 2:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       f"{init.name}.fp16")
        cast = onnx.helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                     name=f"{init.name}.to_float32")
        init.CopyFrom(half)
        model.graph.node.insert(0, cast)
        converted += 1
    onnx.save(model, str(path))
    return {"quantization": f"float16 weights ({converted} tensors), cast to float32 at load; "
            "compute stays float32/int32"}


def int8_weights(model: onnx.ModelProto, path: Path) -> dict:
    """Weight-only int8: each weight matrix stored as int8 with one scale per output channel
    (symmetric), restored by a DequantizeLinear where it is used; the ops compute in float32.
    onnxruntime's dynamic quantization (activations quantized at run time too) was measured on
    the default model's dev split and missed the cosine floor (docs/onnx.md)."""
    axis = {}  # per output channel: rows of a Gather table, columns of a MatMul weight
    for node in model.graph.node:
        if node.op_type == "Gather":
            axis[node.input[0]] = 0
        elif node.op_type == "MatMul":
            axis[node.input[1]] = 1
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis[node.input[1]] = 0 if trans_b else 1
    converted = 0
    for init in list(model.graph.initializer):
        weights = numpy_helper.to_array(init)
        if init.name not in axis or weights.dtype != np.float32 or weights.ndim != 2 \
                or weights.size < MIN_QUANTIZED_WEIGHTS:
            continue
        ax = axis[init.name]
        scale = np.abs(weights).max(axis=1 - ax) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(weights / np.expand_dims(scale, 1 - ax)), -127, 127)
        q_init = numpy_helper.from_array(q.astype(np.int8), f"{init.name}.int8")
        s_init = numpy_helper.from_array(scale.astype(np.float32), f"{init.name}.scale")
        node = onnx.helper.make_node("DequantizeLinear", [q_init.name, s_init.name],
                                     [init.name], axis=ax, name=f"{init.name}.dequantize")
        model.graph.initializer.remove(init)
        model.graph.initializer.extend([q_init, s_init])
        model.graph.node.insert(0, node)
        converted += 1
    onnx.save(model, str(path))
    return {"quantization": f"int8 weights ({converted} matrices of at least "
            f"{MIN_QUANTIZED_WEIGHTS} weights, symmetric, one scale per output channel), "
            "DequantizeLinear to float32 at load; compute stays float32/int32"}


def check(path: Path) -> None:
    """Default ONNX domain only: an app's stock onnxruntime needs no custom or contrib ops."""
    model = onnx.load(str(path))
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node
                      if n.domain not in DEFAULT_DOMAINS})
    if foreign:
        raise VerificationError(f"{path.name}: ops outside the default ONNX domain: "
                                f"{', '.join(foreign)}")
    onnx.checker.check_model(model)


def session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(path: Path, threads: int | None = None):
    sess = session(path, threads)
    return lambda feeds: sess.run(None, feeds)[0]


def hash_runner(path: Path, spec: HashSpec):
    """Run the artifact's own hash stage: its subgraph from token_codes to the hash output."""
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "hash.onnx"
        onnx.utils.extract_model(str(path), str(sub), ["token_codes"],
                                 [hash_output(onnx.load(str(path)))])
        sess = session(sub)
    return lambda codes: sess.run(None, {"token_codes": codes})[0]


def fixed_dims(path: Path) -> dict[str, int]:
    return {}  # dynamic batch and sequence


def ops(path: Path) -> list[str]:
    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


def tensors(path: Path) -> list[Tensor]:
    """The stored tensors: initializers and Constant nodes' values."""
    model = onnx.load(str(path))
    stored = [numpy_helper.to_array(init) for init in model.graph.initializer]
    names = [init.name for init in model.graph.initializer]
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                stored.append(numpy_helper.to_array(attr.t))
                names.append(node.output[0])
    return [Tensor(name, a.dtype.name, a.size, a.nbytes) for name, a in zip(names, stored)]

