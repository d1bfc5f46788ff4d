"""``eelbert-export predict``: the same texts through a checkpoint in PyTorch or through an
exported artifact in its own runtime, read back with the artifact's sidecar."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eelbert_export import checkpoint
from eelbert_export.errors import InputError
from eelbert_export.exporters import FORMATS
from eelbert_export.exporters.pipeline import Deployable, feeds, uses_pairs
from eelbert_export.text import TextEncoder, TextSpec
from eelbert_export.train import Examples, batches

Item = tuple[str, "str | None"]


@dataclass
class Predictor:
    labels: list[str]
    encoder: TextEncoder
    input_names: list[str]
    run: Callable[[dict[str, np.ndarray]], np.ndarray]
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
    if path.suffix == ".pt":
        ckpt = checkpoint.load(path)
        if ckpt.kind != "classifier":
            raise InputError(f"{path}: a pretrained encoder has no classifier to predict with")
        deployable = Deployable(ckpt.model, pairs=uses_pairs(ckpt)).eval()
        if threads:
            torch.set_num_threads(threads)

        def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                return deployable(*map(torch.from_numpy, inputs.values())).numpy()

        return Predictor(ckpt.labels, ckpt.text_encoder(), deployable.input_names, run,
                         f"PyTorch {torch.__version__}")
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise InputError(f"{path}: not a checkpoint (.pt) or an exported artifact "
                         f"({', '.join(FORMATS)})")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    sidecar = read_sidecar(path)
    text = {k: v for k, v in sidecar["text"].items() if k != "rules"}
    encoder = TextEncoder(TextSpec.from_dict(text), sidecar["max_chars"] or 1)  # 1: a table
    return Predictor(sidecar["model"]["labels"], encoder,
                     [i["name"] for i in sidecar["inputs"]], fmt.runner(path, threads),
                     sidecar["conversion"]["runtime"])


def read_sidecar(artifact: Path) -> dict:
    path = artifact.with_name(artifact.name + ".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing: the artifact's sidecar says how to call it") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: not a valid sidecar (JSON)") from None


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
