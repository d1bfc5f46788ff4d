"""``eelbert-export all``: every format x quantization mode of one model, each verified, the
same for a ``bert-tiny`` baseline of the same labels (sizes only), then the size audit of
everything, written as size.md, size.json and size.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from eelbert_export import audit, checkpoint
from eelbert_export.errors import InputError, VerificationError
from eelbert_export.exporters import FORMATS, pipeline
from eelbert_export.files import atomic_path
from eelbert_export.model import named_configs

BASELINE = "bert-tiny"


def baseline_checkpoint(model: checkpoint.Checkpoint, path: Path) -> None:
    """``bert-tiny`` (an embedding table, token ids in) with the model's labels, text spec and
    task. Its weights are random: only its sizes are compared, and N(0, 0.02) everywhere keeps
    converters from merging equal tensors (fresh biases are all zeros) as a trained model's
    would not be."""
    torch.manual_seed(0)
    baseline = checkpoint.new_model("classifier", named_configs()[BASELINE], None,
                                    len(model.labels))
    with torch.no_grad():
        for weight in baseline.parameters():
            weight.normal_(0.0, 0.02)
    provenance = {k: model.provenance[k] for k in ("task", "pairs") if k in model.provenance}
    checkpoint.save(path, checkpoint.Checkpoint(baseline.eval(), model.text_spec, model.labels,
                                                provenance | {"baseline": True}))


def jobs(formats: list[str] | None = None) -> list[tuple]:
    """(format module, mode) for every mode of the named formats (default: all)."""
    return [(fmt, mode) for fmt in FORMATS.values() if not formats or fmt.NAME in formats
            for mode in fmt.QUANTIZATIONS]


def export_all(model_path: Path, out_dir: Path, data_dir: Path | None, force: bool,
               allowed: set[str], formats: list[str] | None = None) -> dict:
    """Export and verify every format x mode; ``allowed`` names ``format:mode`` pairs whose
    refusal (the artifact missed its tolerance) is expected and does not fail the run. The
    baseline is not verified: its weights are random, and only its sizes are compared."""
    ckpt = checkpoint.load(model_path)
    base_dir = out_dir / "baseline"
    base_dir.mkdir(exist_ok=True)
    base_path = base_dir / f"{BASELINE}.pt"
    if base_path.exists() and not force:
        raise InputError(f"{base_path} exists (use --force to overwrite)")
    baseline_checkpoint(ckpt, base_path)
    results = {"model": str(model_path), "exports": [], "refused": [], "failed": []}
    todo = jobs(formats)
    bar = tqdm(total=2 * len(todo), desc="export", unit="artifact", file=sys.stderr,
               dynamic_ncols=True)
    for source, folder, verify in ((model_path, out_dir, True), (base_path, base_dir, False)):
        for fmt, mode in todo:
            bar.set_postfix_str(f"{source.stem} {fmt.NAME} {mode}")
            try:
                sidecar = pipeline.export(fmt, source, folder, mode, force=force,
                                          verify_artifact=verify, data_dir=data_dir)
                if verify:
                    results["exports"].append(sidecar)
            except VerificationError as e:  # bad input (InputError) stops the run instead
                entry = {"format": fmt.NAME, "mode": mode, "model": source.name,
                         "error": str(e)}
                expected = verify and f"{fmt.NAME}:{mode}" in allowed
                results["refused" if expected else "failed"].append(entry)
            bar.update()
    bar.close()
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
    verified = [s for s in results["exports"] if isinstance(s["verification"], dict)]
    text += "\nVerified in their runtimes on " + \
        (verified[0]["verification"]["texts"] if verified else "nothing") + \
        f"; baseline: {BASELINE} with random weights of the same labels, exported the same " \
        "way (sizes only).\n"
    with atomic_path(out_dir / "size.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    summary = {k: results[k] for k in ("model", "refused", "failed", "reports")}
    with atomic_path(out_dir / "size.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out_dir / "size.png") as tmp:
        audit.plot(results["reports"], tmp)
    return text
