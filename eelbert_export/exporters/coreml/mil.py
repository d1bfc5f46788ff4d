"""Run a Core ML program without a Mac: Core ML itself only predicts on macOS, so the converted
MIL program is evaluated op by op, each op computed by coremltools' own value inference (the
semantics its const folding relies on) and its result held in the dtype the program declares
for that op (int32 arithmetic wraps like the device's; an fp16 op rounds to fp16). Ops that
coremltools evaluates too slowly have a definition of their own in ``NUMPY_OPS``, and binary
elementwise ops call coremltools' own operator directly; an op with neither fails loudly.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import torch

from eelbert_export.errors import VerificationError
from eelbert_export.exporters.base import quiet

# coremltools announces, at import, the macOS-only runtime it cannot load and the torch
# version it was not tested with; none of it concerns an export that is verified here.
with quiet():
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_proto
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.ops.defs.iOS15.elementwise_binary import (
        elementwise_binary,
    )


def gelu(op, values: dict) -> np.ndarray:
    """coremltools' exact GELU in float64, vectorized (its own calls math.erf per element). Its
    torch converter emits only the exact mode, for tanh-approximate GELU too."""
    if values.get("mode", "EXACT") != "EXACT":
        raise VerificationError(f"the MIL evaluator has no definition of gelu mode "
                                f"{values['mode']} ({op.name})")
    x = values["x"].astype(np.float64)
    return 0.5 * x * (1 + torch.erf(torch.from_numpy(x / np.sqrt(2))).numpy())


def linear(op, values: dict) -> np.ndarray:
    x, weight = float32(values["x"]), float32(values["weight"])
    bias = values.get("bias")
    return (x @ weight.T + (0 if bias is None else float32(bias))).numpy()


def matmul(op, values: dict) -> np.ndarray:
    x, y = float32(values["x"]), float32(values["y"])
    if values.get("transpose_x"):
        x = x.transpose(-1, -2)
    if values.get("transpose_y"):
        y = y.transpose(-1, -2)
    return (x @ y).numpy()


def float32(value: np.ndarray) -> torch.Tensor:
    """Products run in torch's float32 BLAS, on the one thread ``Evaluator.run`` allows (NumPy's
    BLAS threads and torch's, both spinning on 2 cores, made a row 2.3x slower)."""
    return torch.from_numpy(np.asarray(value)).to(torch.float32)  # fp16 -> fp32 vectorized


# Ops that coremltools' value inference evaluates too slowly: its exact GELU (vectorized), and
# products, in torch's float32 BLAS (there is no fp16 BLAS; these sum in float32, and the result
# is rounded to the op's declared fp16 like every other op's).
NUMPY_OPS = {"gelu": gelu, "linear": linear, "matmul": matmul}


def load_program(path: Path):
    """The MIL program of a saved .mlpackage (its main function)."""
    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return load_proto(spec, spec.specificationVersion, model.weights_dir)


def declared_dtype(var) -> np.dtype:
    return np.dtype(types.nptype_from_builtin(var.dtype))


def dtype_name(var) -> str:
    return types.builtin_to_string(var.dtype)


