"""Building the Core ML program: torch.export with symbolic axes, the hash stage's output found
and kept out of fp16, short var names, the input shapes, and the metadata Xcode shows."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from eelbert_export import __version__
from eelbert_export.errors import VerificationError
from eelbert_export.exporters.base import HASH_SCOPE
from eelbert_export.exporters.coreml import HASH_OUTPUT_KEY, mil
from eelbert_export.exporters.deployable import Deployable


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
