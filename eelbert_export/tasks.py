"""Classification tasks: the prepared splits, or the user's own CSV (``csv:PATH``)."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from eelbert_export.data import TASKS, read_split, sha256_file
from eelbert_export.errors import InputError


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


def load_task(task: str, data_dir: Path) -> TaskData:
    if task.startswith("csv:"):
        return load_csv(Path(task[4:]))
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} (one of {', '.join(TASKS)}, or csv:PATH)")
    splits = {s: read_split(data_dir, task, s) for s in ("train", "dev", "test")}
    sums = {s: sha256_file(data_dir / "tasks" / task / f"{s}.jsonl") for s in splits}
    return TaskData(task, TASKS[task], **splits,
                    provenance={"task": task, "splits": {s: {"rows": len(r), "sha256": sums[s]}
                                                         for s, r in splits.items()}})


def load_csv(path: Path) -> TaskData:
    """``text[,text_b],label`` with a header. 10% of rows (by content hash) are the dev set
    for fine-tuning; ``test`` is the whole file, for evaluating on held-out data."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    missing = [c for c in ("text", "label") if c not in columns]
    if missing:
        raise InputError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (found: {', '.join(columns) or 'none'})")
    pair = "text_b" in columns
    rows = []
    for line, row in enumerate(reader, start=2):
        item = {"text": (row["text"] or "").strip(), "label": (row["label"] or "").strip()}
        if pair:
            item["text_b"] = (row["text_b"] or "").strip()
        if not item["text"] or not item["label"]:
            raise InputError(f"{path}: line {line} has an empty text or label")
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
