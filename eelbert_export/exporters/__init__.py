"""Export formats, side by side, each the same shape (convert, quantize, check, run) on one
shared pipeline (``pipeline.py``). Keyed by artifact suffix."""

from eelbert_export.exporters import coreml, onnx, tflite

FORMATS = {fmt.SUFFIX: fmt for fmt in (onnx, coreml, tflite)}
