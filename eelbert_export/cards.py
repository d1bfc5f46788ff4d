"""Model cards and the comparison table, generated from checkpoints and measured evaluations so
that every figure they print comes from a command."""

from __future__ import annotations

from pathlib import Path

from eelbert_export import checkpoint
from eelbert_export.summary import summarize
from eelbert_export.tasks import load_task
from eelbert_export.train import evaluate

ROWS = {  # run name under RUNS (scratch/ or pretrained/) -> title
    "scratch/bert-tiny": "BERT-tiny (embedding table)",
    "scratch/eelbert-tiny": "EELBERT-tiny",
    "scratch/uno-eelbert": "UNO-EELBERT",
    "scratch/uno-eelbert-words": "UNO-EELBERT, vocabulary-free (words)",
    "scratch/uno-eelbert-int64": "UNO-EELBERT, paper-faithful int64 hash",
    "scratch/uno-eelbert-orders2": "UNO-EELBERT, n-grams up to 2 (of 3)",
    "scratch/uno-eelbert-orders4": "UNO-EELBERT, n-grams up to 4 (of 3)",
    "scratch/uno-eelbert-chars12": "UNO-EELBERT, max_chars 12 (of 20)",
    "pretrained/uno-eelbert": "UNO-EELBERT, MLM-pretrained first",
}
BASELINE = "scratch/bert-tiny"
TASKS = ("sentiment", "boolq")


def model_card(path: Path, task_name: str, data_dir: Path) -> str:
    ckpt = checkpoint.load(path)
    task = load_task(task_name, data_dir)
    dev, test = evaluate(ckpt, task, "dev"), evaluate(ckpt, task, "test")
    summary = summarize(ckpt.model)
    p = ckpt.provenance
    pre, fine = p.get("pretraining", {}), p["finetuning"]
    splits = p["data"].get("splits", {})
    c = ckpt.config
    lines = [
        f"# {path.stem}",
        "",
        f"{c.name} fine-tuned for `{task_name}` ({', '.join(ckpt.labels)}): "
        f"{c.layers} layer(s), hidden {c.hidden}, {c.heads} heads, FFN {c.ffn}, "
        f"{c.embedding} embedding, `{ckpt.text_spec.mode}` text front end "
        f"(max {ckpt.text_spec.max_length} tokens).",
        "",
        "## Figures (reproduce with `eelbert-export evaluate "
        f"models/{path.name} --task {task_name} --split test`)",
        "",
        f"- test accuracy: {test['accuracy']:.4f} ({test['examples']:,} examples); "
        f"F1({ckpt.labels[1]}): {test['f1']:.4f}",
        f"- dev accuracy: {dev['accuracy']:.4f} ({dev['examples']:,} examples, used for model "
        f"selection: epoch {fine['best_epoch']} of {fine['epochs']})",
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
    lines += [f"- fine-tuning: `{p['command']}`; {fine['steps']} steps x {fine['batch']}, lr "
              f"{fine['lr']}, {fine['train_seconds'] / 60:.1f} min at "
              f"{fine['tokens_per_second']:,} tokens/s",
              f"- hardware: {fine['hardware']}",
              "- the whole zoo: `make zoo`", ""]
    return "\n".join(lines)


def comparison_table(runs: Path, data_dir: Path) -> str:
    """Test accuracy of every row on every task, with the gap to BERT-tiny and the size ratio."""
    tasks = {t: load_task(t, data_dir) for t in TASKS}
    results = {}
    for row in ROWS:
        for t in TASKS:
            path = runs / f"{row}.{t}.pt"
            if path.exists():
                ckpt = checkpoint.load(path)
                results[row, t] = evaluate(ckpt, tasks[t], "test")["accuracy"]
                results[row, "size"] = summarize(ckpt.model)
    base = results.get((BASELINE, "size"))
    header = ["model", *(f"{t} test acc" for t in TASKS), *(f"vs BERT-tiny ({t})" for t in TASKS),
              "parameters", "fp32 bytes", "smaller than BERT-tiny"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, title in ROWS.items():
        size = results.get((row, "size"))
        if size is None:
            continue
        accs = [results.get((row, t)) for t in TASKS]
        gaps = [f"{100 * (a / results[(BASELINE, t)] - 1):+.1f}%"
                if a is not None and (BASELINE, t) in results else "-"
                for a, t in zip(accs, TASKS)]
        ratio = f"{base['fp32_bytes'] / size['fp32_bytes']:.1f}x" if base else "-"
        lines.append("| " + " | ".join([title, *(f"{a:.4f}" if a is not None else "-"
                                                  for a in accs), *gaps,
                                         f"{size['params']:,}", f"{size['fp32_bytes']:,}",
                                         ratio]) + " |")
    return "\n".join(lines) + "\n"
