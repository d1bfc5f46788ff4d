"""Verification: an artifact, run in its own runtime, against the PyTorch model it came from, on
real text (the model's dev split with gold labels when prepared, else a built-in sample), and
its hash stage bit for bit against the Python-integer reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eelbert_export import checkpoint, contract, front_end
from eelbert_export.embeddings import stage_reference
from eelbert_export.exporters.base import Format, FormatInfo
from eelbert_export.exporters.deployable import SAMPLE_TEXTS, Deployable
from eelbert_export.hashing import token_codes
from eelbert_export.tasks import TASKS, Examples, batches, examples, load_task


def task_rows(ckpt: checkpoint.Checkpoint, data_dir: Path | None, split: str) -> list | None:
    """The model's task split when it is prepared in ``data_dir``, else None; prepared data
    that is damaged is refused, never silently replaced by the sample."""
    task = ckpt.provenance.get("task")
    if data_dir is None or task not in TASKS or not (data_dir / "tasks" / task).is_dir():
        return None
    return load_task(task, data_dir).split(split) or None  # damaged data: one line, exit 2


def sample(pairs: bool) -> Examples:
    return Examples(SAMPLE_TEXTS, [t[::-1] for t in SAMPLE_TEXTS] if pairs else None, None)


def verification_texts(ckpt: checkpoint.Checkpoint,
                       data_dir: Path | None) -> tuple[str, Examples]:
    """What verification runs, and a line saying so."""
    rows = task_rows(ckpt, data_dir, "dev")
    if rows:
        return f"{ckpt.provenance['task']} dev split ({len(rows)} rows)", \
            examples(rows, ckpt.labels)
    return f"built-in sample ({len(SAMPLE_TEXTS)} texts)", sample(ckpt.pairs)


def calibration_feeds(ckpt: checkpoint.Checkpoint, deployable: Deployable,
                      data_dir: Path | None, count: int = 128) -> list[contract.Feeds]:
    """Representative inputs for quantizers that calibrate activations, one row each: the
    first ``count`` texts of the model's train split (never the dev split verification uses),
    else the built-in sample."""
    rows = task_rows(ckpt, data_dir, "train")
    data = examples(rows[:count], ckpt.labels) if rows else sample(deployable.pairs)
    encoder = ckpt.text_encoder()
    return [contract.feeds(encoder.encode([text], None if data.pairs is None
                                          else [data.pairs[i]]), deployable.input_names)
            for i, text in enumerate(data.texts)]


def encoded(ckpt: checkpoint.Checkpoint, deployable: Deployable,
            data: Examples) -> list[contract.Feeds]:
    encoder = ckpt.text_encoder()
    return [contract.feeds(encoder.encode(chunk, pairs), deployable.input_names)
            for chunk, pairs in batches(data)]


def compare(reference: np.ndarray, artifact: np.ndarray, labels: np.ndarray | None) -> dict:
    """Figures of artifact vs PyTorch: differences, mean cosine, label agreement, accuracies."""
    diff = np.abs(reference - artifact)
    ref, art = reference.reshape(len(reference), -1), artifact.reshape(len(artifact), -1)
    cosine = float(np.mean(np.sum(ref * art, 1) / np.maximum(
        np.linalg.norm(ref, axis=1) * np.linalg.norm(art, axis=1), 1e-12)))
    figures = {"max_abs_diff": float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)),
               "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
               "cosine": cosine,
               "label_agreement": float(np.mean(reference.argmax(-1) == artifact.argmax(-1)))}
    if labels is not None and reference.ndim == 2:
        figures["accuracy_pytorch"] = float(np.mean(reference.argmax(1) == labels))
        figures["accuracy_artifact"] = float(np.mean(artifact.argmax(1) == labels))
    return figures


def tolerance(info: FormatInfo, quantization: str) -> contract.Tolerance:
    """The float tolerance for an unquantized artifact; the format's own cosine floor for a
    lossy mode where it states one."""
    if quantization == "none":
        return contract.Tolerance(exact=True)
    return contract.Tolerance(exact=False, min_cosine=info.min_cosine.get(
        quantization, contract.Tolerance.min_cosine))


def verify_hash(fmt: Format, path: Path, ckpt: checkpoint.Checkpoint) -> contract.HashStageCheck:
    """The artifact's own hash stage on adversarial tokens vs the Python-integer reference."""
    tokens = [t for text in SAMPLE_TEXTS for t in text.split()][:48] + \
        ["", "[CLS]", "[SEP]", "##ing", "x" * 40, "\U0010FFFF", "ß"]
    spec = ckpt.hash_spec
    codes = token_codes(tokens, spec.max_chars)[None]
    got = np.asarray(fmt.hash_runner(path, spec)(codes))[0]
    want = stage_reference(tokens, spec)
    if got.shape != want.shape or got.dtype.itemsize != 4:
        return contract.HashStageCheck(len(tokens), False, int(want.size))
    differ = int((got.view(np.uint32) != want.view(np.uint32)).sum())
    return contract.HashStageCheck(len(tokens), differ == 0, differ)


def verify(info: FormatInfo, path: Path, ckpt: checkpoint.Checkpoint, deployable: Deployable,
           texts: tuple[str, Examples], quantization: str, vectors: contract.VectorsCheck,
           reference: np.ndarray | None = None) -> contract.Verification:
    """The artifact at ``path`` against PyTorch (``reference``: its outputs on ``texts`` when
    already computed), judged by the contract's one pass rule."""
    fmt = info.load()
    run = fmt.runner(path)
    source, data = texts
    inputs = encoded(ckpt, deployable, data)
    artifact = np.concatenate([run(batch) for batch in inputs])
    if reference is None:
        reference = deployable.outputs(inputs)
    figures = compare(reference, artifact, data.labels)
    rule = tolerance(info, quantization)
    stage = verify_hash(fmt, path, ckpt) if deployable.hashed else None
    passed = contract.Verification.judge(rule, figures["max_abs_diff"],
                                         figures["label_agreement"], figures["cosine"], stage,
                                         vectors)
    return contract.Verification(texts=source, tolerance=rule, passed=passed, hash_stage=stage,
                                 vectors=vectors, **figures)


def vectors(info: FormatInfo, path: Path, ckpt: checkpoint.Checkpoint, deployable: Deployable,
            against_pytorch: bool) -> tuple[list[front_end.Vector], contract.VectorsCheck]:
    """The test vectors of the artifact (its own outputs, batch 1), checked as an app meets
    them, and their figures against PyTorch (held to the float tolerance for an unquantized
    artifact by the pass rule; recorded only for a lossy one, whose floors hold on the dev
    split, not on 60 adversarial texts)."""
    encoder = ckpt.text_encoder()
    run = info.load().runner(path)
    items = front_end.encoded(encoder, deployable.input_names, ckpt.pairs)
    outputs = [run(row) for _, row in items]
    made = front_end.make_vectors(items, outputs, encoder)
    check = front_end.check(made, encoder, deployable.input_names, run)
    if against_pytorch:
        reference = [deployable.outputs([row]) for _, row in items]
        vs = compare(flat(reference), flat(outputs), None)
        check = dataclasses.replace(check, pytorch=contract.Agreement(
            vs["max_abs_diff"], vs["cosine"], vs["label_agreement"]))
    return made, check


def flat(rows: list[np.ndarray]) -> np.ndarray:
    """Per-text outputs as one array: logits rows stacked, hidden states joined end to end."""
    if rows[0].ndim == 2:
        return np.concatenate(rows)
    return np.concatenate([r.reshape(1, -1) for r in rows], axis=1)
