"""The export pipeline every format shares: checkpoint -> canonical deployable module -> convert
-> (quantize) -> verify in the format's own runtime -> artifact plus JSON sidecar, written
atomically. A format module supplies ``NAME``, ``SUFFIX``, ``FOLDER`` (the artifact is a
folder), ``QUANTIZATIONS``, ``conversion``, ``convert``, ``quantize``, ``check``, ``ops``,
``runner``, ``hash_runner``, ``tensors``, ``size`` and ``move``; everything else lives here once.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eelbert_export import __version__, checkpoint
from eelbert_export.data import sha256_file
from eelbert_export.errors import InputError, SpecError, VerificationError
from eelbert_export.files import atomic_path, check_writable
from eelbert_export.hashing import hash_stage, stage_reference, token_codes
from eelbert_export.model import Classifier
from eelbert_export.tasks import TASKS, load_task
from eelbert_export.train import Examples, batches, examples
from eelbert_export.zoo import default_model

# Varied real text for verification when the model's task data is not prepared: non-ASCII,
# long words, an empty string, and a text long enough to fill max_length.
SAMPLE_TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "The plot is nothing but boilerplate clichés, and the acting is wooden.",
    "",
    "Naïve, überlong and oddly charming: a déjà vu of every coming-of-age story.",
    "Antidisestablishmentarianism meets pneumonoultramicroscopicsilicovolcanoconiosis.",
    "東京で見た映画はとても良かった。",
    "Это был лучший фильм года!",
    "🙂🙂 loved it 🎬",
    "Not bad at all, if you can forgive the ending.",
    "I wanted to like it; I really did.",
    " ".join(["A long, meandering review that keeps going"] * 40),
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
]
FLOAT_LOGIT_TOLERANCE = 1e-4
MIN_LABEL_AGREEMENT = 0.99
MIN_COSINE = 0.999
OUTPUTS = ("logits", "hidden")
HASH_SCOPE = "encoder.embeddings.word"  # the hash embedding's module path in every model


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One stored tensor of an artifact, as the audit counts it: its bytes as stored."""

    name: str
    dtype: str
    count: int
    nbytes: int


@dataclasses.dataclass
class Memo:
    """What exporting one model in many modes (``all``) computes once: each format's conversion
    of each kind (copied into ``folder``), and the PyTorch reference outputs."""

    folder: Path
    conversions: dict = dataclasses.field(default_factory=dict)
    references: dict = dataclasses.field(default_factory=dict)


class Deployable(nn.Module):
    """The canonical I/O contract of every artifact: int32 ``token_codes`` [batch, seq,
    max_chars], ``attention_mask`` [batch, seq] (and ``token_type_ids`` for pair models) ->
    float32 ``logits`` [batch, num_labels] or ``last_hidden_state`` [batch, seq, hidden]. A
    table model (the bert-tiny baseline) takes int32 ``input_ids`` [batch, seq] instead of
    codes."""

    def __init__(self, model: Classifier, output: str = "logits", pairs: bool = False,
                 labels: list[str] | None = None, title: str = "", max_length: int = 128):
        super().__init__()
        self.model, self.output, self.pairs = model, output, pairs
        self.labels, self.title, self.max_length = labels or [], title, max_length

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.output == "hidden":
            return self.model.encoder(tokens, attention_mask, token_type_ids)
        return self.model(tokens, attention_mask, token_type_ids)

    @property
    def hashed(self) -> bool:
        return self.model.encoder.config.embedding == "hash"

    @property
    def input_names(self) -> list[str]:
        return ["token_codes" if self.hashed else "input_ids", "attention_mask"] + \
            (["token_type_ids"] if self.pairs else [])

    @property
    def output_name(self) -> str:
        return "logits" if self.output == "logits" else "last_hidden_state"


