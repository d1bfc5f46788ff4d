"""ExecuTorch (.pte), PyTorch's own on-device runtime: torch.export with dynamic batch and
sequence axes, lowered by ``to_edge_transform_and_lower`` with the XNNPACK partitioner (the
float matrix work goes to XNNPACK; the hash stage's integer ops, which XNNPACK does not take,
run in ExecuTorch's portable kernels, exactly), run and verified in ExecuTorch's Python runtime
(``executorch.runtime``, which imports torch: an app links the C++ runtime instead). int8 is
XNNPACK's dynamic quantization (int8 weights per channel, activations quantized at run time),
applied by torchao's PT2E flow before lowering.

A .pte names none of its constants, and XNNPACK keys its weights by their sha256: the export
records which parameter each stored blob holds (``Conversion.tensor_names``, in the sidecar),
and the audit groups the blobs by it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eelbert_export.contract import TensorInfo, read_sidecar, sidecar_path
from eelbert_export.embeddings import kind_of
from eelbert_export.errors import VerificationError
from eelbert_export.exporters.base import HASH_SCOPE, ExecuTorchOptions, Tensor, quiet

if TYPE_CHECKING:
    from eelbert_export.exporters.deployable import Deployable
    from eelbert_export.hashing import HashSpec

MAX_BATCH = 64  # the batch axis' upper bound in the program; longer batches run in chunks
DELEGATE = "XnnpackBackend"
# What an app's process does to load and run a .pte (bench's memory probe).
MEMORY_PROBE = ("import torch\n"
                "from executorch.runtime import Runtime\n"
                "m = Runtime.get().load_program(PATH).load_method('forward')\n"
                "m.execute([torch.from_numpy(v) for v in FEEDS.values()])\n")


def conversion(quantization: str) -> str:
    """int8 is quantized before lowering, so it is a conversion of its own."""
    return quantization


def convert(deployable: Deployable, example: dict[str, np.ndarray], path: Path,
            options: ExecuTorchOptions, conversion: str,
            calibration: list[dict[str, np.ndarray]]) -> dict:
    import torch

    with quiet():
        from executorch.exir import to_edge_transform_and_lower

    longest = deployable.max_length
    batch, seq = torch.export.Dim("batch", max=MAX_BATCH), torch.export.Dim("seq", max=longest)
    dynamic = tuple({0: batch, 1: seq} for _ in deployable.input_names)
    args = tuple(torch.from_numpy(v) for v in example.values())
    with quiet():
        program = torch.export.export(deployable, args, dynamic_shapes=dynamic, strict=False)
        if conversion == "int8":
            program = int8_dynamic(program, args, dynamic)
        names = blob_names(program)
        lowered = to_edge_transform_and_lower(program, partitioner=[outside_hash_stage()])
        buffer = lowered.to_executorch().buffer
    path.write_bytes(buffer)
    delegated = sum(1 for d in plan(path).delegates if d.id == DELEGATE)
    return {"converter": f"torch.export + executorch.exir {version()} (XNNPACK partitioner), "
                         f"torch {torch.__version__}",
            "runtime": f"ExecuTorch {version()} (XNNPACK delegate, portable kernels)",
            "shapes": f"dynamic: batch 1-{MAX_BATCH}, seq 1-{longest}",
            "delegated_subgraphs": delegated, "tensor_names": names}


def outside_hash_stage():
    """XNNPACK's partitioner, less the hash stage: XNNPACK would take the fixed hash's float
    tail (its division and concatenation), where the debug dump cannot see the stage's output.
    The stage runs in portable kernels, upstream of every delegated subgraph."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class OutsideHashStage(XnnpackPartitioner):
        def partition(self, exported_program):
            result = super().partition(exported_program)
            for node in result.tagged_exported_program.graph.nodes:
                stack = node.meta.get("nn_module_stack") or {}
                if any(HASH_SCOPE in path for path, _ in stack.values()):
                    node.meta.pop("delegation_tag", None)
            used = {n.meta.get("delegation_tag")
                    for n in result.tagged_exported_program.graph.nodes}
            for tag in set(result.partition_tags) - used:
                del result.partition_tags[tag]
            return result
    return OutsideHashStage()


