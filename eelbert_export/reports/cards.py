"""Model cards and the comparison table, generated from checkpoints and measured evaluations so
that every figure they print comes from a command."""

from __future__ import annotations

import re
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from eelbert_export import checkpoint
from eelbert_export.embeddings import kind_of
from eelbert_export.errors import InputError
from eelbert_export.model import BASELINE
from eelbert_export.reports.summary import summarize
from eelbert_export.tasks import TASKS, load_task
from eelbert_export.training.evaluation import evaluate

# The zoo's rows (named configs, each fine-tuned from scratch by the same recipe and lr search;
# runs named RUNS/<config>.<task>.lr<lr>.s<seed>.pt by `make zoo`) and their titles.
ROWS = {
    "bert-tiny": "BERT-tiny (30,522-row embedding table)",
    "uno-eelbert": "UNO-EELBERT (fixed 128-dim hash, the paper's)",
    "uno-eelbert-wide": "UNO-EELBERT, 2,048-dim fixed hash + trainable projection",
    "uno-eelbert-ngrams": "UNO-EELBERT-ngrams (n-gram table, 128 positions)",
    "distilled-bert-tiny": "BERT-tiny, distilled from MiniLM-L6",
    "distilled-uno-eelbert": "UNO-EELBERT (fixed hash), distilled from MiniLM-L6",
    "distilled-uno-eelbert-ngrams": "UNO-EELBERT-ngrams, distilled from MiniLM-L6",
}
TEACHER_ROW = "MiniLM-L6 teacher, fine-tuned (the reference; not deployable at 1.2 MB)"
RUN_NAME = re.compile(r"(?P<row>.+)\.(?P<task>[a-z-]+)\.lr(?P<lr>[0-9.e-]+)\.s(?P<seed>\d+)\.pt")


def embedding(ckpt: checkpoint.Checkpoint) -> str:
    return kind_of(ckpt.hash_spec).describe(ckpt.hash_spec)


def training_report(provenance: dict) -> dict:
    """The report of the training that made a classifier: fine-tuning or distillation."""
    return provenance.get("distillation") or provenance["finetuning"]


def teacher_lines(record: dict) -> list[str]:
    t, transfer = record["teacher"], record["transfer"]
    figures = "; ".join(f"{s} accuracy {t[s]['accuracy']:.4f}" for s in ("dev", "test")
                        if s in t)
    return [f"- teacher: {t['name']} ({t['parameters']:,} parameters, weights sha256 "
            f"{t['weights_sha256'][:16]}...; {figures})",
            f"- transfer set: {transfer['rows']:,} rows ({transfer['originals']:,} training "
            f"texts, {transfer['copies']:,} masked copies, {transfer['corpus_windows']:,} corpus "
            f"windows; sha256 {transfer['sha256'][:16]}...), {record['passes']} passes, loss "
            f"{record['loss']} on the teacher's logits + cross-entropy on gold labels"]


def model_card(path: Path, task_name: str, data_dir: Path) -> str:
    ckpt = checkpoint.load(path)
    task = load_task(task_name, data_dir)
    dev, test = evaluate(ckpt, task, "dev"), evaluate(ckpt, task, "test")
    summary = summarize(ckpt.model)
    p = ckpt.provenance
    pre, fine = p.get("pretraining", {}), training_report(p)
    how, kind = ("distilled", "distillation") if "distillation" in p else \
        ("fine-tuned", "fine-tuning")
    splits = p["data"].get("splits", {})
    c = ckpt.config
    lines = [
        f"# {path.stem}",
        "",
        f"{c.name} {how} for `{task_name}` ({', '.join(ckpt.labels)}): "
        f"{c.layers} layer(s), hidden {c.hidden}, {c.heads} heads, FFN {c.ffn}, "
        f"{embedding(ckpt)}, `{ckpt.text_spec.mode}` text front end "
        f"(max {ckpt.text_spec.max_length} tokens).",
        "",
        "## Figures (reproduce with `eelbert-export evaluate "
        f"models/{path.name} --task {task_name} --split test`)",
        "",
        f"- test accuracy: {test['accuracy']:.4f} ({test['examples']:,} examples); "
        f"F1({ckpt.labels[1]}): {test['f1']:.4f}",
        f"- dev accuracy: {dev['accuracy']:.4f}, balanced {dev['balanced_accuracy']:.4f} "
        f"({dev['examples']:,} examples; model selection by dev balanced accuracy, checked "
        f"every {fine['eval_every']} steps: step {fine['best_step']} of {fine['steps']})",
        f"- parameters: {summary['params']:,}; fp32 bytes: {summary['fp32_bytes']:,}; "
        f"file: {path.stat().st_size:,} bytes",
        "",
        "## Data",
        "",
        "Prepared by `eelbert-export data prepare` (sources, licences and checksums in "
        "`models/data-manifest.json`). Split rows: "
        + ", ".join(f"{s} {v['rows']:,}" for s, v in splits.items()) + ".",
        "",
        "## Recipe",
        "",
    ]
    if pre:
        lines += [f"- pretraining (masked LM on the prepared corpus): `{pre['command']}`; "
                  f"{pre['steps']} steps x {pre['batch']} rows x {pre['seq']} tokens, lr "
                  f"{pre['lr']}, {pre['train_seconds'] / 60:.1f} min at "
                  f"{pre['tokens_per_second']:,} tokens/s; valid MLM loss "
                  f"{pre['valid_mlm_loss']:.3f}"]
    if "distillation" in p:
        lines += teacher_lines(fine)
    lines += [f"- {kind}: `{p['command']}`; {fine['steps']} steps x {fine['batch']}, lr "
              f"{fine['lr']}, {fine['train_seconds'] / 60:.1f} min at "
              f"{fine['tokens_per_second']:,} tokens/s",
              f"- hardware: {fine['hardware']}",
              "- the whole zoo: `make zoo`", ""]
    return "\n".join(lines)


