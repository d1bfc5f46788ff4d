"""Teachers: pretrained Hugging Face BERT-family models from a local folder (never a hub call),
fine-tuned on a task (``train teacher``) and run over a transfer set to label it for
distillation, with the labels cached on disk by teacher and data."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from eelbert_export.errors import InputError
from eelbert_export.exporters.base import quiet
from eelbert_export.files import atomic_path, check_writable, sha256_file, sha256_text
from eelbert_export.tasks import Examples, TaskData, batches, examples
from eelbert_export.text import TextSpec, vocabulary, wordpiece_tokenizer
from eelbert_export.training.evaluation import metrics
from eelbert_export.training.loop import CPU, Batch, Recipe, fit, optimizer_for
from eelbert_export.training.objectives import epoch_rows
from eelbert_export.training.transfer import TransferSet

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # teachers load from folders; no hub is reachable

# Encoder families whose sequence-classification heads transformers builds from a local folder.
ENCODERS = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra", "albert",
            "mpnet", "deberta", "deberta-v2", "modernbert")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                "sentencepiece.bpe.model")
REPORT = "eelbert-teacher.json"  # what `train teacher` adds to a folder: its figures


@dataclass
class Teacher:
    """A teacher folder opened and checked: the model in eval mode, its tokenizer, and what a
    student's provenance records of it."""

    model: nn.Module
    tokenizer: object  # a transformers fast tokenizer
    path: Path
    name: str
    sha256: str  # of the weights file
    labels: list[str] | None  # in the model's output order; None for a bare encoder
    same_vocabulary: bool  # takes our WordPiece ids as they are
    report: dict | None

    def describe(self) -> dict:
        figures = {k: self.report[k] for k in ("dev", "test") if self.report and k in self.report}
        return {"name": self.name, "path": str(self.path), "weights_sha256": self.sha256,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "labels": self.labels, "same_vocabulary": self.same_vocabulary} | figures


def open_teacher(path: Path, task: TaskData | None = None, head: bool = True) -> Teacher:
    """Check a teacher folder before any long work: it exists, is a BERT-family model whose
    weights load, has a tokenizer, and (``head``) a classification head over ``task``'s labels."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"teacher {path}: no such folder (fetch one with `eelbert-export data "
                         "teacher`, or give a local Hugging Face model folder)")
    if not (path / "config.json").is_file():
        raise InputError(f"teacher {path}: no config.json: not a Hugging Face model folder")
    weights = next((path / w for w in WEIGHTS if (path / w).is_file()), None)
    if weights is None:
        raise InputError(f"teacher {path}: no weights ({' or '.join(WEIGHTS)})")
    with quiet():
        import transformers
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"teacher {path}: unreadable config.json ({first_line(e)})") from None
    if config.model_type not in ENCODERS:
        raise InputError(f"teacher {path}: a {config.model_type!r} model, not a BERT-family "
                         f"encoder ({', '.join(ENCODERS)})")
    classifier = any(a.endswith("ForSequenceClassification")
                     for a in (config.architectures or []))
    labels = [config.id2label[i] for i in range(config.num_labels)] if classifier else None
    if head and not classifier:
        raise InputError(f"teacher {path}: an encoder without a classification head; fine-tune "
                         "it first with `eelbert-export train teacher`")
    if head and task is not None:
        labels = task_order(path, labels, task.labels)
    tokenizer = open_tokenizer(path)
    try:
        with quiet():
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True,
                **({} if classifier else {"num_labels": len(task.labels) if task else 2}))
    except Exception as e:  # safetensors, torch and transformers each raise their own types
        raise InputError(f"teacher {path}: cannot load its weights {weights.name} "
                         f"({first_line(e)})") from None
    report = read_report(path)
    ours = {t: i for i, t in enumerate(vocabulary())}
    return Teacher(model.eval(), tokenizer, path, name_of(path, report),
                   sha256_file(weights), labels, tokenizer.get_vocab() == ours, report)


def read_report(path: Path) -> dict | None:
    if not (path / REPORT).is_file():
        return None
    try:
        report = json.loads((path / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"teacher {path}: unreadable {REPORT} ({first_line(e)})") from None
    if not isinstance(report, dict):
        raise InputError(f"teacher {path}: {REPORT} is not a JSON object")
    return report


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def name_of(path: Path, report: dict | None) -> str:
    return report["name"] if report and "name" in report else Path(path).resolve().name


def task_order(path: Path, labels: list[str], task_labels: list[str]) -> list[str]:
    """The teacher's outputs as the task's labels: by name, or by position when the head's
    labels are transformers' defaults (LABEL_0 ...)."""
    if len(labels) != len(task_labels):
        raise InputError(f"teacher {path}: {len(labels)} labels, the task has "
                         f"{len(task_labels)} ({', '.join(task_labels)})")
    if labels == [f"LABEL_{i}" for i in range(len(labels))]:
        return list(task_labels)
    if sorted(labels) != sorted(task_labels):
        raise InputError(f"teacher {path}: labels {labels} are not the task's {task_labels}")
    return labels


