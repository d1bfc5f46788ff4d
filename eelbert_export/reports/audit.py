"""``eelbert-export audit``: where an artifact's bytes go. Every stored tensor is read from the
file itself (checkpoint weights, ONNX initializers, Core ML constants, TFLite buffers) and
grouped by the part of the model it belongs to; the container is what the tensors leave over
(headers, the graph, names, alignment). Groups plus container equal the bytes on disk:
reconciled, never estimated. Budgets come from ``[tool.eelbert-export.budgets]`` in the
project's pyproject.toml (artifact glob -> limit, as size-limit does it).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from eelbert_export.errors import InputError
from eelbert_export.exporters.base import (
    CHECKPOINT,
    FORMATS,
    Tensor,
    artifact_size,
    format_of,
    reading,
)
from eelbert_export.files import atomic_path, write_json, write_text

# The parts of a model, one naming for every report (``inspect`` too): a tensor belongs to the
# first group whose pattern its name matches. Names differ by format (state-dict paths, Core
# ML's p_model_..., LiteRT's module locations); tensors of fewer than SMALL values outside the
# word embedding are shapes and scalars.
GROUPS = (
    ("word embedding", r"embeddings[._](word|ngrams|project)|Embedding_word|_ngrams|"
                       r"Linear_project|^hash/"),
    ("LayerNorm", r"norm"),
    ("position/type embeddings", r"embeddings"),
    ("attention", r"attention|query|key|value"),
    ("feed-forward", r"intermediate|output"),
    ("pooler/classifier", r"pooler|classifier"),
)
SMALL = 16
SHAPES, OTHER = "shapes and scalars", "other constants"
UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2}
SUFFIXES = (CHECKPOINT, *FORMATS)


def named_group(name: str) -> str:
    """The group a tensor's name says it belongs to. A LiteRT weight carries the locations of
    the ops fused around it ("LayerNorm;;Linear"): its owner is the first that is not a
    LayerNorm and names a group."""
    parts = [p for p in name.split(";") if p] or [name]
    parts.sort(key=lambda part: "LayerNorm" in part)
    return next((g for part in parts for g, pattern in GROUPS if re.search(pattern, part)),
                OTHER)


def group_of(tensor: Tensor) -> str:
    group = named_group(tensor.name)
    return SHAPES if tensor.count < SMALL and group != GROUPS[0][0] else group


def parse_size(text: str | int) -> int:
    """``1.2MB``, ``400kB``, ``250000``: decimal units, as size-limit counts them."""
    match = re.fullmatch(r"\s*(\d{1,15}(?:\.\d{1,6})?)\s*([kmg]i?b|b)?\s*", str(text).lower())
    if not match or isinstance(text, bool):
        raise InputError(f"not a size: {str(text)[:40]!r} (use bytes, or e.g. 400kB, 1.2MB; "
                         "at most 15 digits)")
    return int(round(float(match.group(1)) * UNITS[match.group(2) or "b"]))


def checkpoint_tensors(path: Path) -> list[Tensor]:
    from eelbert_export import checkpoint

    state = checkpoint.load(path).model.state_dict()
    return [Tensor(name, str(t.dtype).removeprefix("torch."), t.numel(),
                   t.numel() * t.element_size()) for name, t in state.items()]


def audit(path: Path) -> dict:
    """Bytes on disk and gzipped, bytes/values/dtypes per group, and the container."""
    info = format_of(path, "an artifact to audit")
    with reading(path):
        stored = checkpoint_tensors(path) if info is None else info.load().tensors(path)
    sizes = artifact_size(path)
    groups: dict[str, dict] = {}
    for tensor in stored:
        group = groups.setdefault(group_of(tensor), {"bytes": 0, "values": 0, "tensors": 0,
                                                     "dtypes": set()})
        group["bytes"] += tensor.nbytes
        group["values"] += tensor.count
        group["tensors"] += 1
        group["dtypes"].add(tensor.dtype)
    weights = sum(g["bytes"] for g in groups.values())
    if weights > sizes.bytes:
        raise InputError(f"{path}: its tensors ({weights:,} bytes) exceed the file "
                         f"({sizes.bytes:,} bytes): the audit cannot reconcile it")
    order = [g for g, _ in GROUPS] + [OTHER, SHAPES]
    return {"artifact": path.name, "path": str(path), "bytes": sizes.bytes,
            "gzip_bytes": sizes.gzip_bytes,
            "groups": {name: groups[name] | {"dtypes": sorted(groups[name]["dtypes"])}
                       for name in order if name in groups},
            "weight_bytes": weights, "container_bytes": sizes.bytes - weights}


def budgets(pyproject: Path = Path("pyproject.toml")) -> dict[str, int]:
    """``[tool.eelbert-export.budgets]`` of the project in the working folder, if any."""
    if not pyproject.is_file():
        return {}
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{pyproject}: not valid TOML: {e}") from None
    rules = table.get("tool", {}).get("eelbert-export", {}).get("budgets", {})
    if not isinstance(rules, dict) or not all(isinstance(v, (str, int)) for v in rules.values()):
        raise InputError(f"{pyproject}: [tool.eelbert-export.budgets] must map artifact globs "
                         'to sizes ("name.*" = "1.2MB")')
    return {glob: parse_size(limit) for glob, limit in rules.items()}


def limit_for(name: str, rules: dict[str, int]) -> int | None:
    """The most specific matching glob's limit (the longest pattern wins)."""
    matching = [glob for glob in rules if fnmatch.fnmatch(name, glob)]
    return rules[max(matching, key=len)] if matching else None