def zoo_runs(runs: Path) -> dict[tuple[str, str], dict[str, dict[int, Path]]]:
    """(row, task) -> lr -> seed -> checkpoint, from the run names."""
    found: dict = {}
    for path in sorted(runs.glob("*.pt")):
        m = RUN_NAME.fullmatch(path.name)
        if m and m["row"] in ROWS and m["task"] in TASKS:
            found.setdefault((m["row"], m["task"]), {}).setdefault(m["lr"], {})[
                int(m["seed"])] = path
    return found


def dev_figure(path: Path) -> float:
    return training_report(checkpoint.load(path).provenance)["dev"]["balanced_accuracy"]


def chosen(by_lr: dict[str, dict[int, Path]]) -> tuple[str, list[Path]]:
    """The lr whose runs have the best mean dev balanced accuracy over their seeds (the
    selection metric; test is never looked at; a seed that stalls counts against its lr), and
    every seed's run at that lr, the best on dev first (the one a zoo ships)."""
    lr = max(by_lr, key=lambda lr: float(np.mean([dev_figure(p) for p in by_lr[lr].values()])))
    return lr, sorted(by_lr[lr].values(), key=dev_figure, reverse=True)


def teacher_figures(teachers: Path) -> dict:
    """The fine-tuned teachers' test accuracy per task (``TEACHERS/minilm-<task>``, `make zoo`)
    with their size: the reference the students are distilled from."""
    import json

    found = {}
    for task in TASKS:
        folder = teachers / f"minilm-{task}"
        if (folder / "eelbert-teacher.json").is_file():
            report = json.loads((folder / "eelbert-teacher.json").read_text())
            found[task] = {"accuracy": report["test"]["accuracy"],
                           "params": report["base"]["parameters"],
                           "bytes": (folder / "model.safetensors").stat().st_size}
    return found


def comparison(runs: Path, data_dir: Path, timing_runs: int = 200,
               teachers: Path = Path("runs/teachers")) -> dict:
    """Every row's test accuracy per task (lr chosen on dev; mean and spread over seeds), its
    size, the size of its int8 ONNX file and the p50 latency of its float32 ONNX file at batch
    1 x 128 tokens on one thread, timed interleaved with every other row in this one run."""
    from eelbert_export.exporters import pipeline
    from eelbert_export.exporters.base import BY_NAME
    from eelbert_export.reports import bench

    if not runs.is_dir():
        raise InputError(f"{runs}: no such folder (train the zoo with `make zoo`)")
    tasks = {t: load_task(t, data_dir) for t in TASKS}
    found, rows = zoo_runs(runs), {}
    for (row, task), by_lr in found.items():
        lr, paths = chosen(by_lr)
        accs = [evaluate(checkpoint.load(p), tasks[task], "test")["accuracy"] for p in paths]
        rows.setdefault(row, {})[task] = {"lr": float(lr), "seeds": len(accs),
                                          "accuracy": float(np.mean(accs)),
                                          "spread": float(np.ptp(accs)),
                                          "lrs_tried": sorted(map(float, by_lr)),
                                          "path": str(paths[0])}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for results in rows.values():
            main = Path(results.get("sentiment", next(iter(results.values())))["path"])
            results["size"] = summarize(checkpoint.load(main).model)
            for mode in ("none", "int8"):
                sidecar = pipeline.export(pipeline.ExportRequest(
                    BY_NAME["onnx"], main, Path(tmp), mode, verify=False, data_dir=None,
                    force=True))
                results[f"onnx_{mode}_bytes"] = sidecar.size.bytes
            run, feeds_for, _ = bench.load(Path(tmp) / f"{main.stem}.onnx", 1)
            jobs.append((run, feeds_for(1, 128)))
        for results, times in zip(rows.values(), bench.interleaved(jobs, timing_runs)):
            results["onnx_p50_ms"] = 1e3 * float(np.percentile(times, 50))
    return {"rows": rows, "tfidf": tfidf_baseline(tasks), "teacher": teacher_figures(teachers),
            "test_examples": {t: len(d.test) for t, d in tasks.items()},
            "timing_runs": timing_runs}


