"""``eelbert-export predict``: the same texts through a checkpoint in PyTorch or through an
exported artifact in its own runtime, read back with the artifact's sidecar. An ONNX or TFLite
artifact is run without importing torch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelbert_export import front_end
from eelbert_export.contract import Feeds, Sidecar, VectorsCheck, feeds, read_sidecar
from eelbert_export.errors import InputError, VerificationError
from eelbert_export.exporters.base import FORMATS, format_of, reading
from eelbert_export.files import read_csv, read_text, sha256_text
from eelbert_export.front_end import read_vectors
from eelbert_export.tasks import Examples, batches
from eelbert_export.text import TextEncoder

Item = tuple[str, "str | None"]


@dataclass
class Predictor:
    path: Path
    labels: list[str]
    encoder: TextEncoder
    input_names: list[str]
    run: Callable[[Feeds], np.ndarray]
    runtime: str
    max_tokens: int  # the longest input it takes: the front end's, or a static shape's


    def logits(self, items: list[Item]) -> np.ndarray:
        """Logits in the order of ``items``, run in batches of texts of similar length (each
        batch is padded to its longest)."""
        takes_pairs = "token_type_ids" in self.input_names
        if not takes_pairs and any(p for _, p in items):
            raise InputError("this model takes one text: text_b given (drop the text_b column)")
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1] or ""))
        pairs = [items[i][1] or "" for i in order] if takes_pairs else None
        data = Examples([items[i][0] for i in order], pairs, None)
        logits = np.concatenate([self.run(feeds(self.encoder.encode(texts, chunk_pairs),
                                                self.input_names))
                                 for texts, chunk_pairs in batches(data)])
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise InputError(f"{self.path}: the sidecar names {len(self.labels)} labels but the "
                             f"model gives outputs of shape {list(logits.shape[1:])}: export it "
                             "again")
        return logits[np.argsort(order)]

    def stream(self, items: list[Item], progress: Callable[[int], None] = lambda n: None,
               window: int = 4096) -> Iterator[tuple[Item, np.ndarray]]:
        """Each item with its logits, a window at a time, so that a long file's first
        predictions come out while the rest run; ``progress`` hears each window's size."""
        for start in range(0, len(items), window):
            chunk = items[start:start + window]
            yield from zip(chunk, self.logits(chunk))
            progress(len(chunk))


def load_predictor(path: Path, threads: int | None = None) -> Predictor:
    """``threads``: the runtime's own default when None."""
    path = Path(path)
    info = format_of(path)
    if info is None:
        return checkpoint_predictor(path, threads)
    sidecar = read_sidecar(path)
    tokenizer = shipped_tokenizer(path, sidecar)
    try:
        encoder = TextEncoder(sidecar.text, sidecar.max_chars, tokenizer)
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise InputError(f"{path.parent / sidecar.front_end.tokenizer}: not a tokenizer.json "
                         f"({str(e).splitlines()[0][:120]})") from None
    with reading(path):
        run = info.load().runner(path, threads)
    static = [d for t in sidecar.inputs for d in t.shape[1:2] if isinstance(d, int)]
    return Predictor(path, sidecar.labels, encoder, sidecar.input_names, run,
                     sidecar.conversion.runtime, min([sidecar.text.max_length, *static]))


def shipped_tokenizer(path: Path, sidecar: Sidecar) -> str | None:
    """The tokenizer.json beside the artifact, as an app loads it, if the sidecar names one."""
    name, digest = sidecar.front_end.tokenizer, sidecar.front_end.tokenizer_sha256
    if name is None:
        return None
    tokenizer = path.parent / name
    try:
        text = tokenizer.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{tokenizer} is missing: the artifact's front end ships beside it") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {tokenizer}: {getattr(e, 'strerror', None) or e}") \
            from None
    if sha256_text(text) != digest:
        raise InputError(f"{tokenizer} is not the tokenizer {path.name} was exported with "
                         "(sha256 differs from its sidecar)")
    return text


def check_vectors(path: Path) -> VectorsCheck:
    """The artifact's test vectors through ``predict``'s own path: the shipped tokenizer, the
    sidecar's inputs and the runtime; VerificationError if any vector is not reproduced."""
    predictor = load_predictor(path, threads=1)
    sidecar = read_sidecar(path)
    vectors = read_vectors(path.parent / sidecar.front_end.vectors)
    check = front_end.check(vectors, predictor.encoder, predictor.input_names, predictor.run)
    if not check.reproduced:
        raise VerificationError(f"{path.name}: {check.describe()}")
    return check


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
    return Predictor(path, ckpt.labels, ckpt.text_encoder(), deployable.input_names,
                     lambda inputs: deployable.outputs([inputs]), f"PyTorch {torch.__version__}",
                     ckpt.text_spec.max_length)


def is_text(argument: Path) -> bool:
    """Whether predict's first argument is a text rather than a model: it names nothing on disk
    and has no model suffix."""
    return not argument.exists() and argument.suffix not in (".pt", *FORMATS)


def read_texts(texts: list[str], text_file: Path | None) -> list[Item]:
    """Texts from the arguments, or from a file: one per line, or a CSV with a text column. An
    argument with bytes that are not UTF-8 (Python keeps them as lone surrogates) is refused."""
    for text in texts:
        bad = next((c for c in text if "\udc80" <= c <= "\udcff"), None)
        if bad is not None:
            raise InputError(f"the text {text.encode('utf-8', 'surrogateescape')[:40]!r} is not "
                             f"UTF-8 (byte 0x{ord(bad) - 0xdc00:02x})")
    items: list[Item] = [(t, None) for t in texts]
    if text_file is not None:
        if Path(text_file).suffix == ".csv":
            items += [(row["text"] or "", row.get("text_b"))
                      for row in read_csv(text_file, ("text",))[1]]
        else:
            items += [(line, None) for line in read_text(text_file).splitlines() if line.strip()]
    if not items:
        raise InputError("no texts: give TEXT arguments or --file")
    return items
