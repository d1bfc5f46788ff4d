"""``eelbert-export bench`` and ``hash-cost``: latency (p50/p90) and throughput of artifacts in
their own runtimes (onnxruntime, the LiteRT interpreter, PyTorch for a checkpoint), the peak
memory of a process that loads one, and the cost of the in-graph hash against a table lookup.
These machines are noisy: compared models are timed in one run, interleaved, and their ratio
is what is reported."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eelbert_export import checkpoint
from eelbert_export.contract import feeds
from eelbert_export.errors import InputError
from eelbert_export.exporters import pipeline
from eelbert_export.exporters.base import BY_NAME, format_of
from eelbert_export.exporters.deployable import SAMPLE_TEXTS
from eelbert_export.files import output_folder
from eelbert_export.predict import load_predictor
from eelbert_export.reports.export_all import table_checkpoint
from eelbert_export.text import TextEncoder
from eelbert_export.zoo import models_dir

WARMUP = 5
PLATFORMS = {"Darwin": "macOS"}  # platform.system() -> the name users know
HASH_COST_TARGET = 1.3  # issue 8: end-to-end at most 1.3x the same model with a table
TEXT = SAMPLE_TEXTS[10]  # real words, long enough to fill 128 tokens


def check(path: Path, seq: int) -> None:
    """Refuse what cannot be timed here before any timing starts: a format this machine cannot
    run, a file its runtime cannot open, a sequence longer than it takes."""
    info = format_of(path, "an artifact to time")
    if info is not None and info.platforms and platform.system() not in info.platforms:
        where = ", ".join(PLATFORMS.get(p, p) for p in info.platforms)
        raise InputError(f"{path.name}: {info.name} runs only on {where}; time it there (here "
                         "its program is checked by an evaluator, not a runtime)")
    predictor = load_predictor(path, 1)
    predictor.logits([(TEXT, TEXT if "token_type_ids" in predictor.input_names else None)])
    longest = predictor.max_tokens
    if seq > longest:
        raise InputError(f"--seq {seq}: {path.name} takes at most {longest} tokens")


def load(path: Path, threads: int):
    """(run, feeds for (batch, seq), runtime) of a checkpoint or an artifact, run as
    ``predict`` runs it (a static-shape TFLite file pads every row to its length)."""
    predictor = load_predictor(path, threads)
    names = predictor.input_names

    def feeds_for(batch: int, seq: int) -> dict[str, np.ndarray]:
        """``batch`` copies of real text cut to exactly ``seq`` tokens (as text and text_b for
        pair models): the length reported is the length timed."""
        encoder = TextEncoder(dataclasses.replace(predictor.encoder.spec, max_length=seq),
                              predictor.encoder.max_chars)
        text = " ".join([TEXT] * (1 + seq // 64))
        pairs = [text] * batch if "token_type_ids" in names else None
        inputs = feeds(encoder.encode([text] * batch, pairs), names)
        assert inputs["attention_mask"].shape[1] == seq
        return inputs
    return predictor.run, feeds_for, predictor.runtime


def interleaved(jobs: list[tuple], runs: int) -> list[np.ndarray]:
    """Seconds per run of each (run, feeds) job, after warm-up, the jobs taking turns so that
    every one sees the same machine: these machines drift by tens of percent within a minute."""
    for run, feeds_ in jobs:
        for _ in range(WARMUP):
            run(feeds_)
    times = [[] for _ in jobs]
    for _ in range(runs):
        for (run, feeds_), spent in zip(jobs, times):
            start = time.perf_counter()
            run(feeds_)
            spent.append(time.perf_counter() - start)
    return [np.array(t) for t in times]


# What a process does to load and run a checkpoint (artifacts: their format's MEMORY_PROBE).
CHECKPOINT_PROBE = ("from pathlib import Path\n"
                    "from eelbert_export.predict import load_predictor\n"
                    "load_predictor(Path(PATH)).run(FEEDS)\n")


# The process's own peak in kB: VmHWM belongs to the memory map that exec created, while
# ru_maxrss keeps the parent's peak across fork and exec on Linux (a Python parent's hundreds of
# MB). macOS has no /proc, and its ru_maxrss counts bytes.
HIGH_WATER = """import resource
try:
    status = open('/proc/self/status').read().split('VmHWM:')[1]
    print(int(status.split()[0]))
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def probe(path: Path) -> str:
    info = format_of(path, "an artifact to time")
    return CHECKPOINT_PROBE if info is None else info.load().MEMORY_PROBE