def open_tokenizer(path: Path):
    if not any((path / name).is_file() for name in VOCABULARIES):
        raise InputError(f"teacher {path}: no tokenizer the transfer set can be fed through "
                         f"(none of {', '.join(VOCABULARIES)})")
    with quiet():
        import transformers
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:
            raise InputError(f"teacher {path}: no tokenizer the transfer set can be fed through "
                             f"({first_line(e)})") from None
    if not tokenizer.is_fast or tokenizer.mask_token is None:
        raise InputError(f"teacher {path}: its tokenizer has no fast version or no mask token, "
                         "which the transfer set's masked copies need")
    return tokenizer


# --- the teacher's inputs -------------------------------------------------------------------------

def text_inputs(teacher: Teacher, texts: list[str], pairs: list[str] | None,
                max_length: int) -> Batch:
    encoded = teacher.tokenizer(texts, pairs, truncation=True, max_length=max_length,
                                padding=True, return_tensors="pt")
    return {k: v for k, v in encoded.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")}


def id_inputs(teacher: Teacher, ids: np.ndarray, types: np.ndarray | None) -> Batch:
    """Transfer rows (our WordPiece ids) as the teacher's inputs: as they are when the
    vocabularies match, else decoded to text and tokenized by the teacher (the text path)."""
    length = max(1, int((ids != 0).sum(axis=1).max()))
    ids = ids[:, :length]
    types = np.zeros_like(ids) if types is None else types[:, :length]
    if teacher.same_vocabulary:
        return {"input_ids": torch.from_numpy(ids.astype(np.int64)),
                "attention_mask": torch.from_numpy((ids != 0).astype(np.int64)),
                "token_type_ids": torch.from_numpy(types.astype(np.int64))}
    texts, pairs = decode_rows(ids, types, teacher.tokenizer.mask_token)
    return text_inputs(teacher, texts, pairs if types.any() else None, 512)


def decode_rows(ids: np.ndarray, types: np.ndarray, mask_token: str
                ) -> tuple[list[str], list[str]]:
    decoder = wordpiece_tokenizer(TextSpec(), truncate=False)
    specials = {decoder.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    out: tuple[list[str], list[str]] = ([], [])
    for row, segment in zip(ids, types):
        for s in (0, 1):
            kept = [int(i) for i, t in zip(row, segment) if t == s and int(i) not in specials]
            text = decoder.decode(kept, skip_special_tokens=False)
            out[s].append(text.replace("[MASK]", mask_token))
    return out


def teacher_logits(teacher: Teacher, inputs: Batch) -> torch.Tensor:
    device = next(teacher.model.parameters()).device
    return teacher.model(**{k: v.to(device) for k, v in inputs.items()}).logits


def predict(teacher: Teacher, data: Examples, max_length: int = 128) -> np.ndarray:
    teacher.model.eval()
    with torch.no_grad():
        out = [teacher_logits(teacher, text_inputs(teacher, texts, pairs, max_length))
               .float().cpu() for texts, pairs in batches(data)]
    return torch.cat(out).numpy()


def evaluate(teacher: Teacher, task: TaskData, split: str) -> dict:
    data = examples(task.split(split), teacher.labels or task.labels)
    return metrics(predict(teacher, data), data.labels)


# --- fine-tuning a teacher ------------------------------------------------------------------

class TeacherClassification:
    """Cross-entropy on the task's gold labels, texts tokenized by the teacher."""

    def __init__(self, teacher: Teacher, data: Examples, recipe: Recipe, max_length: int):
        self.teacher, self.data, self.recipe = teacher, data, recipe
        self.max_length, self.rows = max_length, len(data.texts)

    def batch(self, step: int) -> Batch:
        pick = epoch_rows(self.rows, self.recipe.batch, self.recipe.seed, step)
        pairs = [self.data.pairs[j] for j in pick] if self.data.pairs is not None else None
        return text_inputs(self.teacher, [self.data.texts[j] for j in pick], pairs,
                           self.max_length) | {"labels": torch.from_numpy(self.data.labels[pick])}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return F.cross_entropy(model(**inputs).logits.float(), batch["labels"])

    def tokens(self, batch: Batch) -> int:
        return int(batch["attention_mask"].sum())


def finetune_teacher(source: Path, task: TaskData, out: Path, recipe: Recipe,
                     head_lr: float, max_length: int, command: str, force: bool = False,
                     resume: bool = False, device: torch.device = CPU) -> dict:
    """Fine-tune a local encoder (or classifier) on a task with a new head over the task's
    labels; keep the weights of the best dev balanced accuracy; save a Hugging Face folder with
    ``eelbert-teacher.json`` (its dev and test figures, the recipe and the base's sha256)."""
    check_writable(out, force, folder=True)
    if not task.train or not task.dev:
        raise InputError(f"{task.name}: a teacher needs training and dev rows")
    base = open_teacher(source, task, head=False)
    with quiet():
        import transformers
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            source, local_files_only=True, num_labels=len(task.labels),
            id2label=dict(enumerate(task.labels)), label2id={v: i for i, v in
                                                             enumerate(task.labels)},
            ignore_mismatched_sizes=True)
    torch.manual_seed(recipe.seed)
    teacher = Teacher(model, base.tokenizer, source, base.name, base.sha256, list(task.labels),
                      base.same_vocabulary, None)
    head = [n for n, _ in model.named_parameters() if n.startswith("classifier")]
    objective = TeacherClassification(teacher, examples(task.train, task.labels), recipe,
                                      max_length)
    result = fit(model, objective, recipe, desc=f"teacher {base.name}", device=device,
                 state_path=out.with_name(out.name + ".state"), resume=resume,
                 optimizer=optimizer_for(model, recipe, {n: head_lr for n in head}),
                 dev_check=lambda m: evaluate(teacher, task, "dev"))
    report = {"name": f"{base.name} fine-tuned on {task.name}", "base": base.describe(),
              "task": task.name, "data": task.provenance, "labels": list(task.labels),
              "dev": result.dev, "test": evaluate(teacher, task, "test"), "command": command,
              "finetuning": result.report(recipe, head_lr=head_lr, max_length=max_length)}
    model.cpu()
    with atomic_path(out, force, folder=True) as tmp:
        with quiet():
            model.save_pretrained(tmp)
            base.tokenizer.save_pretrained(tmp)
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    out.with_name(out.name + ".state").unlink(missing_ok=True)
    return report


# --- labelling a transfer set, cached ---------------------------------------------------------

LABEL_DTYPES = ("bfloat16", "float32")


def label(teacher: Teacher, transfer: TransferSet, cache: Path, batch: int = 256,
          device: torch.device = CPU, dtype: str = "bfloat16") -> np.ndarray:
    """The teacher's logits for every transfer row, in the task's label order. Cached as
    ``CACHE/<key>.npy`` keyed by the teacher's weights, the transfer set and the precision;
    written in length-sorted batches to a partial file that an interrupted run resumes.
    bfloat16 autocast labels about twice as fast on a CPU with AVX512-BF16 (measured 115 vs 61
    rows/s for MiniLM-L6) and moves a logit by about 1e-3; float32 is exact."""
    if dtype not in LABEL_DTYPES:
        raise InputError(f"--label-dtype must be one of {', '.join(LABEL_DTYPES)}")
    key = sha256_text(f"{teacher.sha256}:{transfer.key}:{teacher.labels}:{dtype}")[:24]
    meta = {"key": key, "teacher": teacher.name, "weights_sha256": teacher.sha256,
            "transfer": transfer.key, "rows": len(transfer.ids), "labels": teacher.labels,
            "dtype": dtype}
    final, info = cache / f"{key}.npy", cache / f"{key}.json"
    if final.is_file():
        return cached(final, info, meta)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the label cache {cache}: {e.strerror}") from None
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two students of one zoo label once, not twice
        if not final.is_file():
            info.write_text(json.dumps(meta, indent=2) + "\n")  # before the labels appear
            write_labels(teacher, transfer, cache / key, batch, device, dtype)
    return cached(final, info, meta)


def write_labels(teacher: Teacher, transfer: TransferSet, stem: Path, batch: int,
                 device: torch.device, dtype: str) -> None:
    partial, progress = stem.with_suffix(".partial.npy"), stem.with_suffix(".partial.json")
    n, width = len(transfer.ids), len(teacher.labels or [])
    order = np.argsort((transfer.ids != 0).sum(axis=1), kind="stable")
    chunks = [order[i:i + batch] for i in range(0, n, batch)]
    done = json.loads(progress.read_text())["batches"] if progress.is_file() and \
        partial.is_file() else 0
    out = np.lib.format.open_memmap(partial, mode="r+" if done else "w+", dtype=np.float32,
                                    shape=(n, width))
    teacher.model.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    bar = tqdm(total=n, initial=sum(len(c) for c in chunks[:done]), unit="rows",
               desc=f"label {teacher.name}", file=sys.stderr, dynamic_ncols=True)
    with torch.no_grad(), autocast:
        for i in range(done, len(chunks)):
            rows = chunks[i]
            types = None if transfer.types is None else transfer.types[rows]
            out[rows] = teacher_logits(teacher, id_inputs(teacher, transfer.ids[rows], types)) \
                .float().cpu().numpy()
            bar.update(len(rows))
            if (i + 1) % 20 == 0:
                out.flush()
                progress.write_text(json.dumps({"batches": i + 1}))
    bar.close()
    out.flush()
    del out
    os.replace(partial, stem.with_suffix(".npy"))
    progress.unlink(missing_ok=True)


def cached(final: Path, info: Path, meta: dict) -> np.ndarray:
    """A cached labelling, refused in one line when its record names another teacher or data."""
    try:
        found = json.loads(info.read_text())
        logits = np.load(final)
    except (OSError, ValueError) as e:
        raise InputError(f"label cache {final}: unreadable ({first_line(e)}); remove it to "
                         "relabel") from None
    if found != meta or logits.shape != (meta["rows"], len(meta["labels"] or [])):
        raise InputError(f"label cache {final}: made with another teacher or transfer set "
                         f"({found.get('teacher')!r}, {found.get('rows')} rows); remove it to "
                         "relabel")
    return logits
