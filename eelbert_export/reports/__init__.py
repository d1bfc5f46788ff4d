"""Reports on models and artifacts: parts and bytes of a model (``summary``), where an artifact's
bytes go (``audit``), every format and mode of a model at once (``export_all``), latency and
memory (``bench``), model cards and the zoo's comparison (``cards``)."""