def verification_texts(ckpt: checkpoint.Checkpoint,
                       data_dir: Path | None) -> tuple[str, Examples]:
    """What verification runs (and a line saying so): the model's dev split with its gold
    labels when the data is prepared, else the built-in sample."""
    task = ckpt.provenance.get("task")
    if data_dir is not None and task in TASKS:
        try:
            rows = load_task(task, data_dir).dev
        except InputError:
            rows = None
        if rows:
            return f"{task} dev split ({len(rows)} rows)", examples(rows, ckpt.labels)
    pairs = [t[::-1] for t in SAMPLE_TEXTS] if uses_pairs(ckpt) else None
    return f"built-in sample ({len(SAMPLE_TEXTS)} texts)", Examples(SAMPLE_TEXTS, pairs, None)


def calibration_feeds(ckpt: checkpoint.Checkpoint, deployable: Deployable,
                      data_dir: Path | None, count: int = 128) -> list[dict[str, np.ndarray]]:
    """Representative inputs for quantizers that calibrate activations, one row each: the
    first ``count`` texts of the model's train split (never the dev split verification uses),
    else the built-in sample."""
    task = ckpt.provenance.get("task")
    rows = None
    if data_dir is not None and task in TASKS:
        try:
            rows = load_task(task, data_dir).train[:count]
        except InputError:
            rows = None
    data = examples(rows, ckpt.labels) if rows else \
        Examples(SAMPLE_TEXTS, [t[::-1] for t in SAMPLE_TEXTS] if deployable.pairs else None,
                 None)
    encoder = ckpt.text_encoder()
    return [feeds(encoder.encode([text], None if data.pairs is None else [data.pairs[i]]),
                  deployable.input_names) for i, text in enumerate(data.texts)]


def uses_pairs(ckpt: checkpoint.Checkpoint) -> bool:
    """Pair models (BoolQ, a CSV with text_b) take token_type_ids."""
    return bool(ckpt.provenance.get("pairs", ckpt.provenance.get("task") == "boolq"))


def feeds(batch, names: list[str]) -> dict[str, np.ndarray]:
    return {name: getattr(batch, name).numpy() for name in names}


def compare(reference: np.ndarray, artifact: np.ndarray, exact: bool,
            labels: np.ndarray | None, min_cosine: float = MIN_COSINE) -> dict:
    """Figures of artifact vs PyTorch, and whether they meet the tolerance for the precision."""
    diff = np.abs(reference - artifact)
    ref, art = reference.reshape(len(reference), -1), artifact.reshape(len(artifact), -1)
    cosine = float(np.mean(np.sum(ref * art, 1) / np.maximum(
        np.linalg.norm(ref, axis=1) * np.linalg.norm(art, axis=1), 1e-12)))
    agreement = float(np.mean(reference.argmax(-1) == artifact.argmax(-1)))
    figures = {"max_abs_diff": float(diff.max(initial=0.0)),
               "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
               "cosine": cosine, "label_agreement": agreement}
    if labels is not None and reference.ndim == 2:
        figures["accuracy_pytorch"] = float(np.mean(reference.argmax(1) == labels))
        figures["accuracy_artifact"] = float(np.mean(artifact.argmax(1) == labels))
    if exact:
        figures["tolerance"] = f"max_abs_diff <= {FLOAT_LOGIT_TOLERANCE}"
        figures["passed"] = figures["max_abs_diff"] <= FLOAT_LOGIT_TOLERANCE
    else:
        figures["tolerance"] = (f"label_agreement >= {MIN_LABEL_AGREEMENT}, cosine >= "
                                f"{min_cosine}")
        figures["passed"] = agreement >= MIN_LABEL_AGREEMENT and cosine >= min_cosine
    return figures