def peak_memory(path: Path, feeds_: dict[str, np.ndarray]) -> float:
    """MB of peak resident memory of a fresh process that imports the runtime, loads ``path``
    and runs one batch, as an app's process would."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "feeds.npz", **feeds_)
        code = (f"import numpy as np\nPATH = {str(path)!r}\n"
                f"FEEDS = dict(np.load({str(Path(tmp) / 'feeds.npz')!r}))\n"
                + probe(path) + HIGH_WATER)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"{path.name}: the memory probe failed: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return int(done.stdout.split()[-1]) / 1024


def bench(paths: list[Path], batches: list[int], seqs: list[int], threads: list[int],
          runs: int, progress=lambda row: None) -> list[dict]:
    """Every (batch, seq) setting of a file and thread count timed interleaved."""
    rows = []
    settings = [(batch, seq) for batch in batches for seq in seqs]
    for path in paths:
        memory = None
        for n in threads:
            run, feeds_for, runtime = load(path, n)
            memory = memory or [peak_memory(path, feeds_for(*s)) for s in settings]
            times = interleaved([(run, feeds_for(*s)) for s in settings], runs)
            for (batch, seq), t, peak in zip(settings, times, memory):
                p50 = float(np.percentile(t, 50))
                row = {"artifact": path.name, "runtime": runtime, "threads": n,
                       "batch": batch, "seq": seq, "p50_ms": 1e3 * p50,
                       "p90_ms": float(1e3 * np.percentile(t, 90)),
                       "sentences_per_s": batch / p50, "runs": runs,
                       "peak_rss_mb": peak}
                rows.append(row)
                progress(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| artifact | runtime | threads | batch | seq | p50 ms | p90 ms | sentences/s | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| `{r['artifact']}` | {r['runtime'].split(' (')[0]} | {r['threads']} | "
              f"{r['batch']} | {r['seq']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['sentences_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


PAIRS = (("UNO-EELBERT-ngrams", "uno-eelbert-ngrams-sentiment.pt"),
         ("UNO-EELBERT", "uno-eelbert-sentiment.pt"))


def hash_cost(out_dir: Path, runs: int, progress=lambda line: None) -> list[dict]:
    """Each shipped hash model and its table twin, exported with ``--output hidden`` to ONNX
    and TFLite, timed interleaved at batch 1, seq 128, one thread: the ratio is the cost of
    computing the embedding in the graph instead of looking it up."""
    output_folder(out_dir)
    rows = []
    for title, name in PAIRS:
        source = models_dir() / name
        twin, model = out_dir / f"{Path(name).stem}.table.pt", checkpoint.load(source)
        table_checkpoint(model, model.config, twin)
        for fmt in (BY_NAME["onnx"], BY_NAME["tflite"]):
            runners = []
            for path in (source, twin):
                progress(f"{title} {fmt.name}: exporting {path.name}")
                sidecar = pipeline.export(pipeline.ExportRequest(
                    fmt, path, out_dir, output="hidden", data_dir=None, force=True))
                run, feeds_for, _ = load(out_dir / sidecar.artifact, 1)
                runners.append((run, feeds_for(1, 128)))
            times = interleaved(runners, runs)
            hashed, table = (1e3 * float(np.percentile(t, 50)) for t in times)
            rows.append({"model": title, "format": fmt.name, "hash_p50_ms": hashed,
                         "table_p50_ms": table, "ratio": hashed / table, "runs": runs})
    return rows


def hash_cost_markdown(rows: list[dict], target: float) -> str:
    lines = ["| model | format | hash embedding p50 ms | table p50 ms | ratio | target |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['format']} | {r['hash_p50_ms']:.2f} | "
              f"{r['table_p50_ms']:.2f} | {r['ratio']:.2f}x | "
              f"{'met' if r['ratio'] <= target else 'missed'} (<= {target}x) |" for r in rows]
    return "\n".join(lines) + "\n"

