"""``eelbert-export all``: every format x quantization mode of one model, each verified, the
same for a ``bert-tiny`` baseline of the same labels (sizes only), then the size audit of
everything, written as size.md, size.json and size.png."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from eelbert_export import checkpoint
from eelbert_export.errors import InputError, VerificationError
from eelbert_export.exporters import pipeline
from eelbert_export.exporters.base import FORMATS
from eelbert_export.files import (
    atomic_path,
    made_folder,
    output_folder,
    write_json,
    write_text,
)
from eelbert_export.model import BASELINE, ModelConfig, named_configs
from eelbert_export.reports import audit


def table_checkpoint(model: checkpoint.Checkpoint, config: ModelConfig, path: Path) -> None:
    """A model of ``config`` with an embedding table (token ids in) and the model's labels,
    text spec and task, for comparisons of size and speed. Its weights are random, N(0, 0.02)
    everywhere, which keeps converters from merging equal tensors (fresh biases are all zeros)
    as a trained model's would not be."""
    torch.manual_seed(0)
    config = dataclasses.replace(config, embedding="table")
    baseline = checkpoint.new_model("classifier", config, None, len(model.labels))
    with torch.no_grad():
        for weight in baseline.parameters():
            weight.normal_(0.0, 0.02)
    provenance = {k: model.provenance[k] for k in ("task", "pairs") if k in model.provenance}
    checkpoint.save(path, checkpoint.Checkpoint(baseline.eval(), model.text_spec, model.labels,
                                                provenance | {"baseline": True}))


def jobs(formats: list[str] | None = None) -> list[tuple]:
    """(format, mode) for every mode of the named formats (default: all)."""
    return [(fmt, mode) for fmt in FORMATS.values() if not formats or fmt.name in formats
            for mode in fmt.quantizations]


def export_all(model_path: Path, out_dir: Path, data_dir: Path | None, force: bool,
               allowed: set[str], formats: list[str] | None = None) -> dict:
    """Export and verify every format x mode; ``allowed`` names ``format:mode`` pairs whose
    refusal (the artifact missed its tolerance) is expected and does not fail the run. The
    baseline is not verified: its weights are random, and only its sizes are compared."""
    known = {f"{fmt.name}:{mode}" for fmt, mode in jobs()}
    unknown = sorted(set(allowed) - known)
    if unknown:
        raise InputError(f"--allow-refusal {unknown[0]}: not a format:mode (one of "
                         f"{', '.join(sorted(known))})")
    with made_folder(out_dir):
        return exports(model_path, out_dir, data_dir, force, allowed, jobs(formats))


def exports(model_path: Path, out_dir: Path, data_dir: Path | None, force: bool,
            allowed: set[str], todo: list[tuple]) -> dict:
    """The exports of ``export_all`` and their audit. The baseline checkpoint is made in the
    staging folder and kept beside its artifacts only when the run completes."""
    ckpt = checkpoint.load(model_path)
    base_dir = out_dir / "baseline"
    base_path = base_dir / f"{BASELINE}.pt"
    if base_path.exists() and not force:
        raise InputError(f"{base_path} exists (use --force to overwrite)")
    results = {"model": str(model_path), "exports": [], "refused": [], "failed": [],
               "seconds": []}
    bar = tqdm(total=2 * len(todo), desc="export", unit="artifact", file=sys.stderr,
               dynamic_ncols=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".all-") as work:
        staged = Path(work) / base_path.name
        table_checkpoint(ckpt, named_configs()[BASELINE], staged)
        memo = pipeline.Memo(Path(work))
        for source, folder, verify in ((model_path, out_dir, True), (staged, base_dir, False)):
            for fmt, mode in todo:
                bar.set_postfix_str(f"{source.stem} {fmt.name} {mode}")
                start = time.perf_counter()
                request = pipeline.ExportRequest(fmt, source, folder, mode, verify=verify,
                                                 data_dir=data_dir, force=force)
                try:
                    sidecar = pipeline.export(request, memo)
                    if verify:
                        results["exports"].append(sidecar.to_dict())
                except VerificationError as e:  # bad input (InputError) stops the run instead
                    entry = {"format": fmt.name, "mode": mode, "model": source.name,
                             "error": str(e)}
                    expected = verify and f"{fmt.name}:{mode}" in allowed
                    results["refused" if expected else "failed"].append(entry)
                results["seconds"].append({"model": source.name, "format": fmt.name, "mode": mode,
                                           "verified": verify,
                                           "seconds": round(time.perf_counter() - start, 1)})
                bar.update()
        bar.close()
        output_folder(base_dir)
        with atomic_path(base_path) as tmp:
            shutil.copy2(staged, tmp)
    artifacts = [model_path] + [out_dir / s["artifact"] for s in results["exports"]]
    results["reports"] = audit.run(artifacts, baseline=[base_dir])
    return results


def write(results: dict, out_dir: Path) -> str:
    """size.md, size.json and size.png in ``out_dir``; returns the markdown."""
    text = audit.markdown(results["reports"])
    for key, title in (("refused", "Refused as expected"), ("failed", "Failed")):
        if results[key]:
            text += f"\n{title}:\n\n" + "".join(f"- {e['model']} {e['format']} {e['mode']}: "
                                                f"{e['error']}\n" for e in results[key])
    timed = [t for t in results["seconds"] if t["verified"]]
    text += "\nWall time of each export of the model (convert, quantize, check, verify): " + \
        ", ".join(f"{t['format']} {t['mode']} {t['seconds']:.0f} s" for t in timed) + \
        f"; {sum(t['seconds'] for t in timed):.0f} s in all.\n"
    verified = [s for s in results["exports"] if isinstance(s["verification"], dict)]
    text += "\nVerified in their runtimes on " + \
        (verified[0]["verification"]["texts"] if verified else "nothing") + \
        f"; baseline: {BASELINE} with random weights of the same labels, exported the same " \
        "way (sizes only).\n"
    write_text(out_dir / "size.md", text)
    write_json(out_dir / "size.json",
               {k: results[k] for k in ("model", "refused", "failed", "seconds", "reports")})
    audit.save(results["reports"], None, None, out_dir / "size.png")
    return text