def int8_dynamic(program, args: tuple, dynamic: tuple):
    """XNNPACK's dynamic int8: per-channel symmetric int8 weights for every linear layer,
    activations quantized per run; the integer hash stage and the embeddings stay as they
    are. Dynamic quantization has no activation ranges to calibrate: one pass of the tracing
    example runs the prepared graph's observers."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class LinearOnly(XNNPACKQuantizer):
        """Linear layers only, and the graph's scalars left as they are: XNNPACKQuantizer
        turns them into float tensors first, which makes the hash stage's integer ``+ 1``
        float."""

        def transform_for_annotation(self, model):
            return model

    quantizer = LinearOnly().set_module_type(
        torch.nn.Linear, get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    prepared(*args)
    return torch.export.export(convert_pt2e(prepared), args, dynamic_shapes=dynamic,
                               strict=False)


def blob_names(program) -> dict[str, TensorInfo]:
    """sha256 of each constant's bytes -> the model's name for it: a parameter's own name, or
    for a constant the quantizer made, the module of its first user. Blobs are stored by value
    (XNNPACK keys its weights by this sha256; other constants hold the same bytes)."""
    signature = program.graph_signature
    by_input = signature.inputs_to_parameters | signature.inputs_to_buffers | \
        signature.inputs_to_lifted_tensor_constants
    values = program.state_dict | program.constants
    names = {}
    for node in program.graph.nodes:
        target = by_input.get(node.name)
        if node.op != "placeholder" or target is None or target not in values:
            continue
        tensor = values[target]
        if not target.startswith("model."):
            target = f"{owner(node)}/{target}"
        data = tensor.detach().contiguous().cpu()
        key = hashlib.sha256(data.numpy().tobytes()).hexdigest()
        names.setdefault(key, TensorInfo(target, str(data.dtype).removeprefix("torch."),
                                         tuple(data.shape)))
    return names


def owner(node) -> str:
    """The module a constant serves: the deepest module of the first op downstream of it that
    records one (a quantized weight passes through its dequantize first)."""
    seen, frontier = set(), list(node.users)
    while frontier:
        user = frontier.pop(0)
        stack = user.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        if path:
            return path
        seen.add(user)
        frontier += [u for u in user.users if u not in seen]
    return ""


def quantize(path: Path, mode: str, calibration: list[dict[str, np.ndarray]]) -> dict:
    """int8 was applied before lowering (``int8_dynamic``)."""
    return {"quantization": "XNNPACK dynamic int8: int8 weights per channel for every linear "
                            "layer, activations quantized at run time; hash stage and "
                            "embedding tables float32/int32"}


def check(path: Path) -> None:
    """The program loads in the runtime, takes the contract's int32 inputs and gives one
    float32 output."""
    with quiet():
        from executorch.exir.scalar_type import ScalarType

    meta = method(path)[0].metadata
    wrong = [f"input {i} is not int32" for i in range(meta.num_inputs())
             if meta.input_tensor_meta(i).dtype() != ScalarType.INT]
    if meta.num_outputs() != 1 or meta.output_tensor_meta(0).dtype() != ScalarType.FLOAT:
        wrong.append("its output is not one float32 tensor")
    if wrong:
        raise VerificationError(f"{path.name}: breaks the I/O contract: {', '.join(wrong)}")


def method(path: Path, debug_buffer: int = 0):
    """The program's forward method (and the program); ``debug_buffer`` > 0: record every
    kernel's output (ETDump) in a buffer of that many bytes."""
    with quiet():
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(str(path), enable_etdump=debug_buffer > 0,
                                             debug_buffer_size=debug_buffer)
        return program.load_method("forward"), program


def plan(path: Path):
    with quiet():
        from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary(path.read_bytes()).program.execution_plan[0]


def ops(path: Path) -> list[str]:
    """The portable kernels the program calls, and its delegates."""
    execution = plan(path)
    names = {execution.operators[i.instr_args.op_index].name
             for chain in execution.chains for i in chain.instructions
             if hasattr(i.instr_args, "op_index")}
    return sorted(names | {f"delegate:{d.id}" for d in execution.delegates})


