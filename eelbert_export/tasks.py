"""Classification tasks: the prepared splits or the user's own CSV (``csv:PATH``), and the
examples and batches that training, evaluation, verification and prediction all read them as.
Torch-free: the export side reads tasks too."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eelbert_export.errors import InputError
from eelbert_export.files import read_csv, read_text, sha256_file

# The prepared tasks and their label names (label i is logit i).
TASKS = {"sentiment": ["rotten", "fresh"], "boolq": ["false", "true"], "sms-spam": ["ham", "spam"]}
SPLITS = ("train", "dev", "test")
PAIR_TASKS = ("boolq",)


@dataclass
class TaskData:
    name: str
    labels: list[str]
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    provenance: dict

    def split(self, name: str) -> list[dict]:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    @property
    def pairs(self) -> bool:
        """Rows are text pairs (``text_b``): the model takes token_type_ids."""
        return bool(self.train) and "text_b" in self.train[0]


def load_task(task: str, data_dir: Path) -> TaskData:
    if task.startswith("csv:"):
        return load_csv(Path(task[4:]))
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} (one of {', '.join(TASKS)}, or csv:PATH)")
    splits = {s: read_split(data_dir, task, s) for s in SPLITS}
    sums = {s: sha256_file(data_dir / "tasks" / task / f"{s}.jsonl") for s in splits}
    return TaskData(task, TASKS[task], **splits,
                    provenance={"task": task, "splits": {s: {"rows": len(r), "sha256": sums[s]}
                                                         for s, r in splits.items()}})


def load_csv(path: Path) -> TaskData:
    """``text[,text_b],label`` with a header. 10% of rows (by content hash) are the dev set
    for fine-tuning; ``test`` is the whole file, for evaluating on held-out data."""
    columns, table = read_csv(path, ("text", "label"))
    pair = "text_b" in columns
    rows = []
    for row in table:
        item = {"text": (row["text"] or "").strip(), "label": (row["label"] or "").strip()}
        if pair:
            item["text_b"] = (row["text_b"] or "").strip()
        if not item["text"] or not item["label"]:
            raise InputError(f"{path}: line {row['line']} has an empty text or label")
        rows.append(item)
    if not rows:
        raise InputError(f"{path}: no rows")
    labels = sorted({r["label"] for r in rows})
    if len(labels) < 2:
        raise InputError(f"{path}: needs at least two labels, found {labels}")
    dev = [r for r in rows if hashlib.sha256(r["text"].encode()).digest()[0] < 26]
    train = [r for r in rows if hashlib.sha256(r["text"].encode()).digest()[0] >= 26]
    return TaskData(f"csv:{path.name}", labels, train, dev, rows,
                    provenance={"task": f"csv:{path}", "sha256": sha256_file(path),
                                "rows": len(rows)})


def read_split(data_dir: Path, task: str, split: str) -> list[dict]:
    path = data_dir / "tasks" / task / f"{split}.jsonl"
    if not path.is_file():
        raise InputError(f"{path} is missing: run `eelbert-export data prepare --out "
                         f"{data_dir}` first")
    rows = []
    rebuild = f"rebuild it with `eelbert-export data prepare --out {data_dir}`"
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path} line {number}: not JSON (truncated?); {rebuild}") from None
        bad = not isinstance(row, dict) or not isinstance(row.get("text"), str) or \
            row.get("label") not in TASKS[task] or \
            (task in PAIR_TASKS) != isinstance(row.get("text_b"), str)
        if bad:
            raise InputError(f"{path} line {number}: not a {task} row (text"
                             f"{', text_b' if task in PAIR_TASKS else ''}, label one of "
                             f"{', '.join(TASKS[task])}); {rebuild}")
        rows.append(row)
    return rows


@dataclass
class Examples:
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray | None  # label indices, when known


def examples(rows: list[dict], labels: list[str]) -> Examples:
    pairs = [r["text_b"] for r in rows] if rows and "text_b" in rows[0] else None
    index = {label: i for i, label in enumerate(labels)}
    return Examples([r["text"] for r in rows], pairs,
                    np.array([index[r["label"]] for r in rows], dtype=np.int64))


def batches(data: Examples, size: int = 64) -> Iterator[tuple[list[str], list[str] | None]]:
    """Consecutive slices of (texts, pairs) to encode together."""
    for i in range(0, len(data.texts), size):
        yield data.texts[i:i + size], data.pairs[i:i + size] if data.pairs is not None else None
