"""The training side: one loop (``loop``) and its objectives (``objectives``): masked-language
pretraining, fine-tuning on gold labels, and distillation from a teacher (``teacher``,
``transfer``, ``distill``); evaluation and saving. The export side never imports it."""
