"""Export formats, side by side: ``base.py`` (the interface, each format's facts and options,
the registry by suffix), ``deployable.py`` (the traced module), one module per format
(``onnx``, ``coreml/``, ``tflite``), ``verify.py`` and ``pipeline.py`` (one export). Importing
this package loads no format."""