def verify_hash(fmt, path: Path, ckpt: checkpoint.Checkpoint) -> dict:
    """The artifact's own hash stage on adversarial tokens vs the Python-integer reference."""
    tokens = [t for text in SAMPLE_TEXTS for t in text.split()][:48] + \
        ["", "[CLS]", "[SEP]", "##ing", "x" * 40, "\U0010FFFF", "ß"]
    spec = ckpt.hash_spec
    codes = token_codes(tokens, spec.max_chars)[None]
    got = fmt.hash_runner(path)(codes)[0]
    want = stage_reference(tokens, spec)
    equal = bool(np.array_equal(got.view(np.uint32), want.view(np.uint32)))
    return {"tokens": len(tokens), "bit_exact": equal,
            "mismatched_values": int((got.view(np.uint32) != want.view(np.uint32)).sum())}


def verify(fmt, path: Path, ckpt: checkpoint.Checkpoint, deployable: Deployable,
           texts: tuple[str, Examples], quantization: str, memo: Memo | None,
           model_key: tuple) -> dict:
    run = fmt.runner(path)
    source, data = texts
    inputs = encoded(ckpt, deployable, data)
    artifact = np.concatenate([run(batch) for batch in inputs])
    key = model_key + (source,)
    reference = memo.references.get(key) if memo is not None else None
    if reference is None:
        reference = pytorch_outputs(deployable, inputs)
        if memo is not None:
            memo.references[key] = reference
    exact = quantization == "none"
    # A format may state its own cosine floor for a mode (TFLite's full-integer int8).
    min_cosine = getattr(fmt, "MIN_COSINE", {}).get(quantization, MIN_COSINE)
    figures = compare(reference, artifact, exact, data.labels, min_cosine)
    figures["texts"] = source
    if deployable.hashed:
        figures["hash_stage"] = verify_hash(fmt, path, ckpt)
        figures["passed"] = figures["passed"] and figures["hash_stage"]["bit_exact"]
    return figures


def encoded(ckpt: checkpoint.Checkpoint, deployable: Deployable,
            data: Examples) -> list[dict[str, np.ndarray]]:
    encoder = ckpt.text_encoder()
    return [feeds(encoder.encode(chunk, pairs), deployable.input_names)
            for chunk, pairs in batches(data)]


def pytorch_outputs(deployable: Deployable, inputs: list[dict[str, np.ndarray]]) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([deployable(*map(torch.from_numpy, batch.values())).numpy()
                               for batch in inputs])


def describe_failure(figures: dict) -> str:
    parts = [f"max |diff| {figures['max_abs_diff']:.2e}", f"cosine {figures['cosine']:.5f}",
             f"label agreement {100 * figures['label_agreement']:.2f}%"]
    stage = figures.get("hash_stage")  # table models have none
    if stage and not stage["bit_exact"]:
        parts.append(f"hash stage not bit-exact ({stage['mismatched_values']} "
                     "values differ)")
    return f"verification failed ({figures['tolerance']}): " + ", ".join(parts)


def artifact_name(ckpt_path: Path, quantization: str, output: str, suffix: str) -> str:
    parts = [ckpt_path.stem] + ([output] if output != "logits" else []) + \
        ([quantization] if quantization != "none" else [])
    return ".".join(parts) + suffix