def collect(paths: list[Path]) -> list[Path]:
    """Artifacts named, or found in named folders (an .mlpackage is one artifact)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir() and path.suffix not in FORMATS:
            found += sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        else:
            found.append(path)
    if not found:
        raise InputError("no artifacts to audit (.pt, .onnx, .mlpackage, .tflite)")
    return found


def variant(name: str) -> str:
    """An artifact's name without its model: ``m.int8.onnx`` -> ``int8.onnx``."""
    return name.split(".", 1)[1]


def run(paths: list[Path], budget: int | None = None,
        baseline: list[Path] | None = None) -> list[dict]:
    """Audit each artifact against its budget (``budget``, else pyproject's) and against the
    baseline artifact of the same format and mode, if one is given."""
    rules = budgets()
    base = {variant(r["artifact"]): r for r in map(audit, collect(baseline))} \
        if baseline else {}
    reports = []
    for path in collect(paths):
        report = audit(path)
        limit = budget if budget is not None else limit_for(report["artifact"], rules)
        report["budget"] = limit
        report["over"] = limit is not None and report["bytes"] > limit
        match = base.get(variant(report["artifact"]))
        report["baseline"] = None if match is None else {
            "artifact": match["artifact"], "bytes": match["bytes"],
            "ratio": match["bytes"] / report["bytes"]}
        reports.append(report)
    return reports


def over_budget(reports: list[dict]) -> list[str]:
    return [f"{r['artifact']}: {r['bytes']:,} bytes is over its budget of {r['budget']:,} "
            f"bytes by {r['bytes'] - r['budget']:,}" for r in reports if r["over"]]


def markdown(reports: list[dict]) -> str:
    """One row per artifact: size, gzip, budget, baseline ratio, bytes per group."""
    order = [g for g, _ in GROUPS] + [OTHER, SHAPES]
    names = [g for g in order if any(g in r["groups"] for r in reports)]
    header = ["artifact", "bytes", "gzip", "budget", "vs bert-tiny", *names, "container"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        budget = "-" if r["budget"] is None else \
            f"{r['budget']:,}" + (" **over**" if r["over"] else " ok")
        ratio = "-" if r["baseline"] is None else f"{r['baseline']['ratio']:.1f}x smaller"
        cells = [f"{r['groups'][g]['bytes']:,} ({'/'.join(r['groups'][g]['dtypes'])})"
                 if g in r["groups"] else "-" for g in names]
        lines.append("| " + " | ".join([f"`{r['artifact']}`", f"{r['bytes']:,}",
                                         f"{r['gzip_bytes']:,}", budget, ratio, *cells,
                                         f"{r['container_bytes']:,}"]) + " |")
    return "\n".join(lines) + "\n"


def plot(reports: list[dict], path: Path) -> None:
    """Bars of each artifact's bytes, its budget as a tick, the baseline's size as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = [r["artifact"] for r in reports]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(reports) + 1.5))
    y = range(len(reports))
    ax.barh(y, [r["bytes"] / 1e6 for r in reports],
            color=["tab:red" if r["over"] else "tab:blue" for r in reports], label="artifact")
    budgeted = [(i, r["budget"] / 1e6) for i, r in enumerate(reports) if r["budget"]]
    if budgeted:
        ax.scatter([b for _, b in budgeted], [i for i, _ in budgeted], marker="|", s=300,
                   color="black", label="budget", zorder=3)
    based = [(i, r["baseline"]["bytes"] / 1e6) for i, r in enumerate(reports) if r["baseline"]]
    if based:
        ax.scatter([b for _, b in based], [i for i, _ in based], marker="o", color="tab:orange",
                   label="bert-tiny, same format and mode", zorder=3)
        ax.set_xscale("log")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MB on disk (10^6 bytes)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(reports: list[dict], json_path: Path | None, markdown_path: Path | None,
         plot_path: Path | None) -> None:
    """The reports as JSON, the markdown table and the bar chart, where asked."""
    if json_path is not None:
        write_json(json_path, reports)
    if markdown_path is not None:
        write_text(markdown_path, markdown(reports))
    if plot_path is not None:
        with atomic_path(plot_path) as tmp:
            plot(reports, tmp)
