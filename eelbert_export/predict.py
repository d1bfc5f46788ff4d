"""``eelbert-export predict``: the same texts through a checkpoint in PyTorch or through an
exported artifact in its own runtime, read back with the artifact's sidecar. An ONNX or TFLite
artifact is run without importing torch."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelbert_export.contract import Feeds, feeds, read_sidecar
from eelbert_export.errors import InputError
from eelbert_export.exporters.base import format_of, reading
from eelbert_export.tasks import Examples, batches
from eelbert_export.text import TextEncoder

Item = tuple[str, "str | None"]


@dataclass
class Predictor:
    labels: list[str]
    encoder: TextEncoder
    input_names: list[str]
    run: Callable[[Feeds], np.ndarray]
    runtime: str

    def logits(self, items: list[Item]) -> np.ndarray:
        pairs = [p or "" for _, p in items] if "token_type_ids" in self.input_names else None
        data = Examples([t for t, _ in items], pairs, None)
        return np.concatenate([self.run(feeds(self.encoder.encode(texts, chunk_pairs),
                                              self.input_names))
                               for texts, chunk_pairs in batches(data)])


def load_predictor(path: Path, threads: int | None = None) -> Predictor:
    """``threads``: the runtime's own default when None."""
    path = Path(path)
    info = format_of(path)
    if info is None:
        return checkpoint_predictor(path, threads)
    sidecar = read_sidecar(path)
    encoder = TextEncoder(sidecar.text, sidecar.max_chars)
    with reading(path):
        run = info.load().runner(path, threads)
    return Predictor(sidecar.labels, encoder, sidecar.input_names, run,
                     sidecar.conversion["runtime"])


def checkpoint_predictor(path: Path, threads: int | None) -> Predictor:
    import torch

    from eelbert_export import checkpoint
    from eelbert_export.exporters.deployable import Deployable

    ckpt = checkpoint.load(path)
    if ckpt.kind != "classifier":
        raise InputError(f"{path}: a pretrained encoder has no classifier to predict with")
    deployable = Deployable.of(ckpt)
    if threads:
        torch.set_num_threads(threads)
    return Predictor(ckpt.labels, ckpt.text_encoder(), deployable.input_names,
                     lambda inputs: deployable.outputs([inputs]), f"PyTorch {torch.__version__}")


def read_texts(texts: list[str], text_file: Path | None) -> list[Item]:
    """Texts from the arguments, or from a file: one per line, or a CSV with a text column."""
    items: list[Item] = [(t, None) for t in texts]
    if text_file is not None:
        try:
            content = Path(text_file).read_bytes().decode("utf-8-sig")
        except OSError as e:
            raise InputError(f"cannot read {text_file}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise InputError(f"{text_file}: not UTF-8 text (bad byte at offset {e.start})") \
                from None
        if Path(text_file).suffix == ".csv":
            reader = csv.DictReader(io.StringIO(content))
            if "text" not in (reader.fieldnames or []):
                raise InputError(f"{text_file}: missing column text (found: "
                                 f"{', '.join(reader.fieldnames or []) or 'none'})")
            items += [(row["text"] or "", row.get("text_b")) for row in reader]
        else:
            items += [(line, None) for line in content.splitlines() if line.strip()]
    if not items:
        raise InputError("no texts: give TEXT arguments or --file")
    return items
