"""int4 by GPTQ (coremltools' layerwise compression), applied to the torch model before
conversion: the one Core ML mode that needs calibration rows."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from eelbert_export.exporters.base import quiet
from eelbert_export.exporters.coreml import LOW_BIT_MODULES
from eelbert_export.exporters.deployable import Deployable


def gptq_int4(deployable: Deployable, calibration: list[dict[str, np.ndarray]]) -> Deployable:
    """A copy whose low-bit matrices are rounded to int4, one scale per block of 32, by GPTQ
    (coremltools' layerwise compression): the rounding error of each column is compensated in
    the columns not yet rounded, weighted by the calibration rows' activations. The rounding
    reaches the conversion as coremltools' compression metadata. Round-to-nearest missed the
    cosine floor on the default model's dev split (0.99769); GPTQ met it (docs/coreml.md)."""
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