def export(fmt, model_path: Path | None, out_dir: Path, quantization: str = "none",
           output: str = "logits", force: bool = False, verify_artifact: bool = True,
           data_dir: Path | None = Path("data"), options: dict | None = None,
           max_chars: int | None = None, memo: Memo | None = None) -> dict:
    """Export one artifact; returns its sidecar. Raises VerificationError (after writing
    nothing) when the artifact misses its tolerance. With a ``memo``, a conversion or a
    reference already computed for the same model and options is reused."""
    model_path = Path(model_path or default_model())
    ckpt = checkpoint.load(model_path)
    if ckpt.kind != "classifier":
        raise InputError(f"{model_path}: only fine-tuned classifiers are exported")
    if ckpt.hash_spec is not None and ckpt.hash_spec.variant != "portable":
        raise SpecError(f"{model_path}: has the int64 hash; only the portable hash exports "
                        "(bit-exact integer ops in every runtime)")
    if max_chars is not None and ckpt.hash_spec is None:
        raise InputError(f"{model_path}: has an embedding table: --max-chars does not apply")
    if max_chars is not None and max_chars != ckpt.hash_spec.max_chars:
        resize_hash(ckpt, max_chars)
    trim_positions(ckpt)
    if quantization not in fmt.QUANTIZATIONS:
        raise InputError(f"{fmt.NAME} quantization must be one of {', '.join(fmt.QUANTIZATIONS)}")
    if not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} does not exist")
    artifact = out_dir / artifact_name(model_path, quantization, output, fmt.SUFFIX)
    sidecar_path = artifact.with_name(artifact.name + ".json")
    check_writable(artifact, force, fmt.FOLDER)
    check_writable(sidecar_path, force)
    deployable = Deployable(ckpt.model, output, uses_pairs(ckpt), ckpt.labels,
                            model_path.stem, ckpt.text_spec.max_length).eval()
    texts = verification_texts(ckpt, data_dir)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as work:
        work = Path(work)
        staged = work / artifact.name
        model_key = (str(model_path), output, max_chars)
        calibration = calibration_feeds(ckpt, deployable, data_dir) \
            if quantization != "none" else []
        info = converted(fmt, deployable, tracing_example(ckpt, deployable), staged,
                         options or {}, fmt.conversion(quantization), calibration, memo,
                         model_key)
        if quantization != "none":
            info |= fmt.quantize(staged, quantization, calibration)
        fmt.check(staged)
        info["ops"] = fmt.ops(staged)
        figures = verify(fmt, staged, ckpt, deployable, texts, quantization, memo,
                         model_key) if verify_artifact else None
        sidecar = make_sidecar(fmt, staged, artifact.name, model_path, ckpt, deployable,
                               quantization, info, figures)
        if figures is not None and not figures["passed"]:
            raise VerificationError(f"{artifact.name}: {describe_failure(figures)}")
        with atomic_path(artifact, force, fmt.FOLDER) as tmp:
            fmt.move(staged, tmp)
        with atomic_path(sidecar_path, force) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    return sidecar


def converted(fmt, deployable: Deployable, example: dict[str, np.ndarray], staged: Path,
              options: dict, conversion: str, calibration: list[dict[str, np.ndarray]],
              memo: Memo | None, model_key: tuple) -> dict:
    """Convert into ``staged`` (``calibration``: the rows a calibrated conversion uses), or copy
    the memo's conversion of the same model, format, options and kind."""
    key = model_key + (fmt.NAME, json.dumps(options, sort_keys=True), conversion)
    if memo is not None and key in memo.conversions:
        kept, info = memo.conversions[key]
        copy_artifact(kept, staged)
        return dict(info)
    info = fmt.convert(deployable, example, staged, options, conversion, calibration)
    if memo is not None:
        kept = memo.folder / f"{len(memo.conversions)}{fmt.SUFFIX}"
        copy_artifact(staged, kept)
        memo.conversions[key] = (kept, dict(info))
    return info


def tracing_example(ckpt: checkpoint.Checkpoint, deployable: Deployable) -> dict:
    """Four sample texts, padded to a sequence length unlike every static size (batch 4,
    max_chars) so that torch.export keeps the batch and sequence axes symbolic."""
    encoder = ckpt.text_encoder()
    pairs = SAMPLE_TEXTS[4:8] if deployable.pairs else None
    batch = encoder.encode(SAMPLE_TEXTS[:4], pairs)
    seq = batch.attention_mask.shape[1]
    if seq in (1, 4, ckpt.hash_spec.max_chars if ckpt.hash_spec else 1):
        batch = encoder.encode(SAMPLE_TEXTS[:4], pairs, pad_to=seq + 1)
    return feeds(batch, deployable.input_names)