def tfidf_baseline(tasks: dict) -> dict[str, float]:
    """What a user would otherwise pick: TF-IDF of words and word pairs + logistic regression,
    C chosen on dev (balanced accuracy), test accuracy. Pairs are joined with a space."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    def texts(rows: list[dict]) -> list[str]:
        return [" ".join(filter(None, (r["text"], r.get("text_b")))) for r in rows]

    scores = {}
    for name, task in tasks.items():
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        train = vectorizer.fit_transform(texts(task.train))
        dev, test = vectorizer.transform(texts(task.dev)), vectorizer.transform(texts(task.test))
        labels = {split: [r["label"] for r in task.split(split)] for split in ("train", "dev",
                                                                                 "test")}
        fits = [LogisticRegression(C=c, max_iter=2000).fit(train, labels["train"])
                for c in (0.25, 1.0, 4.0, 16.0)]
        best = max(fits, key=lambda f: balanced_accuracy_score(labels["dev"], f.predict(dev)))
        scores[name] = float(np.mean(best.predict(test) == np.array(labels["test"])))
    return scores


def comparison_table(result: dict) -> str:
    """The comparison as markdown: test accuracy (mean, and the spread where two or more seeds
    ran), the gap to BERT-tiny on sentiment, sizes and latency relative to BERT-tiny."""
    rows, n = result["rows"], result["test_examples"]
    base = rows.get(BASELINE, {})
    header = ["model", *(f"{t} test acc" for t in TASKS), "vs BERT-tiny (sentiment)",
              "parameters", "fp32 bytes", "int8 ONNX bytes", "ONNX p50 ms (vs BERT-tiny)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def acc(r: dict | None) -> str:
        if r is None:
            return "-"
        spread = f" ± {r['spread'] / 2:.3f}" if r["seeds"] > 1 else ""
        return f"{r['accuracy']:.3f}{spread} (lr {r['lr']:g}, {r['seeds']} seed" \
               f"{'s' if r['seeds'] > 1 else ''})"

    for row, title in ROWS.items():
        r = rows.get(row)
        if r is None:
            continue
        gap = "-"
        if "sentiment" in r and "sentiment" in base:
            gap = f"{100 * (r['sentiment']['accuracy'] / base['sentiment']['accuracy'] - 1):+.1f}%"
        ratio = f" ({r['onnx_p50_ms'] / base['onnx_p50_ms']:.2f}x)" if base else ""
        lines.append("| " + " | ".join([
            title, *(acc(r.get(t)) for t in TASKS), gap, f"{r['size']['params']:,}",
            f"{r['size']['fp32_bytes']:,}", f"{r['onnx_int8_bytes']:,}",
            f"{r['onnx_p50_ms']:.2f}{ratio}"]) + " |")
    teacher = result.get("teacher", {})
    if teacher:
        some = next(iter(teacher.values()))
        lines.append(f"| {TEACHER_ROW} | " + " | ".join(
            f"{teacher[t]['accuracy']:.3f}" if t in teacher else "-" for t in TASKS)
            + f" | - | {some['params']:,} | {some['bytes']:,} | - | - |")
    lines.append("| TF-IDF word 1-2 + logistic regression (scikit-learn) | " + " | ".join(
        f"{result['tfidf'][t]:.3f}" for t in TASKS) + " | - | - | - | - | - |")
    se = ", ".join(f"{t} {100 * (0.25 / n[t]) ** 0.5:.1f}" for t in TASKS)
    note = textwrap.fill(f"One test-set standard error at 50% accuracy, in points: {se}. ± is "
                         f"half the range over seeds. Latency: median of "
                         f"{result['timing_runs']} interleaved runs in onnxruntime.", 96)
    return "\n".join(lines) + f"\n\n{note}\n"