def runner(path: Path, threads: int | None = None):
    import torch

    if threads:
        with quiet():  # torchao and the runtime announce themselves on descriptor 2
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
    run_method = method(path)[0]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(feeds["attention_mask"])
        return np.concatenate([
            run_method.execute([torch.from_numpy(np.ascontiguousarray(v[i:i + MAX_BATCH]))
                                for v in feeds.values()])[0].numpy()
            for i in range(0, rows, MAX_BATCH)])
    return run


def hash_runner(path: Path, spec: HashSpec):
    """The artifact's own hash stage: the runtime records every portable kernel's output in
    execution order (ETDump with a debug buffer), and the stage's output is the first tensor of
    the kind's shape and dtype: the n-gram table's int32 row ids [1, tokens, slots, probes], or
    the fixed hash's float32 [1, tokens, dim]. Inside the stage every tensor has another shape
    (its orders' slices, the n-gram axis), and everything downstream of it comes after it."""
    import torch

    with quiet():
        from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc

    kind = kind_of(spec)
    # The dump holds every kernel's output: about 8 tensors of [grams, dim] values a token.
    per_token = 16 * spec.grams * max(spec.dim, spec.probes * spec.orders) * 4
    chunk = max(1, min(16, (256 << 20) // per_token))

    def run(codes: np.ndarray) -> np.ndarray:
        return np.concatenate([stage(codes[:, i:i + chunk])
                               for i in range(0, codes.shape[1], chunk)], axis=1)

    def stage(codes: np.ndarray) -> np.ndarray:
        run_method, program = method(path, debug_buffer=chunk * per_token + (16 << 20))
        tokens = codes.shape[1]
        feeds = [codes, np.ones((1, tokens), np.int32)]
        if run_method.metadata.num_inputs() == 3:
            feeds.append(np.zeros((1, tokens), np.int32))
        run_method.execute([torch.from_numpy(np.ascontiguousarray(f)) for f in feeds])
        with tempfile.TemporaryDirectory() as tmp:
            dump, debug = Path(tmp) / "run.etdp", Path(tmp) / "debug.bin"
            program.write_etdump_result_to_file(str(dump), str(debug))
            with quiet():  # its schema reader warns of a deprecated importlib call
                events = deserialize_from_etdump_flatcc(dump.read_bytes()).run_data[-1].events
            data = debug.read_bytes()
        shape = [1, tokens, *kind.stage_shape(spec)]
        dtype = {"int32": "INT", "float32": "FLOAT"}[kind.stage_dtype]
        found = next((e.debug_event.debug_entry.tensor for e in events
                      if e.debug_event is not None and e.debug_event.debug_entry is not None
                      and e.debug_event.debug_entry.tensor is not None
                      and list(e.debug_event.debug_entry.tensor.sizes) == shape
                      and e.debug_event.debug_entry.tensor.scalar_type.name == dtype), None)
        if found is None:
            raise VerificationError(f"{path.name}: cannot find the hash stage's output")
        count = int(np.prod(shape))
        return np.frombuffer(data, kind.stage_dtype, count, found.offset).reshape(shape)
    return run


def fixed_dims(path: Path) -> dict[str, int]:
    return {}  # dynamic batch (in chunks of MAX_BATCH) and sequence


def tensors(path: Path) -> list[Tensor]:
    """The program's stored constants (its own constant buffers and the delegate's named
    blobs), each named by the parameter the export recorded for its bytes."""
    with quiet():
        from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(path.read_bytes())
    names = read_sidecar(path).conversion.tensor_names if sidecar_path(path).is_file() \
        else {}
    blobs = [(key, bytes(pte.named_data.buffers[entry.buffer_index]))
             for key, entry in (pte.named_data.pte_data.items() if pte.named_data else ())]
    blobs += [(hashlib.sha256(bytes(b.storage)).hexdigest(), bytes(b.storage))
              for b in pte.program.constant_buffer if len(b.storage)]
    found = []
    for key, data in blobs:  # XNNPACK keys a weight's scales "scale_" + their sha256
        info = names.get(key.removeprefix("scale_"), TensorInfo("constant", "uint8",
                                                                 (len(data),)))
        found.append(Tensor(info.name, info.dtype, int(np.prod(info.shape)), len(data)))
    return found


def version() -> str:
    from importlib.metadata import version as installed

    return installed("executorch")