def resize_hash(ckpt: checkpoint.Checkpoint, max_chars: int) -> None:
    """Export with another token width: tokens are cut at ``max_chars`` characters in both the
    artifact and the PyTorch reference it is verified against (a size/accuracy trade-off the
    sidecar records; accuracy is reported when the dev split is prepared)."""
    spec = dataclasses.replace(ckpt.hash_spec, max_chars=max_chars)
    ckpt.model.encoder.hash_spec = spec
    ckpt.model.encoder.embeddings.word = hash_stage(spec)


def trim_positions(ckpt: checkpoint.Checkpoint) -> None:
    """Keep only the position embeddings the text front end can reach: it never produces more
    than ``max_length`` tokens, and the rows past it are most of a small model's table (the
    default model: 384 of 512 rows, 196,608 of its 1.12 MB). Outputs are unchanged."""
    table = ckpt.model.encoder.embeddings.position
    keep = min(ckpt.text_spec.max_length, table.num_embeddings)
    ckpt.model.encoder.embeddings.position = nn.Embedding.from_pretrained(
        table.weight.data[:keep].clone(), freeze=True)


def make_sidecar(fmt, staged: Path, name: str, model_path: Path, ckpt: checkpoint.Checkpoint,
                 deployable: Deployable, quantization: str, info: dict,
                 figures: dict | None) -> dict:
    spec, text = ckpt.hash_spec, ckpt.text_spec
    seq = "seq"
    tokens = ["batch", seq, spec.max_chars] if spec else ["batch", seq]
    inputs = [{"name": deployable.input_names[0], "dtype": "int32", "shape": tokens},
              {"name": "attention_mask", "dtype": "int32", "shape": ["batch", seq]}]
    if deployable.pairs:
        inputs.append({"name": "token_type_ids", "dtype": "int32", "shape": ["batch", seq]})
    shape = ["batch", len(ckpt.labels)] if deployable.output == "logits" else \
        ["batch", seq, ckpt.config.hidden]
    size = fmt.size(staged)
    return {
        "artifact": name,
        "format": fmt.NAME,
        "eelbert_export": __version__,
        "model": {"checkpoint": model_path.name, "sha256": sha256_file(model_path),
                  "config": ckpt.config.name, "task": ckpt.provenance.get("task"),
                  "labels": ckpt.labels},
        "inputs": inputs,
        "outputs": [{"name": deployable.output_name, "dtype": "float32", "shape": shape}],
        "max_chars": spec.max_chars if spec else None,
        "text": text.to_dict() | {
            "rules": "BERT normalization: remove control characters and NUL, "
                     + ("lower-case, " if text.lowercase else "")
                     + ("strip accents (NFD, drop combining marks), " if text.strip_accents
                        else "")
                     + "split on whitespace and punctuation, CJK characters as single tokens; "
                     + ("then WordPiece with models/vocab.txt (continuations keep '##')"
                        if text.mode == "wordpiece" else "whole words, no vocabulary")
                     + f"; [CLS] text [SEP] (text_b [SEP]), at most {text.max_length} tokens; "
                     + ("each token's Unicode code points, truncated to max_chars, zero-padded"
                        if spec else "each token's id in models/vocab.txt")},
        "hash_spec": spec.to_dict() if spec else None,
        "quantization": quantization,
        "conversion": info,
        "size": size,
        "verification": figures if figures is not None else "skipped (--no-verify)",
    }


def pad_to(feeds: dict[str, np.ndarray], seq: int) -> dict[str, np.ndarray]:
    """Inputs cut or zero-padded along the sequence axis to ``seq`` tokens (padding is masked)."""
    return {name: np.pad(value[:, :seq], [(0, 0), (0, max(0, seq - value.shape[1]))]
                         + [(0, 0)] * (value.ndim - 2)) for name, value in feeds.items()}


def file_size(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "gzip_bytes": gzip_size(data)}


def copy_artifact(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def move_file(staged: Path, target: Path) -> None:
    shutil.move(staged, target)


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))