class Evaluator:
    """Evaluates one MIL function on concrete inputs, returning any of its vars."""

    def __init__(self, program):
        self.function = program.functions["main"]
        self.plans: dict[tuple[str, ...], list] = {}
        self.constants: dict[str, np.ndarray] = {}

    def plan(self, names: tuple[str, ...]) -> list:
        """The ops ``names`` depend on, in program order, each with the inputs to bind (all but
        constants, which already hold their values) and its outputs' declared dtypes. Constants
        (and compressed weights) are evaluated once."""
        if names not in self.plans:
            needed = upstream(self.function, list(names))
            steps = [(op, [v for v in op.get_flattened_inputs() if rebind(v)],
                      [(v.name, declared_dtype(v)) for v in op.outputs])
                     for op in self.function.operations if op.name in needed]
            constant = [step for step in steps if is_constant(step[0])]
            for op, inputs, outs in constant:
                self.store(op, inputs, outs, self.constants)
            self.plans[names] = [step for step in steps if not is_constant(step[0])]
        return self.plans[names]

    @staticmethod
    def store(op, inputs: list, outs: list, env: dict) -> None:
        for (name, dtype), value in zip(outs, evaluate(op, inputs, env)):
            env[name] = np.asarray(value).astype(dtype, copy=False)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list:
        """The values of ``outputs`` (default: the function's outputs); only the ops they
        depend on run, so a sub-graph needs only its own inputs. Quiet: coremltools' value
        inference warns about every int32 value it stores."""
        names = tuple(outputs or [var.name for var in self.function.outputs])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with quiet():
                plan = self.plan(names)
                env = self.constants | {var.name: feeds[name].astype(declared_dtype(var))
                                        for name, var in self.function.inputs.items()
                                        if name in feeds}
                for op, inputs, outs in plan:
                    self.store(op, inputs, outs, env)
        finally:
            torch.set_num_threads(threads)
        return [env[name] for name in names]


def evaluate(op, inputs: list, env: dict) -> tuple:
    if op.op_type == "const":
        return (op.outputs[0].val,)
    if op.op_type in NUMPY_OPS:
        values = {k: env[v.name] if v.name in env else v.val for k, v in op.inputs.items()}
        return (NUMPY_OPS[op.op_type](op, values),)
    if isinstance(op, elementwise_binary):  # what its value inference calls, without binding
        return (op.get_operator()(*(env[v.name] if v.name in env else v.val
                                    for v in (op.x, op.y))),)
    with bound(inputs, env):
        try:
            result = op.materialized_val_inference() if op.op_type.startswith("constexpr_") \
                else op.value_inference()  # compressed weights: coremltools decompresses
        except NotImplementedError:
            raise VerificationError(f"the MIL evaluator has no definition of the Core ML op "
                                    f"{op.op_type!r} ({op.name})") from None
    return result if isinstance(result, tuple) else (result,)


def is_constant(op) -> bool:
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


def rebind(var) -> bool:
    """Whether value inference needs the var bound: computed vars (compressed weights
    included), and scalar boolean constants (NumPy 2 rejects ``keepdims=np.True_``, which is
    how a program loaded from disk holds them)."""
    return var.op is None or var.op.op_type != "const" or isinstance(var.sym_val, np.bool_)


def upstream(function, names: list[str]) -> set[str]:
    """Names of the ops that the vars ``names`` depend on."""
    producers = {var.name: op for op in function.operations for var in op.outputs}
    ops, todo = set(), list(names)
    while todo:
        op = producers.get(todo.pop())
        if op is not None and op.name not in ops:
            ops.add(op.name)
            todo += [var.name for var in op.get_flattened_inputs()]
    return ops


@functools.cache
def tensor_type(dtype: np.dtype, shape: tuple[int, ...]):
    """coremltools builds a new class on every call; one verification binds a few hundred
    distinct (dtype, shape) pairs hundreds of thousands of times."""
    return types.tensor(types.numpy_type_to_builtin_type(dtype), shape)


@contextlib.contextmanager
def bound(inputs: list, env: dict):
    """Give the vars concrete values for value inference, and restore them after."""
    saved = [(var, var._sym_type, var._sym_val) for var in inputs]
    for var in inputs:
        value = env.get(var.name, var.sym_val)
        if isinstance(value, np.ndarray) and value.ndim:
            var._sym_type = tensor_type(value.dtype, value.shape)
            var._sym_val = var._sym_type()
            var._sym_val.val = value
        elif types.is_bool(var._sym_type):
            var._sym_val = var._sym_type(bool(value))
        else:
            var._sym_val = var._sym_type()
            var._sym_val.val = np.asarray(value)
    try:
        yield
    finally:
        for var, sym_type, sym_val in saved:
            var._sym_type, var._sym_val = sym_type, sym_val
